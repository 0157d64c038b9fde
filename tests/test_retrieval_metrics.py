import pytest
import torch

from vldistill.eval.retrieval import (
    hard_negative_accuracy,
    median_rank,
    ranks_from_scores,
    recall_at_k,
    retrieval_metrics,
)


def brute_force_ranks(scores, gold_mask):
    """Reference: sort each row, walk down until the first gold item (ties: gold first)."""
    ranks = []
    for row, gold in zip(scores.tolist(), gold_mask.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda j: (-row[j], not gold[j]))
        ranks.append(next(i for i, j in enumerate(order) if gold[j]) + 1)
    return torch.tensor(ranks)


def test_ranks_and_recall_match_a_brute_force_reference_on_random_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 50, generator=g)
    gold = torch.rand(200, 50, generator=g) < 0.05
    gold[torch.arange(200), torch.randint(0, 50, (200,), generator=g)] = True
    ranks = ranks_from_scores(scores, gold)
    reference = brute_force_ranks(scores, gold)
    assert torch.equal(ranks, reference)
    for k in (1, 5, 10):
        assert recall_at_k(ranks, [k])[f"R@{k}"] == pytest.approx(
            100 * sum(r <= k for r in reference.tolist()) / 200)


def test_hand_checked_case_with_single_gold_indices_and_ties():
    scores = torch.tensor([[0.9, 0.1, 0.5],
                           [0.2, 0.2, 0.8],   # gold 1 ties with item 0: tie goes to gold
                           [0.3, 0.6, 0.1]])
    ranks = ranks_from_scores(scores, torch.tensor([0, 1, 2]))
    assert ranks.tolist() == [1, 2, 3]
    metrics = retrieval_metrics(scores, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert metrics["R@1"] == pytest.approx(100 / 3) and metrics["R@2"] == pytest.approx(200 / 3)
    assert metrics["median_rank"] == 2 and metrics["n"] == 3
    assert median_rank(torch.tensor([1, 2, 3, 10])) == 2.5


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
