"""Re-ranking the Fast top-K with the Slow model, and the final ranking it implies.

For a text query, the Fast model's top-K gallery images (from the index) are re-scored with
s = h_slow + beta * h_fast and re-ordered; the images beyond them follow in exact Fast order.
So re-ranking only ever permutes the candidates (it never adds or drops one), and K = gallery
size with an exhaustive index is the Slow model re-scoring everything.

A non-exhaustive index (IVF visiting fewer lists than it has, HNSW) may return fewer than K
candidates: faiss pads the rest with id -1. Those slots are no candidates: they are never
scored, and every real image not returned falls in the Fast-ordered tail.

Ties within the final order count as their expectation (``eval.retrieval``). Which of several
images tied at the K-th Fast score make the candidates is the index's choice, as in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from vldistill.eval.retrieval import Ranks


def rerank_top_k(candidates: torch.Tensor, fast_scores: torch.Tensor, slow_scores: torch.Tensor,
                 beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order each query's candidates [Q, K] by h_slow + beta * h_fast (both [Q, K]).

    Returns (re-ordered gallery ids [Q, K], their combined scores [Q, K]), best first; ties keep
    the Fast order. Slots with id -1 (no candidate) get score -inf and stay last, whatever
    scores they carry.
    """
    if not (candidates.shape == fast_scores.shape == slow_scores.shape):
        raise ValueError("candidates, fast and slow scores must all be [queries, K]")
    combined = (slow_scores + beta * fast_scores).masked_fill(candidates < 0, float("-inf"))
    order = torch.sort(combined, dim=1, descending=True, stable=True).indices
    return candidates.gather(1, order), combined.gather(1, order)


def ranks_after_rerank(reranked: torch.Tensor, combined: torch.Tensor, fast_scores: torch.Tensor,
                       gold: torch.Tensor) -> Ranks:
    """Each query's gold image's place in (re-ranked candidates, then every other image in Fast
    order), ties kept as groups (see ``eval.retrieval``).

    ``reranked`` [Q, K] gallery ids (-1: no candidate) and ``combined`` [Q, K] their scores, as
    ``rerank_top_k`` returns them; ``fast_scores`` [Q, G] the exact Fast score of every gallery
    image (the tail's order, not the index's); ``gold`` [Q] the correct image per query. A gold
    image among the candidates ranks by its combined score among them; one outside ranks after
    all of them, by its Fast score among the images not returned.
    """
    n_queries, n_gallery = fast_scores.shape
    if reranked.shape != combined.shape or len(reranked) != n_queries or gold.shape != (n_queries,):
        raise ValueError("reranked and combined [Q, K], fast_scores [Q, G] and gold [Q] must "
                         "agree on Q")
    if bool(((gold < 0) | (gold >= n_gallery)).any()):
        raise ValueError("every query's gold image must be in the gallery")
    valid = reranked >= 0
    hit = reranked == gold[:, None]
    in_top = hit.any(dim=1)
    gold_combined = combined.masked_fill(~hit, float("-inf")).max(dim=1, keepdim=True).values
    top_higher = (valid & (combined > gold_combined)).sum(dim=1)
    top_tied = (valid & (combined == gold_combined) & ~hit).sum(dim=1)

    # -1 slots mark a spare column G, dropped after
    returned = torch.zeros(n_queries, n_gallery + 1, dtype=torch.bool, device=reranked.device)
    returned.scatter_(1, torch.where(valid, reranked, n_gallery).long(), True)
    rest = ~returned[:, :n_gallery]
    gold_fast = fast_scores.gather(1, gold[:, None].long())
    tail_higher = valid.sum(dim=1) + (rest & (fast_scores > gold_fast)).sum(dim=1)
    tail_tied = (rest & (fast_scores == gold_fast)).sum(dim=1) - 1  # less the gold image
    return Ranks(higher=torch.where(in_top, top_higher, tail_higher),
                 tied=torch.where(in_top, top_tied, tail_tied),
                 gold_tied=torch.ones_like(top_higher))


def candidate_slow_scores(score_pairs: Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor],
                                                torch.Tensor],
                          pyramids: Callable[[torch.Tensor], list[torch.Tensor]],
                          candidates: torch.Tensor, images_per_block: int = 256
                          ) -> tuple[torch.Tensor, float]:
    """[Q, K] h_slow of every query's candidates (-inf in the -1 slots) and the seconds spent
    scoring them.

    Only candidate images are touched: their distinct ids, in gallery order, ``images_per_block``
    at a time, get their pyramids built (``pyramids(gallery ids)`` -> levels), then every pair
    with one of them is scored (``score_pairs(levels, block rows, query rows)`` -> scores) and
    the pyramids are dropped, so memory holds one block's pyramids however large the gallery.
    Pairs go image by image, so an image's keys and values serve all the queries that found it.
    The seconds count the scoring only: an image's pyramid is query-independent, computed
    offline in a deployment as the index is.
    """
    found = candidates >= 0
    where = found.nonzero()  # [P, 2] (query, slot), query-major
    images = candidates[found]
    order = torch.argsort(images, stable=True)
    images, where = images[order], where[order]
    scores = torch.full_like(candidates, float("-inf"), dtype=torch.float32)
    distinct = torch.unique(images)  # sorted, as ``images`` now is
    seconds = 0.0
    for first in range(0, len(distinct), images_per_block):
        block = distinct[first:first + images_per_block]
        lo = int(torch.searchsorted(images, block[0]))
        hi = int(torch.searchsorted(images, block[-1], right=True))
        levels = pyramids(block)
        start = time.perf_counter()
        pair = score_pairs(levels, torch.searchsorted(block, images[lo:hi]), where[lo:hi, 0])
        pair = pair.float().cpu()  # the copy waits for the device: the clock sees its work
        seconds += time.perf_counter() - start
        scores[where[lo:hi, 0], where[lo:hi, 1]] = pair
    return scores, seconds
