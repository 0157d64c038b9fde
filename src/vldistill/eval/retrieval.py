"""Retrieval metrics as the image-text retrieval literature reports them (VSE++, Karpathy split).

For every query, the rank of its *first* correct item (1-based) in the gallery ordered by score;
R@K is the percentage of queries ranked <= K, and the median rank is the median of those ranks.
Text -> image has one correct image per caption; image -> text has several correct captions per
image (the best-ranked one counts).

Ties are in random order, and every figure is its exact expectation over that order, so a tie
neither depends on the order items were stored nor goes in the gold item's favour: a constant
scorer sits at chance (R@K = K / gallery, median rank (gallery + 1) / 2). A query whose best
correct score is beaten by ``higher`` wrong items and tied by ``tied`` wrong and ``gold_tied``
correct ones (itself included) has its first correct item at 1 + higher + the first correct
position in a random order of the tie group: P(rank <= K) = 1 - C(tied, j) / C(tied + gold_tied, j)
with j = K - higher (0 for j <= 0, 1 for j > tied), and expected rank
1 + higher + tied / (gold_tied + 1) (1 + higher + (m - 1) / 2 for one correct item in a tie
group of m). The median rank is the median of the expected ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

KS: tuple[int, ...] = (1, 5, 10)  # the recalls reported


@dataclass(frozen=True)
class Ranks:
    """Where each query's first correct item falls, tie group included; every field is [Q]."""

    higher: torch.Tensor  # wrong items scored strictly above the best correct item
    tied: torch.Tensor  # wrong items scored equal to it
    gold_tied: torch.Tensor  # correct items scored equal to it (>= 1)

    def __post_init__(self) -> None:
        if not (self.higher.shape == self.tied.shape == self.gold_tied.shape) \
                or self.higher.ndim != 1:
            raise ValueError("higher, tied and gold_tied must be [Q] tensors of one shape")
        if bool((self.gold_tied < 1).any()) or bool((self.higher < 0).any()) \
                or bool((self.tied < 0).any()):
            raise ValueError("counts must be >= 0, with at least one correct item per query")

    @classmethod
    def exact(cls, ranks: torch.Tensor) -> Ranks:
        """Ranks without ties: 1-based positions [Q]."""
        ranks = torch.as_tensor(ranks).long()
        zeros = torch.zeros_like(ranks)
        return cls(ranks - 1, zeros, zeros + 1)

    def __len__(self) -> int:
        return len(self.higher)

    def expected(self) -> torch.Tensor:
        """Expected 1-based rank [Q] (float64) over random orders of the tie groups."""
        return 1 + self.higher.double() + self.tied.double() / (self.gold_tied.double() + 1)

    def within(self, k: int) -> torch.Tensor:
        """P(rank <= k) [Q] (float64) over random orders of the tie groups."""
        j = (k - self.higher).double()
        wrong, total = self.tied.double(), (self.tied + self.gold_tied).double()
        # C(wrong, j) / C(total, j): the first j of the tie group all wrong
        inside = (j >= 1) & (j <= wrong)
        js = torch.where(inside, j, torch.zeros_like(j))
        log_all_wrong = (torch.lgamma(wrong + 1) - torch.lgamma(wrong - js + 1)
                         - torch.lgamma(total + 1) + torch.lgamma(total - js + 1))
        p = torch.where(inside, 1 - torch.exp(log_all_wrong), (j > wrong).double())
        # one correct item (the usual case): exactly j / m, free of lgamma's rounding
        single = self.gold_tied == 1
        return torch.where(single, (j.clamp(0) / total).clamp(max=1), p)


def ranks_from_scores(scores: torch.Tensor, gold: torch.Tensor) -> Ranks:
    """Each query's first correct item's place in its row of scores, ties kept as a group.

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
    equal = scores == best_gold
    return Ranks(higher=((scores > best_gold) & ~gold).sum(dim=1),
                 tied=(equal & ~gold).sum(dim=1), gold_tied=(equal & gold).sum(dim=1))


def _as_ranks(ranks: Ranks | torch.Tensor) -> Ranks:
    ranks = ranks if isinstance(ranks, Ranks) else Ranks.exact(ranks)
    if len(ranks) == 0:
        raise ValueError("no queries")
    return ranks


def recall_at_k(ranks: Ranks | torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """{"R@K": expected percentage of queries whose first correct item is in the top K}.

    ``ranks`` a ``Ranks``, or a [Q] tensor of 1-based ranks without ties."""
    ranks = _as_ranks(ranks)
    return {f"R@{k}": 100.0 * float(ranks.within(k).mean()) for k in ks}


def median_rank(ranks: Ranks | torch.Tensor) -> float:
    """Median of the expected 1-based ranks (the mean of the two middle ones for an even
    count)."""
    return float(_as_ranks(ranks).expected().quantile(0.5))


def retrieval_metrics(scores: torch.Tensor, gold: torch.Tensor,
                      ks: Sequence[int] = KS) -> dict[str, float]:
    return ranks_metrics(ranks_from_scores(scores, gold), ks)


def chance_metrics(gold: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K and median rank of a constant scorer (every item tied) for this gold [Q, G] mask:
    chance. One correct item of G: R@K = K / G; several: sooner, 1 - C(G - g, K) / C(G, K)."""
    metrics = retrieval_metrics(torch.zeros(gold.shape), gold, ks)
    return {name: value for name, value in metrics.items() if name != "n"}


def ranks_metrics(ranks: Ranks, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K for each K, the median rank and n."""
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
