import torch

from vldistill.eval.retrieval import ranks_from_scores
from vldistill.retrieval.rerank import ranks_after_rerank, rerank_top_k


def test_rerank_only_permutes_the_candidates_and_orders_by_the_combined_score():
    g = torch.Generator().manual_seed(0)
    candidates = torch.stack([torch.randperm(20, generator=g)[:5] for _ in range(8)])
    fast, slow = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    reranked, combined = rerank_top_k(candidates, fast, slow, beta=0.5)
    for before, after in zip(candidates.tolist(), reranked.tolist(), strict=True):
        assert sorted(before) == sorted(after)
    assert (combined[:, :-1] >= combined[:, 1:]).all()
    # beta = 0 follows the Slow scores alone
    only_slow, _ = rerank_top_k(candidates, fast, slow, beta=0.0)
    assert torch.equal(only_slow, candidates.gather(1, slow.argsort(dim=1, descending=True)))


def test_ranks_after_rerank_equal_exact_ranks_when_k_is_the_whole_gallery():
    g = torch.Generator().manual_seed(1)
    fast_full, slow_full = torch.randn(10, 30, generator=g), torch.randn(10, 30, generator=g)
    gold = torch.randint(0, 30, (10,), generator=g)
    fast_order = fast_full.argsort(dim=1, descending=True)
    reranked, _ = rerank_top_k(fast_order, fast_full.gather(1, fast_order),
                               slow_full.gather(1, fast_order), beta=0.3)
    ranks = ranks_after_rerank(reranked, fast_order, gold)
    assert torch.equal(ranks, ranks_from_scores(slow_full + 0.3 * fast_full, gold))


def test_a_gold_image_outside_the_top_k_keeps_its_fast_rank():
    fast_order = torch.tensor([[3, 1, 4, 0, 2]])
    reranked = torch.tensor([[1, 3]])  # K = 2, re-ordered
    assert ranks_after_rerank(reranked, fast_order, torch.tensor([1])).tolist() == [1]
    assert ranks_after_rerank(reranked, fast_order, torch.tensor([0])).tolist() == [4]
