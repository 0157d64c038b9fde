"""Build students from config, and save / load them as safetensors checkpoints.

A checkpoint is one ``.safetensors`` file: the state dict (the token embedding shared by the text
tower and the decoder is stored once) and, in the file's string metadata, the StudentConfig,
HeadsConfig, the decoder's closed output vocabulary (if set) and a caller-supplied JSON ``extra``
(step, metrics, ...). Writes are atomic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model

from vldistill.io import atomic_output, canonicalise_safetensors
from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.fast import FastDualEncoder
from vldistill.models.fusion import CAPTION_DIRECTIONS
from vldistill.models.student import Student

CHECKPOINT_FORMAT = "vldistill.student/1"


def student_config_from_dict(d: dict[str, Any]) -> StudentConfig:
    return StudentConfig.from_dict(d)


def create_student(cfg: StudentConfig, heads: HeadsConfig | None = None) -> Student:
    return Student(cfg, heads)


def save_checkpoint(
    path: str | Path,
    model: Student,
    cfg: StudentConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    if cfg is not None and cfg != model.cfg:
        raise ValueError("save_checkpoint: cfg differs from the config the model was built with")
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "student_config": json.dumps(model.cfg.to_dict(), sort_keys=True),
        "heads_config": json.dumps(model.heads_config.to_dict(), sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True),
        "output_vocabulary": json.dumps(model.decoder.output_vocabulary()),
    }
    with atomic_output(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)
        canonicalise_safetensors(tmp)


def load_checkpoint(
    path: str | Path, device: str = "cpu"
) -> tuple[Student, StudentConfig, dict[str, Any]]:
    """Rebuild the model from the stored configs and load its weights; returned in eval mode."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    cfg = StudentConfig.from_dict(json.loads(meta["student_config"]))
    heads = HeadsConfig.from_dict(json.loads(meta["heads_config"]))
    model = create_student(cfg, heads)
    load_model(model, str(path), strict=True, device=device)
    model.decoder.set_output_vocabulary(json.loads(meta.get("output_vocabulary", "null")))
    return model.to(device).eval(), cfg, json.loads(meta["extra"])


def matching_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor],
                     prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The entries of ``weights`` that ``model`` has under the same name and shape (only names
    starting with ``prefixes`` when given): what a model built for another purpose (a task
    head, a Fast dual encoder) can take from a checkpoint."""
    own = model.state_dict()
    return {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape
            and (not prefixes or k.startswith(prefixes))}


# ---- the retrieval models: Slow is a student checkpoint; Fast has its own format ----

def load_slow(path: str | Path) -> tuple[Student, tuple[str, ...]]:
    """The Slow model in eval mode and the caption directions its score h_slow sums."""
    model, _, extra = load_checkpoint(path)
    return model, tuple(extra.get("directions", CAPTION_DIRECTIONS))


def create_fast(cfg: StudentConfig, embed_dim: int, start: str | Path | None) -> FastDualEncoder:
    """A Fast model, its towers copied from a student checkpoint when ``start`` is given."""
    model = FastDualEncoder(cfg, embed_dim)
    if start is not None:
        weights = load_file(str(start))
        # the student stores its shared token embedding once, possibly under the decoder's name
        if "text.token_embedding.weight" not in weights:
            weights["text.token_embedding.weight"] = weights["decoder.token_embedding.weight"]
        towers = matching_weights(model, weights, prefixes=("vision.", "text."))
        missing = [k for k in model.state_dict()
                   if k.startswith(("vision.", "text.")) and k not in towers]
        if missing:
            raise ValueError(f"{start} lacks tower weights {missing[:5]}")
        model.load_state_dict(towers, strict=False)
    return model


FAST_FORMAT = "vldistill.fast/1"


def save_fast(path: str | Path, model: FastDualEncoder, extra: dict[str, Any]) -> None:
    metadata = {"format": FAST_FORMAT, "embed_dim": str(model.embed_dim),
                "student_config": json.dumps(model.cfg.to_dict(), sort_keys=True),
                "extra": json.dumps(extra, sort_keys=True)}
    with atomic_output(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)
        canonicalise_safetensors(tmp)


def load_fast(path: str | Path) -> tuple[FastDualEncoder, dict[str, Any]]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FAST_FORMAT:
        raise ValueError(f"{path}: not a {FAST_FORMAT} checkpoint")
    model = FastDualEncoder(StudentConfig.from_dict(json.loads(meta["student_config"])),
                            int(meta["embed_dim"]))
    load_model(model, str(path), strict=True)
    return model.eval(), json.loads(meta["extra"])
