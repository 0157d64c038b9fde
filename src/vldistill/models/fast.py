"""The Fast model: a dual encoder whose image and text towers never see each other.

Towers are the student's (the CNN pyramid's pooled output and the text transformer's EOT state),
each followed by a linear projection to ``embed_dim`` and L2 normalisation, so a gallery image is
one vector in a faiss index and the score of a pair is one dot product, h_fast = f(x).g(y).
The towers can start from a student checkpoint (the MAD student by default), which gives the Fast
model the same visual and textual features the Slow model starts from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.config import StudentConfig
from vldistill.models.text import TextEncoder
from vldistill.models.vision import VisionPyramid


class FastDualEncoder(nn.Module):
    def __init__(self, cfg: StudentConfig, embed_dim: int) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.cfg = cfg
        self.embed_dim = embed_dim
        self.vision = VisionPyramid(cfg)
        self.text = TextEncoder(cfg)
        self.image_projection = nn.Linear(cfg.width, embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.width, embed_dim, bias=False)
        for projection in (self.image_projection, self.text_projection):
            nn.init.normal_(projection.weight, std=cfg.width ** -0.5)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim], unit norm."""
        return F.normalize(self.image_projection(self.vision(images).pooled), dim=-1)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim], unit norm."""
        return F.normalize(self.text_projection(self.text(ids, mask).pooled), dim=-1)
