"""The student: vision pyramid + text tower + fusion encoder + caption decoder + task heads.

One model serves both halves of the project: MAD distils teachers into its towers and fine-tunes
the task heads; the Slow retrieval model is its caption decoder scoring image-caption pairs.
Weights are initialised nanoGPT-style (normal(0, 0.02) for linear layers and embeddings, zero
biases; convolutions keep PyTorch's default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.fusion import CAPTION_DIRECTIONS, CaptionDecoder, FusedOutput, FusionEncoder
from vldistill.models.heads import TaskHeads, TeacherProjections
from vldistill.models.text import TextEncoder, TextOutput
from vldistill.models.vision import VisionOutput, VisionPyramid


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig, heads: HeadsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.heads_config = heads if heads is not None else HeadsConfig()
        self.vision = VisionPyramid(cfg)
        self.text = TextEncoder(cfg)
        self.fusion = FusionEncoder(cfg)
        self.decoder = CaptionDecoder(cfg, self.text.token_embedding)
        self.heads = TaskHeads(cfg.width, self.heads_config, cfg.dropout)
        h = self.heads_config
        self.projections = (
            TeacherProjections(
                cfg.width,
                h.teacher_vision_dim,
                h.teacher_text_dim,
                h.teacher_vision_global_dim or None,
                h.teacher_text_global_dim or None,
                fused=h.fused_projections,
            )
            if h.has_projections
            else None
        )
        # a timm backbone keeps its own init (its pretrained weights come later, pretrain.init)
        backbone = set(getattr(self.vision, "backbone", nn.Module()).modules())
        self.apply(lambda m: None if m in backbone else _init_weights(m))
        if cfg.frames > 1:
            self.vision.zero_order_paths()
        for p in (
            *self.vision.pos_embedding,
            self.vision.level_embedding,
            self.text.pos_embedding,
            self.text.mask_embedding,
            self.decoder.pos_embedding,
            self.decoder.direction_embedding,
        ):
            nn.init.normal_(p, std=0.02)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared tensors counted once

    def encode_image(self, images: torch.Tensor) -> VisionOutput:
        return self.vision(images)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> TextOutput:
        return self.text(ids, mask)

    def fuse(
        self, vision_out: VisionOutput, text_out: TextOutput, mask: torch.Tensor
    ) -> FusedOutput:
        return self.fusion(vision_out.levels, text_out.tokens, mask)

    def forward_task(
        self, task: str, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits for "vqa" [B, A], "ve" [B, C], "vcr" [B] (one per candidate), "itm" [B, 2]."""
        fused = self.fuse(self.encode_image(images), self.encode_text(ids, mask), mask)
        return self.heads(task, fused.pooled)

    def caption_loss(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        directions: Sequence[str] = ("forward", "backward"),
    ) -> torch.Tensor:
        """Mean over directions of the token-mean NLL (targets: content tokens and EOT)."""
        return self.caption_loss_from_levels(self.encode_image(images).levels, ids, mask,
                                             directions)

    def caption_loss_from_levels(
        self,
        levels: list[torch.Tensor],
        ids: torch.Tensor,
        mask: torch.Tensor,
        directions: Sequence[str] = ("forward", "backward"),
    ) -> torch.Tensor:
        """``caption_loss`` for images already encoded (their pyramid levels)."""
        n_tokens = mask[:, 1:].sum().clamp(min=1)
        losses = [
            -self.decoder.caption_log_likelihood(levels, ids, mask, d).sum() / n_tokens
            for d in directions
        ]
        return torch.stack(losses).mean()

    def slow_scores(
        self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
        directions: Sequence[str] = CAPTION_DIRECTIONS,
    ) -> torch.Tensor:
        """[B] h_slow of aligned (image i, caption i) pairs."""
        return self.decoder.length_normalised_score(self.encode_image(images).levels, ids, mask,
                                                    directions)

    def slow_score_matrix(
        self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, max_pairs: int = 256,
        directions: Sequence[str] = CAPTION_DIRECTIONS,
    ) -> torch.Tensor:
        """[N, M] h_slow of every image with every caption (images encoded once)."""
        levels = self.encode_image(images).levels
        return self.decoder.pairwise_scores(levels, ids, mask, max_pairs=max_pairs,
                                            directions=directions)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
