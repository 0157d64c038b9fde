import itertools
import statistics
from fractions import Fraction

import pytest
import torch

from vldistill.eval.retrieval import (
    Ranks,
    hard_negative_accuracy,
    median_rank,
    ranks_from_scores,
    recall_at_k,
    retrieval_metrics,
)


def brute_force_ranks(scores, gold_mask):
    """Reference without ties: sort each row, walk down until the first gold item."""
    ranks = []
    for row, gold in zip(scores.tolist(), gold_mask.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        ranks.append(next(i for i, j in enumerate(order) if gold[j]) + 1)
    return torch.tensor(ranks)


def rank_distribution(row, gold):
    """Reference with ties: every order of the row's items that sorts its scores (ties broken by
    each permutation of the items in turn, so every tie order counts equally) -> the exact
    distribution of the first gold item's rank, as {rank: probability}."""
    counts = {}
    perms = list(itertools.permutations(range(len(row))))
    for perm in perms:
        order = sorted(range(len(row)), key=lambda j: (-row[j], perm[j]))
        rank = next(i for i, j in enumerate(order) if gold[j]) + 1
        counts[rank] = counts.get(rank, 0) + 1
    return {rank: Fraction(c, len(perms)) for rank, c in counts.items()}


def test_ranks_and_recall_match_a_brute_force_reference_on_random_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 50, generator=g)
    gold = torch.rand(200, 50, generator=g) < 0.05
    gold[torch.arange(200), torch.randint(0, 50, (200,), generator=g)] = True
    ranks = ranks_from_scores(scores, gold)
    reference = brute_force_ranks(scores, gold)
    assert torch.equal(ranks.expected(), reference.double())  # random floats: no ties
    for k in (1, 5, 10):
        assert recall_at_k(ranks, [k])[f"R@{k}"] == pytest.approx(
            100 * sum(r <= k for r in reference.tolist()) / 200)


def test_hand_checked_case_with_single_gold_indices_and_ties():
    scores = torch.tensor([[0.9, 0.1, 0.5],
                           [0.2, 0.2, 0.8],   # gold 1 ties with item 0 below 0.8: rank 2 or 3
                           [0.3, 0.6, 0.1]])
    ranks = ranks_from_scores(scores, torch.tensor([0, 1, 2]))
    assert ranks.expected().tolist() == [1, 2.5, 3]
    metrics = retrieval_metrics(scores, torch.tensor([0, 1, 2]), ks=(1, 2, 3))
    assert metrics["R@1"] == pytest.approx(100 / 3)
    assert metrics["R@2"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert metrics["R@3"] == pytest.approx(100.0)
    assert metrics["median_rank"] == 2.5 and metrics["n"] == 3
    assert median_rank(torch.tensor([1, 2, 3, 10])) == 2.5  # plain ranks: no ties


def test_a_constant_scorer_is_at_chance():
    metrics = retrieval_metrics(torch.zeros(100, 100), torch.arange(100))
    assert metrics["R@1"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["R@5"] == pytest.approx(5.0, abs=1e-12)
    assert metrics["R@10"] == pytest.approx(10.0, abs=1e-12)
    assert metrics["median_rank"] == 50.5
    # several correct items per query (image -> text, 5 captions each of 20 images):
    # P(one of 5 among the first K of 100) = 1 - C(95, K) / C(100, K)
    gold = torch.arange(100)[None, :] // 5 == torch.arange(20)[:, None]
    metrics = retrieval_metrics(torch.zeros(20, 100), gold)
    assert metrics["R@1"] == pytest.approx(5.0, abs=1e-9)
    first_5_wrong = Fraction(95 * 94 * 93 * 92 * 91, 100 * 99 * 98 * 97 * 96)
    assert metrics["R@5"] == pytest.approx(100 * float(1 - first_5_wrong), abs=1e-9)
    assert metrics["median_rank"] == pytest.approx(101 / 6)  # (m + 1) / (g + 1)


def test_ties_count_as_the_expectation_over_every_tie_order():
    """Exact against enumerating all 6! orders, with one or several correct items tied."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (40, 6), generator=g).double()
    gold = torch.rand(40, 6, generator=g) < 0.3
    gold[torch.arange(40), torch.randint(0, 6, (40,), generator=g)] = True
    ranks = ranks_from_scores(scores, gold)
    expected = []
    for q, (row, gold_row) in enumerate(zip(scores.tolist(), gold.tolist(), strict=True)):
        dist = rank_distribution(row, gold_row)
        mean = sum(rank * p for rank, p in dist.items())
        assert float(ranks.expected()[q]) == pytest.approx(float(mean), abs=1e-12)
        expected.append(float(mean))
        for k in range(1, 7):
            within = sum(p for rank, p in dist.items() if rank <= k)
            assert float(ranks.within(k)[q]) == pytest.approx(float(within), abs=1e-12)
    assert median_rank(ranks) == pytest.approx(statistics.median(expected))


def test_exact_ranks_and_validation():
    ranks = Ranks.exact(torch.tensor([1, 4]))
    assert ranks.within(3).tolist() == [1.0, 0.0] and ranks.expected().tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match="at least one correct item"):
        Ranks(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="no queries"):
        recall_at_k(torch.empty(0, dtype=torch.long))


def test_a_query_without_a_correct_item_is_an_error():
    with pytest.raises(ValueError, match="at least one correct item"):
        ranks_from_scores(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))


def test_hard_negative_accuracy_counts_ties_half():
    scores = hard_negative_accuracy(torch.tensor([2.0, 1.0, 0.5, 3.0]),
                                    torch.tensor([1.0, 1.0, 0.7, 3.0]))
    assert scores == {"accuracy": pytest.approx(100 * (1 + 0.5 + 0 + 0.5) / 4), "n": 4}
    # a model blind to the difference (equal scores) sits exactly at chance
    assert hard_negative_accuracy(torch.ones(5), torch.ones(5))["accuracy"] == 50.0
    with pytest.raises(ValueError, match="no pairs"):
        hard_negative_accuracy(torch.empty(0), torch.empty(0))
    with pytest.raises(ValueError, match="two \\[P\\] score vectors"):
        hard_negative_accuracy(torch.ones(3), torch.ones(2))
