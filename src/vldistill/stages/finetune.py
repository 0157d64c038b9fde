"""Fine-tune the student on one task under one data regime with one method; evaluate it.

* ``baseline`` starts from the pre-trained student and sees no teacher;
* ``kd`` starts from the pre-trained student and distils all teacher tokens with w = 1 and a
  constant lambda;
* ``mad`` and its ablations ``mad-ts`` / ``mad-cw`` / ``mad-af`` start from the task-agnostic MAD
  student and fine-tune with MAD's losses, each ablation without one component.

The teacher probe behind confidence weighting and adaptive lambda is fitted on the regime's
training examples only; AF measures the student on up to ``af_examples`` val examples (held
out, never test). Evaluation uses the official metric on the source test split and the shifted
test split, with chance level (VE, VCR) or the computed majority-answer baseline (VQA), and each
test item's score beside metrics.json (``item_scores_path``) for paired comparisons; the val
split's metric is written beside them (``val``, not a result row) for choices made on val.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch

from vldistill.data.images import ImageBank
from vldistill.data.manifest import manifest_path, read_manifest, text_id
from vldistill.data.pixels import open_visual_bank
from vldistill.data.regimes import select_regime
from vldistill.distill.mad import AdaptiveLambda, distillation_loss, method_config
from vldistill.distill.probe import cross_fitted_p_gold
from vldistill.eval import answer_vocabulary, majority_answer_baseline
from vldistill.io import atomic_output, write_json
from vldistill.models.config import HeadsConfig
from vldistill.models.factory import create_student, load_checkpoint, save_checkpoint
from vldistill.models.student import Student
from vldistill.models.tokenizer import Tokenizer, trim_padding
from vldistill.seeds import (
    add_seed,
    checkpoint_provenance,
    checkpoint_seeds,
    dataset_seeds,
    merge_seeds,
)
from vldistill.train.checkpoints import clear_states, load_backbone, state_path
from vldistill.train.compute import Compute
from vldistill.train.distill_step import TeacherFeatures, TeacherLookup, student_states
from vldistill.train.distributed import is_main
from vldistill.train.loop import Batch, TrainConfig, train
from vldistill.train.tasks import (
    ITEM_SCHEMA,
    TaskData,
    build_task_data,
    evaluate,
    evaluate_items,
    gold_cross_entropy,
    init_head_from_prior,
    task_logits,
    task_loss,
)

log = logging.getLogger(__name__)

EVAL_SPLITS: tuple[str, ...] = ("test", "test_shifted")


def probe_features(teachers: TeacherFeatures, data: TaskData,
                   frame: pl.DataFrame) -> torch.Tensor:
    """[image global ; text global] per example, or per candidate ([N, 4, F]) for VCR."""
    images = teachers.vision.get(data.image_ids, fields=("global",), dtype=torch.float32)
    image_global = images["global"]
    if data.task != "vcr":
        texts = teachers.text.get([text_id(t) for t in data.primary_text], fields=("global",),
                                  dtype=torch.float32)["global"]
        return torch.cat([image_global, texts], dim=1)
    # VCR: a candidate is (question, answer_k) for Q->A and (question, rationale_k) for QA->R
    items = {row["item_id"]: row for row in frame.iter_rows(named=True)}
    candidates = [
        items[item]["answers" if stage == "q2a" else "rationales"]
        for item, stage in zip(data.item_ids, data.stage, strict=True)
    ]
    flat = [text_id(c) for group in candidates for c in group]
    cand = teachers.text.get(flat, fields=("global",), dtype=torch.float32)["global"]
    cand = cand.view(len(data), 4, -1)
    question = teachers.text.get([text_id(t) for t in data.primary_text], fields=("global",),
                                 dtype=torch.float32)["global"]
    context = torch.cat([image_global, question], dim=1)[:, None, :].expand(-1, 4, -1)
    return torch.cat([context, cand], dim=2)


def teacher_confidence(teachers: TeacherFeatures, data: TaskData, frame: pl.DataFrame,
                       seed: int) -> tuple[torch.Tensor, float]:
    """Cross-fitted probe probability of every training example's gold label (0 where the gold
    answer is outside the vocabulary) and the probe's out-of-fold loss (AF's reference)."""
    features = probe_features(teachers, data, frame)
    known = data.gold >= 0
    n_classes = len(data.answer_vocab) if data.answer_vocab is not None else None
    p_known, loss = cross_fitted_p_gold(features[known], data.gold[known], n_classes=n_classes,
                                        seed=seed)
    p_gold = torch.zeros(len(data))
    p_gold[known] = p_known
    return p_gold, loss


def finetune(*, task: str, regime: str, method: str, root: str | Path, start: str | Path,
             vision_index: str | Path | None, text_index: str | Path | None,
             training: dict, distill: dict, seed: int,
             out_path: str | Path, metrics_path: str | Path,
             item_scores_path: str | Path | None = None,
             compute: dict | None = None) -> dict[str, Any]:
    """Fine-tune the task-agnostic student ``start`` (the one ``AGNOSTIC_START[method]``
    names) on one task and regime with one method, then evaluate on the test splits.
    ``compute``: device and precision (train/compute.py) of training and evaluation."""
    where = Compute.from_dict(compute)
    mad_cfg = method_config(method, **distill)
    source, cfg, _ = load_checkpoint(start)
    tokenizer = Tokenizer(cfg.context_length)
    splits = ("train", "val", *EVAL_SPLITS)
    bank = open_visual_bank(root, splits, cfg.image_size)
    frames = {s: read_manifest(manifest_path(root, s, task), task) for s in splits}
    train_frame = select_regime(frames["train"], regime, seed)
    vocab = None
    if task == "vqa":
        vocab = answer_vocabulary(train_frame["answers"].to_list())
    data = build_task_data(task, train_frame, bank, tokenizer, answer_vocab=vocab)
    val_data = (None if frames["val"].is_empty()
                else build_task_data(task, frames["val"], bank, tokenizer, answer_vocab=vocab))
    log.info("%s / %s / %s: %d training examples (%d images) from %s", task, regime, method,
             len(data), train_frame["image_id"].n_unique(), start)

    teachers = None
    heads = HeadsConfig(vqa_answers=len(vocab or []))
    if mad_cfg is not None:
        teachers = TeacherFeatures(vision_index, text_index)
        vision_dim, text_dim = teachers.dims
        heads = HeadsConfig(vqa_answers=len(vocab or []), teacher_vision_dim=vision_dim,
                            teacher_text_dim=text_dim,
                            fused_projections=mad_cfg.fused != "none")
    torch.manual_seed(seed)  # fresh heads and projections differ per fine-tuning seed
    model = create_student(cfg, heads)
    load_backbone(model, start)
    model.to(where.torch_device())
    model.decoder.set_output_vocabulary(source.decoder.output_vocabulary())
    init_head_from_prior(model, data)

    loss_fn, probe_info, schedule = _loss_fn(model, data, val_data, bank, mad_cfg, teachers,
                                             train_frame, tokenizer, seed)
    train_cfg = TrainConfig.from_dict({**training, "seed": seed})
    state = state_path(out_path, {"task": task, "regime": regime, "method": method,
                                  "start": str(start), "training": training, "mad": distill,
                                  "seed": seed})
    history = train(model, loss_fn, len(data), train_cfg, state, extra_state=schedule,
                    compute=where, images=(bank, data.image_rows),
                    targets=None if teachers is None
                    else TeacherLookup(teachers, data.image_ids, data.primary_text))
    if not is_main():  # under torchrun rank 0 writes the outputs and evaluates
        return {}
    # the data seed again: an imported student (pretrain.reuse) was trained on another dataset
    seeds = add_seed(merge_seeds(checkpoint_seeds(start), dataset_seeds(root)), "finetune", seed)
    provenance = checkpoint_provenance(start)  # [] unless the student came from another run
    save_checkpoint(out_path, model, extra={"task": task, "regime": regime, "method": method,
                                            "seed": seed, "seeds": seeds, "answer_vocab": vocab,
                                            "provenance": provenance})
    clear_states(out_path)

    results, items = evaluate_test_splits(model, task, frames, train_frame, bank, tokenizer, vocab)
    val = evaluate(model, val_data, bank) if val_data is not None else None
    metrics = {
        "task": task, "regime": regime, "method": method, "seed": seed, "seeds": seeds,
        "n_train": len(data), "n_train_images": train_frame["image_id"].n_unique(),
        "start": Path(start).name, "provenance": provenance, "results": results,
        "probe": probe_info,
        "final_train": {k: v for k, v in history[-1].items() if k != "step"},
        "val": val,
        "af": schedule.updates if schedule is not None else [],
        "lambda": [h["lambda"] for h in history if "lambda" in h],
        "history": history,  # per-step loss terms: the training curves (results/curves.py)
    }
    if item_scores_path is not None:
        write_item_scores(items, item_scores_path)
    write_json(metrics, metrics_path)
    return metrics


def evaluate_test_splits(model: Student, task: str, frames: dict[str, pl.DataFrame],
                         train_frame: pl.DataFrame, bank: ImageBank, tokenizer: Tokenizer,
                         vocab: list[str] | None) -> tuple[dict[str, dict], list[pl.DataFrame]]:
    """Metrics of every test split with examples (VQA's with the majority-answer baseline
    beside them) and each item's score, tagged with its split."""
    results, items = {}, []
    for split in EVAL_SPLITS:
        if frames[split].is_empty():  # e.g. a real dataset without a shifted test set
            log.info("%s: no %s examples; not evaluated", split, task)
            continue
        eval_data = build_task_data(task, frames[split], bank, tokenizer, answer_vocab=vocab)
        results[split], scores = evaluate_items(model, eval_data, bank)
        items.append(scores.select(pl.lit(split).alias("split"), pl.all()))
        if task == "vqa":
            results[split]["majority_baseline"] = majority_answer_baseline(
                train_frame["answers"].to_list(), frames[split]["answers"].to_list(),
                normalize_gt=True)["accuracy"]
        log.info("%s: %s", split, results[split])
    return results, items


def write_item_scores(frames: list[pl.DataFrame], path: str | Path) -> None:
    """Every evaluated item's score, one row per (split, item, metric): a parquet file beside
    metrics.json rather than inside it, which stays a page a person reads however many test
    items there are."""
    table = pl.concat(frames) if frames else pl.DataFrame(schema={"split": pl.String,
                                                                  **ITEM_SCHEMA})
    with atomic_output(path) as tmp:
        table.write_parquet(tmp, statistics=False)


def held_out_rows(data: TaskData | None, limit: int, seed: int) -> torch.Tensor:
    """A fixed seeded subset of up to ``limit`` val examples with a gold label in the vocabulary
    (AF's held-out set; the same rows at every update)."""
    if data is None:
        return torch.empty(0, dtype=torch.long)
    known = torch.nonzero(data.gold >= 0).squeeze(1)
    order = torch.randperm(len(known), generator=torch.Generator().manual_seed(seed))
    return known[order[:limit]].sort().values


def _loss_fn(model: Student, data: TaskData, val_data: TaskData | None, bank, mad_cfg,
             teachers: TeacherFeatures | None, frame: pl.DataFrame, tokenizer: Tokenizer,
             seed: int):
    """The step's loss: the task loss, plus lambda(t) * MAD's distillation for teacher methods;
    with AF, lambda is updated from the student's held-out gold-label CE every af_every steps."""
    if mad_cfg is None:
        def task_only(m: Student, batch: Batch) -> dict[str, torch.Tensor]:
            logits = task_logits(m, data, batch.rows, images=batch.images(m.device))
            return {"loss": task_loss(logits, data, batch.rows)}
        return task_only, None, None

    p_gold, probe_loss = teacher_confidence(teachers, data, frame, seed)
    schedule = AdaptiveLambda(mad_cfg, probe_loss)
    af_rows = held_out_rows(val_data, mad_cfg.af_examples, seed)
    if mad_cfg.adaptive and len(af_rows) == 0:
        raise ValueError("adaptive lambda needs held-out val examples with a known gold label; "
                         "this dataset's val split has none (run mad-af, which keeps lambda "
                         "constant)")
    primary_ids, primary_mask = tokenizer(data.primary_text)
    info = {"out_of_fold_loss": probe_loss, "mean_p_gold": float(p_gold.mean()),
            "af_val_examples": len(af_rows)}
    log.info("teacher probe on the regime's training split: %s", info)

    def with_distillation(m: Student, batch: Batch) -> dict[str, torch.Tensor]:
        rows = batch.rows
        if schedule.due(batch.step):
            held_out, _ = gold_cross_entropy(m, val_data, bank, af_rows)
            schedule.update(held_out, batch.step)
        device = m.device
        vision = m.encode_image(batch.images(device))
        task = task_loss(task_logits(m, data, rows, vision=vision), data, rows)
        ids, mask = trim_padding(primary_ids[rows], primary_mask[rows], device)
        text = m.encode_text(ids, mask)
        # the fused target fuses the image with the distilled text (VCR's is the question)
        fused = m.fuse(vision, text, mask) if mad_cfg.fused != "none" else None
        states = student_states(m, vision, text, mask, teachers.grid, fused)
        distill = distillation_loss(mad_cfg, states, batch.targets.to(device),
                                    p_gold[rows].to(device))
        lam = schedule.value
        return {"loss": task + lam * distill["loss"], "task": task.detach(),
                "distill": distill["loss"].detach(), "fused": distill["fused"],
                "lambda": torch.tensor(lam, device=device)}

    return with_distillation, info, schedule
