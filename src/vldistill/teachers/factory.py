"""Build a teacher from its config. Model libraries are imported only for the teacher asked for."""

from __future__ import annotations

from typing import Any

from vldistill.config import read_section
from vldistill.teachers.base import (
    TextTeacher,
    TextTeacherConfig,
    VisionTeacher,
    VisionTeacherConfig,
)


def _config_from_dict(cls: type, section: str, d: dict[str, Any]) -> Any:
    if isinstance(d, dict) and "name" not in d:
        raise ValueError(f"teachers.{section}: lacks the required key 'name'")
    return read_section(cls, d, f"teachers.{section}")


def vision_config_from_dict(d: dict[str, Any]) -> VisionTeacherConfig:
    """Config from a mapping (e.g. config.yaml's teachers.vision); ValueError on bad keys."""
    return _config_from_dict(VisionTeacherConfig, "vision", d)


def text_config_from_dict(d: dict[str, Any]) -> TextTeacherConfig:
    """Config from a mapping (e.g. config.yaml's teachers.text); ValueError on bad keys."""
    return _config_from_dict(TextTeacherConfig, "text", d)


def _reject_model_fields(kind: str, cfg: VisionTeacherConfig | TextTeacherConfig) -> None:
    # A silently ignored 'model' would cache features of a different model than configured.
    given = [k for k in ("model", "pretrained") if getattr(cfg, k) is not None]
    if given:
        raise ValueError(f"the {kind} teacher {cfg.name!r} takes no {given}; it is fixed")


def create_vision_teacher(cfg: VisionTeacherConfig, device: str = "cpu") -> VisionTeacher:
    if cfg.name == "efficientnet_lite0":
        from vldistill.teachers.efficientnet import EfficientNetLite0Teacher

        _reject_model_fields("vision", cfg)
        return EfficientNetLite0Teacher(cfg, device)
    if cfg.name == "open_clip":
        from vldistill.teachers.open_clip import OpenClipVisionTeacher

        return OpenClipVisionTeacher(cfg, device)
    raise ValueError(f"unknown vision teacher name {cfg.name!r}")


def create_text_teacher(cfg: TextTeacherConfig, device: str = "cpu") -> TextTeacher:
    if cfg.name == "minilm":
        from vldistill.teachers.hf_text import create_minilm

        _reject_model_fields("text", cfg)
        return create_minilm(cfg.max_length, cfg.batch_size, device)
    if cfg.name == "hf":
        from vldistill.teachers.hf_text import HFTextTeacher

        if not cfg.model:
            raise ValueError("the hf text teacher needs 'model' (a hub id or a local folder)")
        if cfg.pretrained is not None:
            raise ValueError("the hf text teacher takes no 'pretrained'; put the id in 'model'")
        return HFTextTeacher(
            cfg.model, max_length=cfg.max_length, batch_size=cfg.batch_size, device=device
        )
    if cfg.name == "open_clip":
        from vldistill.teachers.open_clip import OpenClipTextTeacher

        return OpenClipTextTeacher(cfg, device)
    raise ValueError(f"unknown text teacher name {cfg.name!r}")
