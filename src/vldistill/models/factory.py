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

from safetensors import safe_open
from safetensors.torch import load_model, save_model

from vldistill.io import atomic_output, canonicalise_safetensors
from vldistill.models.config import HeadsConfig, StudentConfig
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
