"""Frozen unimodal teachers whose global and token features are cached for distillation."""

from vldistill.teachers.base import (
    TEXT_TEACHERS,
    VISION_TEACHERS,
    ImageFeatures,
    TextFeatures,
    TextTeacher,
    TextTeacherConfig,
    VisionTeacher,
    VisionTeacherConfig,
)
from vldistill.teachers.factory import (
    create_text_teacher,
    create_vision_teacher,
    text_config_from_dict,
    vision_config_from_dict,
)

__all__ = [
    "TEXT_TEACHERS",
    "VISION_TEACHERS",
    "ImageFeatures",
    "TextFeatures",
    "TextTeacher",
    "TextTeacherConfig",
    "VisionTeacher",
    "VisionTeacherConfig",
    "create_text_teacher",
    "create_vision_teacher",
    "text_config_from_dict",
    "vision_config_from_dict",
]
