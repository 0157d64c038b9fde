"""Vision tower: a small CNN (or a timm one, models/backbones.py) giving a feature pyramid,
each level turned into D-dim tokens.

Inputs are float images [B, 3, S, S] normalised with mean = std = 0.5 per channel (``x01 * 2 - 1``
for pixels in [0, 1]). GroupNorm instead of BatchNorm: an image's features must not depend on
which other images share its batch, or batched Slow scoring would differ from per-pair scoring.

Levels are returned **fine to coarse**, the order the CNN computes them: level l comes from stage
l with stride 2**(l+3), so at 64 px the grids are 8x8, 4x4, 2x2. Consumers that go coarse to fine
(the caption decoder) index from the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.backbones import TimmBackbone
from vldistill.models.config import StudentConfig
from vldistill.models.text import Block

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


def normalize_images(x01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the model's input range."""
    return (x01 - 0.5) / 0.5


class ConvBlock(nn.Module):
    """3x3 conv -> GroupNorm -> GELU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm = nn.GroupNorm(math.gcd(8, c_out), c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x)))


class Stage(nn.Module):
    """Downsample by 2, then one residual conv block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = ConvBlock(c_in, c_out, stride=2)
        self.res = ConvBlock(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.res(x)


@dataclass
class VisionOutput:
    levels: list[torch.Tensor]  # fine to coarse; level l: [B, H_l * W_l, D], row-major
    grids: list[tuple[int, int]]  # (H_l, W_l) per level, same order
    pooled: torch.Tensor  # [B, D] LayerNorm(mean of every level's tokens)


class VisionPyramid(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        d = cfg.width
        chans = cfg.pyramid_channels
        stem = max(chans[0] // 2, 1)
        self.image_size = cfg.image_size
        self.grids = list(cfg.grids)
        self.channels = chans
        self.strides = cfg.strides
        self.backbone_name = cfg.vision_backbone
        if cfg.vision_backbone:  # a timm CNN's maps at the same strides (models/backbones.py)
            self.backbone = TimmBackbone(cfg.vision_backbone, chans, cfg.strides)
        else:
            # stride 4 before the first stage, so stage l ends at stride 2**(l+3)
            self.stem = nn.Sequential(ConvBlock(3, stem, stride=2),
                                      ConvBlock(stem, stem, stride=2))
            self.stages = nn.ModuleList(
                Stage(c_in, c_out) for c_in, c_out in zip((stem, *chans[:-1]), chans, strict=True)
            )
        self.proj = nn.ModuleList(nn.Conv2d(c, d, 1) for c in chans)
        self.pos_embedding = nn.ParameterList(
            nn.Parameter(torch.zeros(h * w, d)) for h, w in self.grids
        )
        self.level_embedding = nn.Parameter(torch.zeros(len(chans), d))
        self.ln_tokens = nn.LayerNorm(d)  # cross-attention reads these tokens as they are
        self.ln_pooled = nn.LayerNorm(d)
        self.frames = cfg.frames
        if cfg.frames > 1:  # absent for still images: their parameters and outputs are unchanged
            self.temporal_embedding = nn.Parameter(torch.zeros(cfg.frames, d))
            # motion tokens: each space-time token also carries a projection of what changed at
            # its place since the previous frame (x_t - x_{t-1}; zero for the first frame).
            # Reversing a clip negates every difference, so the order is in the tokens from the
            # first step instead of only in a learned frame embedding. Measured: the Slow
            # captioner's accuracy on time-reversed negatives after 600 steps went from 53 % to
            # 86 % (benchmarks/video.md). Zero-init: a new tower starts without them.
            self.motion = nn.ModuleList(nn.Linear(d, d) for _ in chans)
            self.temporal = Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout)
            # a linear map of the frames' states in time order: order-aware by construction.
            # Measured: with only the block and mean (order enters through the small learned
            # frame embedding alone), Fast stayed at chance on time-reversed negatives after
            # 1,000 steps; with this path it reached 80 % (benchmarks/video.md). Zero-init, so a
            # new tower starts as the block alone.
            self.frame_order = nn.Linear(cfg.frames * d, d)
            self.ln_clip = nn.LayerNorm(d)
            self.zero_order_paths()

    def zero_order_paths(self) -> None:
        """Zero the motion-token and frame-order projections (a model's generic weight init
        must call this again after it)."""
        for layer in (*self.motion, self.frame_order):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, images: torch.Tensor) -> VisionOutput:
        """Images [B, 3, S, S], or clips [B, T, 3, S, S] when built with frames > 1."""
        if images.dim() == 5:
            return self.forward_clips(images)
        s = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"expected images [B, 3, {s}, {s}], got {tuple(images.shape)}")
        levels = []
        for i, x in enumerate(self.feature_maps(images)):
            tokens = self.proj[i](x).flatten(2).transpose(1, 2)  # [B, H*W, D] row-major
            tokens = tokens + self.pos_embedding[i] + self.level_embedding[i]
            levels.append(self.ln_tokens(tokens))
        # every level, not the coarsest alone: at 64 px that is a 2x2 grid whose mean cannot
        # say which object is where. Measured (benchmarks/retrieval.md): Fast trained 200 steps
        # from the same student, test t2i R@1 0.3 -> 7.7, median rank 119 -> 10.5
        pooled = self.ln_pooled(torch.cat(levels, dim=1).mean(dim=1))
        return VisionOutput(levels=levels, grids=list(self.grids), pooled=pooled)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The CNN's maps [B, C_l, H_l, W_l], fine to coarse."""
        if self.backbone_name:
            return self.backbone(images)
        x, maps = self.stem(images), []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_clips(self, clips: torch.Tensor) -> VisionOutput:
        """Space-time tokens of clips [B, T, 3, S, S], T = frames.

        Every frame goes through the image pyramid; level l becomes [B, T * H_l * W_l, D]
        (frame-major) with a learned embedding per frame position and a projection of each
        token's change since the previous frame (motion tokens), so cross-attention (the Slow
        model's decoder, progressive over space) reads all frames and knows their order. The
        pooled vector is the mean of the frames' pooled states after one temporal self-attention
        block, plus a linear map of those states concatenated in time order: a mean alone would
        not know which frame came first.
        """
        if self.frames == 1:
            raise ValueError("this vision tower was built for still images (frames: 1)")
        b, t = clips.shape[:2]
        if t != self.frames:
            # the order path reads exactly `frames` states; a still picture is a clip of copies
            raise ValueError(f"clips have {t} frames; the tower was built for {self.frames}")
        per_frame = self(clips.flatten(0, 1))
        when = self.temporal_embedding[None, :, None, :]
        levels = []
        for level, motion in zip(per_frame.levels, self.motion, strict=True):
            x = level.unflatten(0, (b, t))  # [B, T, H*W, D]
            change = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
            levels.append((x + motion(change) + when).flatten(1, 2))
        states = per_frame.pooled.unflatten(0, (b, t))
        frames = self.temporal(states + self.temporal_embedding[None])
        order = self.frame_order(states.flatten(1))
        return VisionOutput(levels=levels, grids=per_frame.grids,
                            pooled=self.ln_clip(frames.mean(dim=1) + order))
