import numpy as np
import pytest
import torch

from vldistill.eval.retrieval import Ranks, ranks_from_scores
from vldistill.retrieval.index import build_index, search
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


def assert_same_ranks(a: Ranks, b: Ranks) -> None:
    for field in ("higher", "tied", "gold_tied"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_ranks_after_rerank_equal_exact_ranks_when_k_is_the_whole_gallery():
    g = torch.Generator().manual_seed(1)
    fast_full, slow_full = torch.randn(10, 30, generator=g), torch.randn(10, 30, generator=g)
    gold = torch.randint(0, 30, (10,), generator=g)
    fast_order = fast_full.argsort(dim=1, descending=True)
    reranked, combined = rerank_top_k(fast_order, fast_full.gather(1, fast_order),
                                      slow_full.gather(1, fast_order), beta=0.3)
    ranks = ranks_after_rerank(reranked, combined, fast_full, gold)
    assert_same_ranks(ranks, ranks_from_scores(slow_full + 0.3 * fast_full, gold))


def test_a_gold_image_outside_the_top_k_ranks_after_them_by_its_fast_score():
    fast = torch.tensor([[0.5, 0.8, 0.1, 0.9, 0.7]])  # Fast order 3, 1, 4, 0, 2
    reranked, combined = torch.tensor([[1, 3]]), torch.tensor([[2.0, 1.0]])  # K = 2, re-ordered
    rank = lambda gold: ranks_after_rerank(reranked, combined, fast,  # noqa: E731
                                           torch.tensor([gold])).expected().tolist()
    assert rank(1) == [1] and rank(3) == [2]
    assert rank(4) == [3] and rank(0) == [4] and rank(2) == [5]


def test_ties_among_candidates_and_in_the_tail_count_as_expected_ranks():
    fast = torch.tensor([[0.9, 0.8, 0.2, 0.2, 0.2]])
    reranked, combined = torch.tensor([[0, 1]]), torch.tensor([[1.0, 1.0]])  # a tied re-rank
    ranks = ranks_after_rerank(reranked, combined, fast, torch.tensor([1]))
    assert ranks.expected().tolist() == [1.5] and ranks.within(1).tolist() == [0.5]
    # gold 3 ties with 2 and 4 after the two candidates: rank 3, 4 or 5
    ranks = ranks_after_rerank(reranked, combined, fast, torch.tensor([3]))
    assert ranks.expected().tolist() == [4.0]
    assert ranks.within(3).tolist() == [pytest.approx(1 / 3)]


def test_missing_candidates_are_never_ranked_and_their_scores_ignored():
    fast = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    candidates = torch.tensor([[2, -1, -1]])  # the index found one of K = 3
    reranked, combined = rerank_top_k(candidates, torch.tensor([[0.7, 5.0, 5.0]]),
                                      torch.tensor([[0.0, 9.0, 9.0]]), beta=1.0)
    assert reranked.tolist() == [[2, -1, -1]] and combined[0, 1:].isinf().all()
    gold = torch.tensor
    assert ranks_after_rerank(reranked, combined, fast, gold([2])).expected().tolist() == [1]
    # then every image not returned, in exact Fast order: 0, 1, 3 (id 0 is no candidate)
    for image, rank in ((0, 2), (1, 3), (3, 4)):
        assert ranks_after_rerank(reranked, combined, fast,
                                  gold([image])).expected().tolist() == [rank]


def reference_ranks(reranked, fast_full, gold):
    """The final list written out: returned candidates in re-ranked order, then every other
    image by exact Fast score; the gold image's 1-based position (random floats: no ties)."""
    out = []
    for row, fast, g in zip(reranked.tolist(), fast_full.tolist(), gold.tolist(), strict=True):
        top = [i for i in row if i >= 0]
        rest = sorted((i for i in range(len(fast)) if i not in top), key=lambda i: -fast[i])
        out.append((top + rest).index(g) + 1)
    return out


@pytest.mark.parametrize("factory, nprobe", [("IVF16,Flat", 1), ("HNSW8", None)])
def test_a_non_exhaustive_index_reranks_and_ranks_exactly(factory, nprobe):
    """IVF visiting 1 of 16 lists and HNSW return -1 for neighbours they miss: re-ranking skips
    them and the gold rank is exact from the embeddings, never read off the truncated result."""
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((400, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[:60] + 0.5 * rng.standard_normal((60, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = build_index(gallery, factory, nprobe)
    k = 200
    fast_scores, candidates = (torch.from_numpy(a) for a in search(index, queries, k))
    assert bool((candidates < 0).any())  # the case under test: some neighbours missing
    assert fast_scores[candidates < 0].isinf().all()
    fast_full = torch.from_numpy(queries) @ torch.from_numpy(gallery).T
    slow_full = torch.from_numpy(rng.standard_normal((60, 400)).astype(np.float32))
    found = candidates >= 0
    slow = torch.full_like(fast_scores, float("-inf"))
    slow[found] = slow_full.gather(1, candidates.clamp(min=0).long())[found]
    reranked, combined = rerank_top_k(candidates.long(), fast_scores, slow, beta=1.0)
    gold = torch.arange(60)
    ranks = ranks_after_rerank(reranked, combined, fast_full, gold)
    assert ranks.expected().tolist() == reference_ranks(reranked, fast_full, gold)
    assert bool((ranks.expected() > found.sum(dim=1)).any())  # some gold missed by the index


def test_slow_scores_touch_only_the_candidates_one_block_of_pyramids_at_a_time():
    from vldistill.retrieval.rerank import candidate_slow_scores

    torch.manual_seed(0)
    gallery = torch.randn(50, 3)  # an image's "pyramid": one vector
    query_vectors = torch.randn(4, 3)
    candidates = torch.tensor([[7, 3, -1], [3, 40, 12], [12, 7, 3], [-1, -1, -1]])
    built: list[list[int]] = []

    def pyramids(rows):
        built.append(rows.tolist())
        return [gallery[rows]]

    def score_pairs(levels, image_rows, query_rows):
        return (levels[0][image_rows] * query_vectors[query_rows]).sum(dim=1)

    scores, seconds = candidate_slow_scores(score_pairs, pyramids, candidates,
                                            images_per_block=2)
    # each distinct candidate image is built once, in gallery order, two per block
    assert built == [[3, 7], [12, 40]] and seconds >= 0
    expected = torch.full(candidates.shape, float("-inf"))
    for q, row in enumerate(candidates.tolist()):
        for slot, image in enumerate(row):
            if image >= 0:
                expected[q, slot] = gallery[image] @ query_vectors[q]
    assert torch.allclose(scores, expected)
