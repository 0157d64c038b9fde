"""Task heads on the pooled fused state, and MAD's projections into the teachers' spaces.

- VQA: [B, vqa_answers] logits over the answer vocabulary (soft-target BCE or CE, caller's pick).
- VE: [B, ve_classes] logits (entailment / neutral / contradiction).
- VCR: one scalar per (image, question + candidate) pair; ``vcr_choice_logits`` reshapes the
  flat [B * n] scores of n candidates per question to [B, n] for a cross-entropy over choices.
- ITM: [B, 2] logits, class 1 = "image and text match", trained with cross-entropy like the other
  classifiers; ``itm_score`` turns them into one ranking score (the log-odds of a match).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.config import HeadsConfig


class MLPHead(nn.Module):
    def __init__(self, dim: int, out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2 * dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(F.gelu(self.fc(x))))


class TaskHeads(nn.Module):
    def __init__(self, dim: int, cfg: HeadsConfig, dropout: float = 0.0) -> None:
        super().__init__()
        self.vqa = MLPHead(dim, cfg.vqa_answers, dropout) if cfg.vqa_answers else None
        self.ve = MLPHead(dim, cfg.ve_classes, dropout) if cfg.ve_classes else None
        self.vcr = MLPHead(dim, 1, dropout) if cfg.vcr else None
        self.itm = MLPHead(dim, 2, dropout)
        # ITC before fusion: the pooled image and text states in one contrastive space
        self.itc_vision = nn.Linear(dim, cfg.contrastive_dim)
        self.itc_text = nn.Linear(dim, cfg.contrastive_dim)

    def forward(self, task: str, pooled: torch.Tensor) -> torch.Tensor:
        if task not in ("vqa", "ve", "vcr", "itm"):
            raise ValueError(f"unknown task {task!r}; expected vqa, ve, vcr or itm")
        head = getattr(self, task)
        if head is None:
            raise ValueError(f"this student has no {task} head (see HeadsConfig)")
        out = head(pooled)
        return out.squeeze(-1) if task == "vcr" else out


    def contrastive(self, vision_pooled: torch.Tensor, text_pooled: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised ITC embeddings of pooled image and text states."""
        return (F.normalize(self.itc_vision(vision_pooled), dim=-1),
                F.normalize(self.itc_text(text_pooled), dim=-1))


def vcr_choice_logits(scores: torch.Tensor, n_choices: int = 4) -> torch.Tensor:
    """[B * n_choices] candidate scores (question-major) -> [B, n_choices]."""
    if scores.dim() != 1 or scores.shape[0] % n_choices:
        raise ValueError(f"expected a flat score vector divisible by {n_choices}")
    return scores.view(-1, n_choices)


def itm_score(logits: torch.Tensor) -> torch.Tensor:
    """[B, 2] ITM logits -> [B] log-odds of a match."""
    return logits[:, 1] - logits[:, 0]


@dataclass
class ProjectedFeatures:
    vision_tokens: torch.Tensor  # [B, T_v, teacher_vision_dim]
    text_tokens: torch.Tensor  # [B, L, teacher_text_dim]
    vision_global: torch.Tensor  # [B, teacher_vision_global_dim]
    text_global: torch.Tensor  # [B, teacher_text_global_dim]
    fused_text_tokens: torch.Tensor | None = None  # [B, L, teacher_text_dim]
    fused_global: torch.Tensor | None = None  # [B, vision_global_dim + text_global_dim]


class TeacherProjections(nn.Module):
    """MAD's linear maps P from the student width D into each teacher's feature space.

    P_v / P_t map student token states onto teacher tokens (L_tok); P_gv / P_gt map pooled
    student states onto the teachers' global embeddings (L_glob). Global dims default to the
    token dims, which holds for the packaged teachers (1280 for EfficientNet-Lite0, 384 MiniLM).
    With ``fused``, P_f maps the fusion's text states onto the text teacher's tokens and P_fg
    its pooled state onto both teachers' global embeddings side by side.
    """

    def __init__(
        self,
        width: int,
        vision_dim: int,
        text_dim: int,
        vision_global_dim: int | None = None,
        text_global_dim: int | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.vision = nn.Linear(width, vision_dim)
        self.text = nn.Linear(width, text_dim)
        self.vision_global = nn.Linear(width, vision_global_dim or vision_dim)
        self.text_global = nn.Linear(width, text_global_dim or text_dim)
        # registered last and only when used, so students without them initialise as before
        self.fused_text = nn.Linear(width, text_dim) if fused else None
        self.fused_global = (
            nn.Linear(width, (vision_global_dim or vision_dim) + (text_global_dim or text_dim))
            if fused else None
        )

    def forward(
        self,
        vision_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        vision_pooled: torch.Tensor,
        text_pooled: torch.Tensor,
        fused_tokens: torch.Tensor | None = None,
        fused_pooled: torch.Tensor | None = None,
    ) -> ProjectedFeatures:
        if (fused_tokens is not None or fused_pooled is not None) and self.fused_text is None:
            raise ValueError("these projections have no fused maps; build them with "
                             "HeadsConfig(fused_projections=True)")
        return ProjectedFeatures(
            vision_tokens=self.vision(vision_tokens),
            text_tokens=self.text(text_tokens),
            vision_global=self.vision_global(vision_pooled),
            text_global=self.text_global(text_pooled),
            fused_text_tokens=None if fused_tokens is None else self.fused_text(fused_tokens),
            fused_global=None if fused_pooled is None else self.fused_global(fused_pooled),
        )
