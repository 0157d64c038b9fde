"""Glue between the cached teacher features, the student's towers and the MAD losses.

MAD distils the *unimodal* teachers into the student's unimodal towers: the vision pyramid
against the vision teacher's token grid and global embedding, the text encoder against the text
teacher's token states and global embedding. The student level distilled is the one whose grid
equals the teacher's (4x4 for EfficientNet-Lite0 at 128 px against the student's middle level at
64 px); without an equal grid, the finest level, pooled or interpolated onto the teacher's grid.
With fused-state distillation the fusion's outputs for the same (image, text) pairs are projected
too, so the cross-modal encoder is distilled as well (distill/mad.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from vldistill.data.manifest import text_id
from vldistill.distill.mad import DistillTargets, StudentStates
from vldistill.features.store import FeatureStore
from vldistill.models.fusion import FusedOutput
from vldistill.models.student import Student
from vldistill.models.text import TextOutput
from vldistill.models.vision import VisionOutput


class TeacherFeatures:
    """Both teachers' caches, looked up by image id and by text."""

    def __init__(self, vision_index: str | Path, text_index: str | Path) -> None:
        self.vision = FeatureStore(Path(vision_index))
        self.text = FeatureStore(Path(text_index))
        if self.vision.modality != "vision" or self.text.modality != "text":
            raise ValueError(f"expected a vision and a text cache, got {self.vision.modality} "
                             f"({vision_index}) and {self.text.modality} ({text_index})")
        self.grid = tuple(self.vision.grid)

    @property
    def dims(self) -> tuple[int, int]:
        return self.vision.dim, self.text.dim

    def batch(self, image_ids: Sequence[str], texts: Sequence[str]) -> DistillTargets:
        vision = self.vision.get(list(image_ids), fields=("global", "tokens"), dtype=torch.float32)
        text = self.text.get([text_id(t) for t in texts], fields=("global", "tokens", "mask"),
                             dtype=torch.float32)
        return DistillTargets(
            vision_global=vision["global"], vision_tokens=vision["tokens"],
            vision_grid=self.grid,
            text_global=text["global"], text_tokens=text["tokens"], text_mask=text["mask"],
        )


class TeacherLookup:
    """``lookup(rows)``: the teachers' cached features of examples ``rows`` (their image ids
    and distilled texts): what a training loader's workers read ahead of each step."""

    def __init__(self, teachers: TeacherFeatures, image_ids: Sequence[str],
                 texts: Sequence[str]) -> None:
        self.teachers, self.image_ids, self.texts = teachers, list(image_ids), list(texts)

    def __call__(self, rows: torch.Tensor) -> DistillTargets:
        picked = rows.tolist()
        return self.teachers.batch([self.image_ids[i] for i in picked],
                                   [self.texts[i] for i in picked])


def distilled_level(vision: VisionOutput, teacher_grid: tuple[int, int]) -> int:
    """Index of the pyramid level matched to the teacher grid (see the module docstring)."""
    for level, grid in enumerate(vision.grids):
        if tuple(grid) == tuple(teacher_grid):
            return level
    return 0  # levels are fine to coarse


def student_states(model: Student, vision: VisionOutput, text: TextOutput, mask: torch.Tensor,
                   teacher_grid: tuple[int, int],
                   fused: FusedOutput | None = None) -> StudentStates:
    """The student's tower states (and the fusion's, if given) projected by P into the
    teachers' spaces."""
    if model.projections is None:
        raise ValueError("this student has no teacher projections; build it with the teacher "
                         "dims in HeadsConfig to distil")
    level = distilled_level(vision, teacher_grid)
    projected = model.projections(
        vision.levels[level], text.tokens, vision.pooled, text.pooled,
        None if fused is None else fused.tokens, None if fused is None else fused.pooled,
    )
    return StudentStates(
        vision_tokens=projected.vision_tokens, vision_grid=tuple(vision.grids[level]),
        vision_global=projected.vision_global,
        text_tokens=projected.text_tokens, text_mask=mask, text_global=projected.text_global,
        fused_text_tokens=projected.fused_text_tokens, fused_global=projected.fused_global,
    )
