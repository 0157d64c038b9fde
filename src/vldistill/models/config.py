"""Student configuration: the model's shape (StudentConfig) and which task heads it carries.

Both are frozen dataclasses so a config can be hashed, compared and written to a checkpoint as
plain JSON. ``from_dict`` rejects unknown keys by name: a typo in config.yaml must fail loudly
instead of silently training the default model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vldistill.config import read_section


def _check_positive(owner: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}.{key} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class StudentConfig:
    image_size: int = 64
    width: int = 128  # model width D shared by all towers
    # CNN stages; stage l has stride 2**(l+3) -> grids 8x8, 4x4, 2x2 at 64 px (coarse = last)
    pyramid_channels: tuple[int, ...] = (32, 64, 128)
    text_layers: int = 2
    fusion_layers: int = 2
    # captioning decoder; layer i cross-attends to pyramid level i counted coarse to fine
    decoder_layers: int = 3
    # False: every decoder layer reads the finest level only (the single-scale ablation)
    progressive: bool = True
    heads: int = 4
    mlp_ratio: float = 4.0
    context_length: int = 32
    dropout: float = 0.0
    vocab_size: int = 49408  # open_clip BPE
    # frames per clip for video (1: still images); > 1 adds temporal embeddings and a temporal
    # block to the vision tower, see VisionPyramid
    frames: int = 1
    # pretrained unimodal towers (models/backbones.py): a timm model name for the vision
    # pyramid's CNN; causal text attention, as the CLIP text transformer whose weights
    # pretrain.init.text loads
    vision_backbone: str | None = None
    text_causal: bool = False

    def __post_init__(self) -> None:
        # JSON and YAML give lists; the frozen dataclass must stay hashable.
        object.__setattr__(self, "pyramid_channels", tuple(self.pyramid_channels))
        _check_positive(
            "StudentConfig",
            image_size=self.image_size,
            width=self.width,
            text_layers=self.text_layers,
            fusion_layers=self.fusion_layers,
            decoder_layers=self.decoder_layers,
            heads=self.heads,
            context_length=self.context_length,
            vocab_size=self.vocab_size,
            frames=self.frames,
        )
        if not self.pyramid_channels:
            raise ValueError("StudentConfig.pyramid_channels must name at least one stage")
        for i, c in enumerate(self.pyramid_channels):
            _check_positive("StudentConfig", **{f"pyramid_channels[{i}]": c})
        if self.width % self.heads:
            raise ValueError(
                f"StudentConfig.width ({self.width}) must be divisible by heads ({self.heads})"
            )
        if self.image_size % self.coarsest_stride:
            raise ValueError(
                f"StudentConfig.image_size ({self.image_size}) must be divisible by the coarsest "
                f"stride {self.coarsest_stride} of {len(self.pyramid_channels)} pyramid stages"
            )
        if not isinstance(self.progressive, bool):
            raise ValueError(f"StudentConfig.progressive must be a bool, got {self.progressive!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"StudentConfig.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"StudentConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.context_length < 2:
            raise ValueError("StudentConfig.context_length must hold at least SOT and EOT")

    @property
    def levels(self) -> int:
        return len(self.pyramid_channels)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each pyramid level, fine to coarse: stage l ends at 2**(l+3)."""
        return tuple(2 ** (level + 3) for level in range(self.levels))

    @property
    def coarsest_stride(self) -> int:
        return self.strides[-1]

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        """(H, W) of each pyramid level, fine to coarse (the order VisionPyramid computes them)."""
        return tuple((self.image_size // s, self.image_size // s) for s in self.strides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentConfig:
        return read_section(cls, d, "student")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pyramid_channels"] = list(self.pyramid_channels)
        return d


@dataclass(frozen=True)
class HeadsConfig:
    vqa_answers: int = 0  # 0 = no VQA head
    ve_classes: int = 3  # 0 = none
    vcr: bool = True
    # MAD projections to the teachers' spaces; 0 = no projections (e.g. the baseline method).
    # The global dims default to the token dims, which holds for the packaged teachers.
    teacher_vision_dim: int = 0
    teacher_text_dim: int = 0
    teacher_vision_global_dim: int = 0
    teacher_text_global_dim: int = 0
    # MAD's projections of the fusion's states (fused-state distillation, distill/mad.py)
    fused_projections: bool = False
    # width of the image-text contrastive space before fusion (pre-training's ITC)
    contrastive_dim: int = 64

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("vcr", "fused_projections"):
                if not isinstance(value, bool):
                    raise ValueError(f"HeadsConfig.{f.name} must be a bool, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"HeadsConfig.{f.name} must be an integer >= 0, got {value!r}")
        if (self.teacher_vision_dim == 0) != (self.teacher_text_dim == 0):
            raise ValueError(
                "HeadsConfig: set both teacher_vision_dim and teacher_text_dim, or neither"
            )
        if self.fused_projections and not self.has_projections:
            raise ValueError("HeadsConfig: fused_projections needs the teacher dims")

    @property
    def has_projections(self) -> bool:
        return self.teacher_vision_dim > 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadsConfig:
        return read_section(cls, d, "heads")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
