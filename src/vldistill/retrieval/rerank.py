"""Re-ranking the Fast top-K with the Slow model, and the final ranking it implies.

For a text query, the Fast model's top-K gallery images (from the index) are re-scored with
s = h_slow + beta * h_fast and re-ordered; the images beyond K keep the Fast order after them.
So re-ranking only ever permutes the K candidates (it never adds or drops one), and K = gallery
size is the Slow model re-scoring everything.
"""

from __future__ import annotations

import torch


def rerank_top_k(candidates: torch.Tensor, fast_scores: torch.Tensor, slow_scores: torch.Tensor,
                 beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order each query's candidates [Q, K] by h_slow + beta * h_fast (both [Q, K]).

    Returns (re-ordered gallery ids [Q, K], their combined scores [Q, K]), best first; ties keep
    the Fast order.
    """
    if not (candidates.shape == fast_scores.shape == slow_scores.shape):
        raise ValueError("candidates, fast and slow scores must all be [queries, K]")
    combined = slow_scores + beta * fast_scores
    order = torch.sort(combined, dim=1, descending=True, stable=True).indices
    return candidates.gather(1, order), combined.gather(1, order)


def ranks_after_rerank(reranked: torch.Tensor, fast_order: torch.Tensor,
                       gold: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's gold image in (re-ranked top-K, then Fast order of the rest).

    ``reranked`` [Q, K] gallery ids; ``fast_order`` [Q, G] every gallery id in Fast order (its
    first K are the candidates); ``gold`` [Q] the correct image per query.
    """
    k = reranked.shape[1]
    hit = reranked == gold[:, None]
    in_top = hit.any(dim=1)
    top_rank = hit.float().argmax(dim=1) + 1
    fast_rank = (fast_order == gold[:, None]).float().argmax(dim=1) + 1
    if not bool((fast_order == gold[:, None]).any(dim=1).all()):
        raise ValueError("every query's gold image must be in the gallery")
    return torch.where(in_top, top_rank, torch.maximum(fast_rank, torch.tensor(k + 1)))
