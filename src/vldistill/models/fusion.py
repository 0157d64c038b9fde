"""Cross-modal towers over the vision pyramid: the fusion encoder and the caption decoder.

FusionEncoder (the MAD student's VL encoder): text states attend to themselves and to all image
tokens of all pyramid levels. Its pooled output is the fused state at the EOT position, the same
pooling rule as the text tower: no extra [CLS] token, so positions and the tokenizer's context
length mean the same thing in every tower.

CaptionDecoder (the Slow model): causal self-attention plus cross-attention, where decoder layer i
reads pyramid level i counted **coarse to fine** ("progressive upsampling": the first layer sees
the coarsest grid, the last the finest). With more decoder layers than levels, the extra layers
all read the finest level. One decoder serves both caption directions: a learned direction
embedding is added to every input position, and the backward direction reads the caption with its
content reversed (``reverse_ids``). The LM head is tied to the token embedding, which is shared
with the text encoder (the embedding dominates the parameter count at a 49k vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.config import StudentConfig
from vldistill.models.text import Block, key_padding_mask, pool_at_eot
from vldistill.models.tokenizer import reverse_ids, trim_padding, used_columns

CAPTION_DIRECTIONS: tuple[str, ...] = ("forward", "backward")


@dataclass
class FusedOutput:
    tokens: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor  # [B, D] LayerNorm of the fused EOT state


class FusionEncoder(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        d = cfg.width
        self.blocks = nn.ModuleList(
            Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout, cross=True)
            for _ in range(cfg.fusion_layers)
        )
        self.ln_final = nn.LayerNorm(d)
        self.ln_pooled = nn.LayerNorm(d)

    def forward(
        self, image_levels: Sequence[torch.Tensor], text_tokens: torch.Tensor, mask: torch.Tensor
    ) -> FusedOutput:
        image = torch.cat(list(image_levels), dim=1)  # all levels: fine detail and global layout
        attn_mask = key_padding_mask(mask)
        x = text_tokens
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask, context=image)
        x = self.ln_final(x)
        return FusedOutput(tokens=x, pooled=self.ln_pooled(pool_at_eot(x, mask)))


def coarse_to_fine_schedule(decoder_layers: int, levels: int,
                            progressive: bool = True) -> tuple[int, ...]:
    """Index into the fine-to-coarse level list read by each decoder layer (all 0, the finest
    level, without progressive upsampling)."""
    if not progressive:
        return (0,) * decoder_layers
    return tuple(max(levels - 1 - i, 0) for i in range(decoder_layers))


class CaptionDecoder(nn.Module):
    def __init__(self, cfg: StudentConfig, token_embedding: nn.Embedding) -> None:
        super().__init__()
        d = cfg.width
        self.token_embedding = token_embedding  # shared with the text tower; also the LM head
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.context_length, d))
        self.direction_embedding = nn.Parameter(torch.zeros(len(CAPTION_DIRECTIONS), d))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout, cross=True)
            for _ in range(cfg.decoder_layers)
        )
        self.ln_final = nn.LayerNorm(d)
        self.level_for_layer = coarse_to_fine_schedule(cfg.decoder_layers, cfg.levels,
                                                       cfg.progressive)
        # Optional closed output vocabulary (see set_output_vocabulary); one extra learned row
        # scores every token outside it. Empty buffers = predict over the full BPE vocabulary.
        self.unk_embedding = nn.Parameter(torch.zeros(d))
        self.register_buffer("output_ids", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("target_index", torch.empty(0, dtype=torch.long), persistent=False)

    def set_output_vocabulary(self, token_ids: Sequence[int] | None) -> None:
        """Predict next tokens over ``token_ids`` plus one "other" class instead of all 49k BPE
        ids: a caption corpus uses a small fraction of them (the synthetic one ~100), and the
        full softmax dominates the cost of a CPU step. ``None`` restores the full vocabulary.
        """
        vocab_size = self.token_embedding.num_embeddings
        if token_ids is None:
            device = self.unk_embedding.device
            self.output_ids = torch.empty(0, dtype=torch.long, device=device)
            self.target_index = torch.empty(0, dtype=torch.long, device=device)
            return
        ids = torch.tensor(sorted(set(int(t) for t in token_ids)), dtype=torch.long)
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"output vocabulary must be non-empty ids in [0, {vocab_size})")
        index = torch.full((vocab_size,), len(ids), dtype=torch.long)  # default: "other"
        index[ids] = torch.arange(len(ids))
        device = self.unk_embedding.device
        self.output_ids, self.target_index = ids.to(device), index.to(device)

    def output_vocabulary(self) -> list[int] | None:
        return self.output_ids.tolist() if len(self.output_ids) else None

    def cross_keys_values(self, image_levels: Sequence[torch.Tensor]
                          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of its pyramid level: an
        image's share of a caption score, computed once however many captions it is scored
        with (most of a pair's FLOPs at 224 px)."""
        return [block.cross_attn.keys_values(image_levels[level])
                for block, level in zip(self.blocks, self.level_for_layer, strict=True)]

    def logits(
        self, image_levels: Sequence[torch.Tensor] | None, ids: torch.Tensor, direction: str,
        keys_values: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Next-token logits [B, L, V] for ids already in reading order (no reversal here);
        V = the closed output vocabulary + 1 when one is set. ``keys_values``: the layers'
        image keys and values (``cross_keys_values``) instead of ``image_levels``."""
        if direction not in CAPTION_DIRECTIONS:
            raise ValueError(f"direction must be one of {CAPTION_DIRECTIONS}, got {direction!r}")
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.pos_embedding[:length]
        x = self.drop(x + self.direction_embedding[CAPTION_DIRECTIONS.index(direction)])
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        if keys_values is None:
            keys_values = self.cross_keys_values(image_levels)
        for block, kv in zip(self.blocks, keys_values, strict=True):
            x = block(x, attn_mask=causal, context_kv=kv)
        return self.output_logits(self.ln_final(x))

    def output_logits(self, states: torch.Tensor) -> torch.Tensor:
        """States [..., D] -> logits [..., V] over the output vocabulary (the tied embedding's
        rows, or the closed vocabulary plus "other"): shared by captioning and masked-token
        prediction in the fusion encoder (train/pretrain.py)."""
        if len(self.output_ids) == 0:
            return F.linear(states, self.token_embedding.weight)
        weight = torch.cat([self.token_embedding.weight[self.output_ids], self.unk_embedding[None]])
        return F.linear(states, weight)

    def output_targets(self, ids: torch.Tensor) -> torch.Tensor:
        """BPE ids -> their class in ``output_logits`` (the ids themselves without a closed
        vocabulary)."""
        return self.target_index[ids] if len(self.output_ids) else ids

    def token_log_probs(
        self,
        image_levels: Sequence[torch.Tensor] | None,
        ids: torch.Tensor,
        mask: torch.Tensor,
        direction: str = "forward",
        keys_values: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """[B, L-1]: column t = log p(token t+1 | tokens <= t, image); 0 where t+1 is padding.

        ``ids`` are always given in forward order; "backward" reverses the content here.
        """
        if direction == "backward":
            ids = reverse_ids(ids, mask)
        # Causal attention makes trailing padding irrelevant, so skip the columns no row uses.
        n = used_columns(mask)
        logits = self.logits(image_levels, ids[:, : n - 1], direction, keys_values)
        targets = self.output_targets(ids[:, 1:n])
        logp = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        logp = logp * mask[:, 1:n]
        return F.pad(logp, (0, ids.shape[1] - n))

    def caption_log_likelihood(
        self,
        image_levels: Sequence[torch.Tensor] | None,
        ids: torch.Tensor,
        mask: torch.Tensor,
        direction: str = "forward",
        keys_values: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """[B]: sum of log p over the real target tokens (content and EOT; SOT is given)."""
        return self.token_log_probs(image_levels, ids, mask, direction, keys_values).sum(dim=1)

    def length_normalised_score(
        self,
        image_levels: Sequence[torch.Tensor] | None,
        ids: torch.Tensor,
        mask: torch.Tensor,
        directions: Sequence[str] = CAPTION_DIRECTIONS,
        keys_values: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """[B]: h_slow = fwd / len + bwd / len, len = number of target tokens (only the forward
        term for a model trained forward-only). The image keys and values serve both
        directions."""
        if keys_values is None:
            keys_values = self.cross_keys_values(image_levels)
        n = mask[:, 1:].sum(dim=1).clamp(min=1)
        return sum(self.caption_log_likelihood(None, ids, mask, d, keys_values) / n
                   for d in directions)

    def pairwise_scores(
        self,
        image_levels: Sequence[torch.Tensor],
        ids: torch.Tensor,
        mask: torch.Tensor,
        max_pairs: int = 256,
        directions: Sequence[str] = CAPTION_DIRECTIONS,
    ) -> torch.Tensor:
        """[N, M] h_slow of every image (N) with every caption (M), scored as batched pairs.

        Blocks of images times blocks of captions, at most ``max_pairs`` pairs per batched
        forward pass (bounding the [pairs, L, V] logits). A block's image keys and values are
        computed once and shared by all its captions, and the blocks are fixed by the shapes
        alone, so nothing waits on the device. The levels may live in host memory (a large
        gallery's pyramids): each block's rows move to the model's device; so do the
        captions. The scores are on the model's device.
        """
        device = self.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        n_img, n_txt = image_levels[0].shape[0], ids.shape[0]
        per_block = max(1, min(n_txt, max_pairs))  # captions per forward pass
        images_per_block = max(1, max_pairs // per_block)
        rows = []
        for i0 in range(0, n_img, images_per_block):
            block = self.cross_keys_values([lv[i0:i0 + images_per_block].to(device)
                                            for lv in image_levels])
            n_block = block[0][0].shape[0]
            row = []
            for t0 in range(0, n_txt, per_block):
                captions = slice(t0, t0 + per_block)
                pair_ids, pair_mask = trim_padding(ids[captions], mask[captions])
                n_cap = pair_ids.shape[0]
                # the block's keys and values as they are: each image's n_cap captions are
                # consecutive rows, which the cross-attention folds onto their image's keys
                scores = self.length_normalised_score(
                    None, pair_ids.repeat(n_block, 1), pair_mask.repeat(n_block, 1), directions,
                    block)
                row.append(scores.view(n_block, n_cap))
            rows.append(torch.cat(row, dim=1))
        if not rows:
            return torch.empty(0, n_txt, device=ids.device)
        return torch.cat(rows)

    def pair_scores(
        self,
        image_levels: Sequence[torch.Tensor],
        ids: torch.Tensor,
        mask: torch.Tensor,
        image_index: torch.Tensor,
        text_index: torch.Tensor,
        max_pairs: int = 256,
        directions: Sequence[str] = CAPTION_DIRECTIONS,
    ) -> torch.Tensor:
        """[P] h_slow of the pairs (image_index[p], text_index[p]), ``max_pairs`` per batched
        forward pass (re-ranking scores each query's K candidates this way). Each distinct
        image of a chunk has its keys and values computed once and shared by its pairs: an
        image-major chunk of an all-pairs matrix holds one or a few images. As in
        ``pairwise_scores``, levels and captions may be on the host: a chunk's rows move to
        the model's device, where the scores are."""
        device = self.token_embedding.weight.device
        scores = []
        for start in range(0, len(image_index), max_pairs):
            ii = image_index[start : start + max_pairs]
            tt = text_index[start : start + max_pairs]
            images, pair_image = torch.unique(ii, return_inverse=True)
            pair_image = pair_image.to(device)
            keys_values = [(k[pair_image], v[pair_image]) for k, v in self.cross_keys_values(
                [lv[images.to(lv.device)].to(device) for lv in image_levels])]
            pair_ids, pair_mask = trim_padding(ids[tt.to(ids.device)], mask[tt.to(ids.device)],
                                               device)  # this chunk's longest caption
            scores.append(self.length_normalised_score(None, pair_ids, pair_mask, directions,
                                                       keys_values))
        return torch.cat(scores) if scores else torch.empty(0, device=device)
