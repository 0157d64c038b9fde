"""Teacher interface: feature containers, configs and the two abstract encoders.

A teacher maps a list of inputs to a global embedding plus per-token features that live in the
same space, so a student can be distilled on both. Outputs are float32 tensors on the CPU,
whatever device the model runs on, because the next step (the feature cache) writes them to disk.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image

VISION_TEACHERS: tuple[str, ...] = ("efficientnet_lite0", "open_clip")
TEXT_TEACHERS: tuple[str, ...] = ("minilm", "hf", "open_clip")


@dataclass
class ImageFeatures:
    global_emb: torch.Tensor  # [B, D]
    tokens: torch.Tensor  # [B, T, D], T = grid_h * grid_w in row-major order
    grid: tuple[int, int]


@dataclass
class TextFeatures:
    global_emb: torch.Tensor  # [B, D]
    tokens: torch.Tensor  # [B, L, D], padded to max_length
    mask: torch.Tensor  # [B, L] bool, True for real tokens


def _check_positive(cls_name: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{cls_name}.{key} must be a positive integer, got {value!r}")


def _fingerprint(kind: str, cfg: Any) -> str:
    # batch_size changes speed, not the features, so it must not invalidate a cache.
    payload = {k: v for k, v in asdict(cfg).items() if k != "batch_size"}
    text = json.dumps({"kind": kind, **payload}, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class VisionTeacherConfig:
    name: str  # one of VISION_TEACHERS
    image_size: int = 128
    batch_size: int = 64
    model: str | None = None  # open_clip architecture, e.g. "ViT-B-16"
    pretrained: str | None = None  # open_clip pretrained tag or checkpoint file; None = random

    def __post_init__(self) -> None:
        if self.name not in VISION_TEACHERS:
            raise ValueError(
                f"unknown vision teacher name {self.name!r}; expected one of {VISION_TEACHERS}"
            )
        _check_positive(
            "VisionTeacherConfig", image_size=self.image_size, batch_size=self.batch_size
        )

    def fingerprint(self) -> str:
        """Stable id of everything that determines the features (not the batch size)."""
        return _fingerprint("vision", self)


@dataclass(frozen=True)
class TextTeacherConfig:
    name: str  # one of TEXT_TEACHERS
    max_length: int = 32
    batch_size: int = 256
    model: str | None = None  # hf model id or local path (hf); open_clip architecture (open_clip)
    pretrained: str | None = None  # open_clip pretrained tag or checkpoint file

    def __post_init__(self) -> None:
        if self.name not in TEXT_TEACHERS:
            raise ValueError(
                f"unknown text teacher name {self.name!r}; expected one of {TEXT_TEACHERS}"
            )
        _check_positive("TextTeacherConfig", max_length=self.max_length, batch_size=self.batch_size)

    def fingerprint(self) -> str:
        """Stable id of everything that determines the features (not the batch size)."""
        return _fingerprint("text", self)


class VisionTeacher(abc.ABC):
    """Encodes PIL images in micro-batches of ``batch_size``."""

    dim: int
    grid: tuple[int, int]
    batch_size: int

    def encode_images(self, images: list[Image.Image]) -> ImageFeatures:
        if not images:
            n_tokens = self.grid[0] * self.grid[1]
            return ImageFeatures(
                torch.zeros(0, self.dim), torch.zeros(0, n_tokens, self.dim), self.grid
            )
        parts = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                parts.append(self._encode_batch(images[start : start + self.batch_size]))
        return ImageFeatures(
            global_emb=torch.cat([p.global_emb for p in parts]),
            tokens=torch.cat([p.tokens for p in parts]),
            grid=self.grid,
        )

    @abc.abstractmethod
    def _encode_batch(self, images: list[Image.Image]) -> ImageFeatures:
        """Encode at most ``batch_size`` images; called under ``torch.inference_mode``."""


class TextTeacher(abc.ABC):
    """Encodes strings in micro-batches of ``batch_size``; tokens padded to ``max_length``."""

    dim: int
    max_length: int
    batch_size: int

    def encode_texts(self, texts: list[str]) -> TextFeatures:
        if not texts:
            return TextFeatures(
                torch.zeros(0, self.dim),
                torch.zeros(0, self.max_length, self.dim),
                torch.zeros(0, self.max_length, dtype=torch.bool),
            )
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                parts.append(self._encode_batch(list(texts[start : start + self.batch_size])))
        return TextFeatures(
            global_emb=torch.cat([p.global_emb for p in parts]),
            tokens=torch.cat([p.tokens for p in parts]),
            mask=torch.cat([p.mask for p in parts]),
        )

    @abc.abstractmethod
    def _encode_batch(self, texts: list[str]) -> TextFeatures:
        """Encode at most ``batch_size`` texts; called under ``torch.inference_mode``."""
