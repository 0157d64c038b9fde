"""Transformer building blocks (shared by the text, fusion and decoder towers) and the text tower.

Attention is written out over ``F.scaled_dot_product_attention`` so the masking rules are in
plain sight. Masks are boolean with SDPA's convention: True = this key may be attended to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.config import StudentConfig


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, else cross-attention."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, H, Lk, D / H] of ``context`` [B, Lk, D]: computed once per image,
        a cross-attention's keys and values serve every caption scored against it."""
        b, lk, d = context.shape
        k, v = self.kv(context).view(b, lk, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        b, lq, d = x.shape
        hd = d // self.heads
        q = self.q(x).view(b, lq, self.heads, hd).transpose(1, 2)
        k, v = keys_values or self.keys_values(x if context is None else context)
        group = b // k.shape[0]
        if group > 1:
            # keys and values of n contexts for n x group rows, each context's rows consecutive
            # (one image's captions): fold a context's rows into the query length instead of
            # copying its keys and values per row. Unmasked cross-attention treats every query
            # on its own, so the fold changes no value.
            if attn_mask is not None or b % k.shape[0]:
                raise ValueError("shared keys and values need an unmasked attention and a "
                                 "batch that is a multiple of their count")
            q = q.reshape(k.shape[0], group, self.heads, lq, hd).transpose(1, 2)
            q = q.reshape(k.shape[0], self.heads, group * lq, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        if group > 1:
            y = y.reshape(k.shape[0], self.heads, group, lq, hd).transpose(1, 2)
            y = y.reshape(b, self.heads, lq, hd)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, lq, d)))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN residual block: self-attention, optional cross-attention, MLP."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, dropout: float, cross: bool = False
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ln_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = Attention(dim, heads, dropout) if cross else None
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask)
        if self.cross_attn is not None:
            if context is None and context_kv is None:
                raise ValueError("a cross-attention block needs a context")
            x = x + self.cross_attn(self.ln_cross(x), context=context, keys_values=context_kv)
        return x + self.mlp(self.ln_2(x))


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] real-token mask -> [B, 1, 1, L] attention mask: every query sees real keys only."""
    return mask[:, None, None, :]


def eot_positions(mask: torch.Tensor) -> torch.Tensor:
    """[B] index of each row's last real token, which the tokenizer guarantees is EOT."""
    return (mask.sum(dim=1) - 1).clamp(min=0)


def pool_at_eot(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State at the EOT token: [B, L, D] -> [B, D]."""
    return states[torch.arange(states.shape[0], device=states.device), eot_positions(mask)]


@dataclass
class TextOutput:
    tokens: torch.Tensor  # [B, L, D] token states (pad positions hold values nobody should read)
    pooled: torch.Tensor  # [B, D] LayerNorm of the EOT state


class TextEncoder(nn.Module):
    """Token + learned position embeddings, bidirectional (or, with ``text_causal``, causal)
    transformer with key padding mask.

    Real tokens never attend to pads, so a caption's states do not depend on how much padding
    its batch carries; inputs may be shorter than context_length (positions are sliced).
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        d = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, d)
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.context_length, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.text_layers)
        )
        self.ln_final = nn.LayerNorm(d)
        self.ln_pooled = nn.LayerNorm(d)
        self.causal = cfg.text_causal
        # the input of a hidden token in masked-token prediction (pre-training's MLM)
        self.mask_embedding = nn.Parameter(torch.zeros(d))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor,
                hidden: torch.Tensor | None = None) -> TextOutput:
        """``hidden``: optional bool [B, L], positions whose token is replaced by the mask
        embedding (the model must recover them from the rest of the text and the image)."""
        if ids.shape[1] > self.pos_embedding.shape[0]:
            raise ValueError(
                f"text length {ids.shape[1]} exceeds context_length {self.pos_embedding.shape[0]}"
            )
        tokens = self.token_embedding(ids)
        if hidden is not None:
            tokens = torch.where(hidden[..., None], self.mask_embedding.to(tokens.dtype), tokens)
        x = self.drop(tokens + self.pos_embedding[: ids.shape[1]])
        attn_mask = key_padding_mask(mask)
        if self.causal:  # as CLIP's text transformer, whose weights it may carry
            attn_mask = attn_mask & torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool,
                                               device=ids.device).tril()
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        x = self.ln_final(x)
        return TextOutput(tokens=x, pooled=self.ln_pooled(pool_at_eot(x, mask)))
