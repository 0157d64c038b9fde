"""Retrieval metrics as the image-text retrieval literature reports them (VSE++, Karpathy split).

For every query, the rank of its *first* correct item (1-based) in the gallery ordered by score;
R@K is the percentage of queries ranked <= K, and the median rank is the median of those ranks.
Text -> image has one correct image per caption; image -> text has several correct captions per
image (the best-ranked one counts). Ties are broken in the gold item's favour (only strictly
higher-scoring wrong items push it down), so a tie never depends on the order items were stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def ranks_from_scores(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best gold item per query.

    ``scores`` [Q, G]; ``gold`` a boolean [Q, G] mask of the correct items (at least one per
    query), or a [Q] tensor of the single correct column per query.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [queries, gallery], got {tuple(scores.shape)}")
    if gold.dtype != torch.bool:
        if gold.shape != (scores.shape[0],):
            raise ValueError("gold indices must have one entry per query")
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask[torch.arange(len(gold)), gold.long()] = True
        gold = mask
    if gold.shape != scores.shape or not bool(gold.any(dim=1).all()):
        raise ValueError("gold must mark at least one correct item per query, shaped like scores")
    best_gold = scores.masked_fill(~gold, float("-inf")).max(dim=1, keepdim=True).values
    higher = (scores > best_gold) & ~gold
    return higher.sum(dim=1) + 1


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"R@K": percentage of queries whose first correct item is in the top K}."""
    if len(ranks) == 0:
        raise ValueError("no queries")
    return {f"R@{k}": 100.0 * float((ranks <= k).float().mean()) for k in ks}


def median_rank(ranks: torch.Tensor) -> float:
    """Median of the 1-based ranks (the mean of the two middle ones for an even count)."""
    if len(ranks) == 0:
        raise ValueError("no queries")
    return float(ranks.double().quantile(0.5))


def retrieval_metrics(scores: torch.Tensor, gold: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    ranks = ranks_from_scores(scores, gold)
    return {**recall_at_k(ranks, ks), "median_rank": median_rank(ranks), "n": len(ranks)}


def hard_negative_accuracy(positive: torch.Tensor, negative: torch.Tensor) -> dict[str, float]:
    """How often a model scores an image (or clip) with its own caption above the caption's hard
    negative, a minimal edit that is false of it (ARO's swap test; for the synthetic clips the
    same words said of the time-reversed clip). ``positive`` and ``negative`` [P] are the scores
    of the P (image, caption) and (image, negative) pairs. A tie counts half, so a model blind
    to what separates the two scores 50 % in expectation, and exactly where its scores tie."""
    if positive.shape != negative.shape or positive.ndim != 1:
        raise ValueError(f"expected two [P] score vectors, got {tuple(positive.shape)} and "
                         f"{tuple(negative.shape)}")
    if len(positive) == 0:
        raise ValueError("no pairs with a hard negative")
    wins = (positive > negative).double() + 0.5 * (positive == negative).double()
    return {"accuracy": 100.0 * float(wins.mean()), "n": len(positive)}
