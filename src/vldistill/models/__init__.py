"""The student cross-modal VL encoder: config, towers, heads, factory and checkpoints."""

from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.factory import (
    create_student,
    load_checkpoint,
    save_checkpoint,
    student_config_from_dict,
)
from vldistill.models.fusion import CAPTION_DIRECTIONS, CaptionDecoder, FusedOutput, FusionEncoder
from vldistill.models.heads import (
    ProjectedFeatures,
    TaskHeads,
    TeacherProjections,
    itm_score,
    vcr_choice_logits,
)
from vldistill.models.student import Student
from vldistill.models.text import TextEncoder, TextOutput
from vldistill.models.tokenizer import Tokenizer, mask_from_ids, reverse_ids
from vldistill.models.vision import VisionOutput, VisionPyramid, normalize_images

__all__ = [
    "CAPTION_DIRECTIONS",
    "CaptionDecoder",
    "FusedOutput",
    "FusionEncoder",
    "HeadsConfig",
    "ProjectedFeatures",
    "Student",
    "StudentConfig",
    "TaskHeads",
    "TeacherProjections",
    "TextEncoder",
    "TextOutput",
    "Tokenizer",
    "VisionOutput",
    "VisionPyramid",
    "create_student",
    "itm_score",
    "load_checkpoint",
    "mask_from_ids",
    "normalize_images",
    "reverse_ids",
    "save_checkpoint",
    "student_config_from_dict",
    "vcr_choice_logits",
]
