"""The student stages: VL pre-training, then the task-agnostic students on the caption corpus
(or both imported from another run: stages/imports.py).

Both train on the *train* split's captions only. Training state (model, optimiser, step) is
checkpointed next to the output under a name that hashes the stage's config, so a killed job
resumes where it stopped, a changed config starts afresh, and the state is removed on success.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from vldistill.distill.agnostic import agnostic_config
from vldistill.distill.mad import distillation_loss
from vldistill.models.backbones import load_clip_text, load_vision_backbone
from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.factory import create_student, load_checkpoint
from vldistill.models.student import Student
from vldistill.seeds import add_seed, checkpoint_provenance, checkpoint_seeds, dataset_seeds
from vldistill.train.checkpoints import finish_student, load_backbone, state_path
from vldistill.train.compute import Compute
from vldistill.train.distill_step import TeacherFeatures, TeacherLookup, student_states
from vldistill.train.loop import Batch, TrainConfig, train
from vldistill.train.pretrain import (
    PretrainObjective,
    caption_batch,
    caption_data,
    caption_vocabulary,
    encode_captions,
    matching_check,
    matching_metrics,
    pretrain_loss,
)

log = logging.getLogger(__name__)


def held_out_matching(root: str | Path, cfg: StudentConfig, validation: dict
                      ) -> tuple[Any, int]:
    """``(validate(model), every)`` for the training loop: held-out ITM on the val split's
    captions (``validation``: {every, captions}); (None, 0) when switched off."""
    if not validation["every"]:
        return None, 0
    bank, corpus, _ = caption_data(root, "val", cfg)
    check = matching_check(corpus, validation["captions"])
    return (lambda m: matching_metrics(m, corpus, bank, check)), validation["every"]


def initialise_towers(model: Student, init: dict | None) -> list[dict]:
    """Load pretrained unimodal towers (``init``: {vision, text} checkpoint paths or null);
    one provenance record per tower loaded."""
    init = init or {}
    records = []
    if init.get("vision"):
        records.append(load_vision_backbone(model.vision, init["vision"]))
    if init.get("text"):
        records.append(load_clip_text(model.text, init["text"]))
    for record in records:
        log.info("%s tower from %s (%s, sha256 %s)", record["tower"], record["path"],
                 record["kind"], record["sha256"][:12])
    return [{"stage": "tower_init", **record} for record in records]


def pretrain_student(*, root: str | Path, student: dict, training: dict, objective: dict,
                     validation: dict, seed: int, out_path: str | Path,
                     metrics_path: str | Path, compute: dict | None = None,
                     init: dict | None = None) -> dict:
    """VL pre-training (ITC, ITM on checked-false hard negatives, bidirectional captioning)
    from scratch or from pretrained unimodal towers (``init``), with held-out ITM on the val
    split along the way. ``compute``: device and precision (train/compute.py); the data stay
    on the host and each batch moves."""
    where = Compute.from_dict(compute)
    cfg = StudentConfig.from_dict(student)
    train_cfg = TrainConfig.from_dict({**training, "seed": seed})
    goal = PretrainObjective.from_dict(objective)
    bank, corpus, _ = caption_data(root, "train", cfg)
    validate, every = held_out_matching(root, cfg, validation)
    torch.manual_seed(seed)
    model = create_student(cfg)
    provenance = initialise_towers(model, init)
    model.to(where.torch_device())
    model.decoder.set_output_vocabulary(caption_vocabulary(corpus))
    log.info("student: %.2f M parameters; %d captions; output vocabulary %d",
             model.num_parameters() / 1e6, len(corpus), len(caption_vocabulary(corpus)))
    state = state_path(out_path, {"student": student, "training": training,
                                  "objective": objective, "seed": seed, "init": provenance})
    history = train(
        model,
        lambda m, batch: pretrain_loss(m, corpus, batch.images(m.device), batch.rows, goal),
        len(corpus), train_cfg, state, validate=validate, validate_every=every, compute=where,
        images=(bank, corpus.image_rows),
    )
    seeds = add_seed(dataset_seeds(root), "pretrain", seed)
    return finish_student(model, history, out_path, metrics_path,
                          {"stage": "pretrain", "dataset": Path(root).name, "seed": seed,
                           "seeds": seeds, "n_captions": len(corpus),
                           "provenance": provenance})


def agnostic_student(*, root: str | Path, pretrained: str | Path, variant: str,
                     vision_index: str | Path | None, text_index: str | Path | None,
                     training: dict, distill: dict, objective: dict, seed: int,
                     out_path: str | Path, metrics_path: str | Path,
                     compute: dict | None = None) -> dict:
    """A task-agnostic student (distill/agnostic.py): the pre-training objective for the MAD
    stage's budget, plus lambda0 times the token and global distillation of both towers for the
    MAD variants. The ``plain`` variant is what the baseline and kd start from."""
    mad_cfg = agnostic_config(variant, **distill)
    where = Compute.from_dict(compute)
    source, _, _ = load_checkpoint(pretrained)
    heads = None
    teachers = None
    if mad_cfg is not None:
        if vision_index is None or text_index is None:
            raise ValueError(f"task-agnostic variant {variant!r} needs the teacher features")
        teachers = TeacherFeatures(vision_index, text_index)
        vision_dim, text_dim = teachers.dims
        heads = HeadsConfig(teacher_vision_dim=vision_dim, teacher_text_dim=text_dim,
                            fused_projections=mad_cfg.fused != "none")
    torch.manual_seed(seed)  # the fresh projections' init must not depend on what ran before
    model = create_student(source.cfg, heads)
    load_backbone(model, pretrained)
    model.to(where.torch_device())
    bank, corpus, captions = caption_data(root, "train", source.cfg)
    image_ids, texts = captions["image_id"].to_list(), captions["caption"].to_list()
    model.decoder.set_output_vocabulary(source.decoder.output_vocabulary())
    goal = PretrainObjective.from_dict(objective)
    train_cfg = TrainConfig.from_dict({**training, "seed": seed})

    def loss_fn(m: Student, batch: Batch) -> dict[str, torch.Tensor]:
        rows = batch.rows
        vision, text = encode_captions(m, corpus, batch.images(m.device), rows)
        mask = caption_batch(corpus, rows, device=m.device)[1]
        # the fusion over each caption and its own image: ITM's positives and the fused target
        fused = m.fuse(vision, text, mask)
        out = pretrain_loss(m, corpus, None, rows, goal, encoded=(vision, text), fused=fused)
        if mad_cfg is None:
            return out
        if mad_cfg.fused == "none":
            fused = None
        states = student_states(m, vision, text, mask, teachers.grid, fused)
        distilled = distillation_loss(mad_cfg, states, batch.targets.to(m.device))
        return {**out, "loss": out["loss"] + mad_cfg.lambda0 * distilled["loss"],
                "distill": distilled["loss"].detach(), "tok_vision": distilled["tok_vision"],
                "tok_text": distilled["tok_text"], "glob": distilled["glob"],
                "fused": distilled["fused"]}

    state = state_path(out_path, {"pretrained": str(pretrained), "variant": variant,
                                  "training": training, "distill": distill,
                                  "objective": objective, "seed": seed})
    history = train(model, loss_fn, len(corpus), train_cfg, state, compute=where,
                    images=(bank, corpus.image_rows),
                    targets=None if teachers is None else TeacherLookup(teachers, image_ids, texts))
    seeds = add_seed(checkpoint_seeds(pretrained), "task_agnostic", seed)
    return finish_student(model, history, out_path, metrics_path,
                          {"stage": "task_agnostic", "dataset": Path(root).name,
                           "variant": variant, "seed": seed, "seeds": seeds,
                           "n_captions": len(corpus),
                           "provenance": checkpoint_provenance(pretrained)})
