import math

import pytest
import torch

from vldistill.retrieval.losses import info_nce, slow_to_fast_kl


def test_distillation_is_zero_when_the_two_distributions_match():
    g = torch.Generator().manual_seed(0)
    fast = torch.randn(6, 6, generator=g)
    # same distributions: slow / tau_s == fast / tau_f, plus per-row constants (softmax ignores)
    slow = fast * (0.5 / 0.05)
    assert slow_to_fast_kl(fast, slow, tau_fast=0.05, tau_slow=0.5).item() == pytest.approx(
        0.0, abs=1e-6)
    shifted_rows = slow + torch.arange(6.0)[:, None]
    # rows shifted by a constant keep the row direction's distribution, not the column one's
    assert slow_to_fast_kl(fast, shifted_rows, 0.05, 0.5).item() > 0


def test_distillation_is_positive_and_pulls_fast_towards_slow():
    g = torch.Generator().manual_seed(1)
    slow = torch.randn(5, 5, generator=g)
    fast = torch.zeros(5, 5, requires_grad=True)
    loss = slow_to_fast_kl(fast, slow, tau_fast=1.0, tau_slow=1.0)
    assert loss.item() > 0
    loss.backward()
    with torch.no_grad():
        stepped = fast - 1.0 * fast.grad
    assert slow_to_fast_kl(stepped, slow, 1.0, 1.0) < loss


def test_info_nce_is_log_b_for_uninformative_similarities_and_small_for_a_perfect_match():
    assert info_nce(torch.zeros(8, 8), 0.1).item() == pytest.approx(math.log(8))
    assert info_nce(torch.eye(8), 0.01).item() < 1e-6


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="in-batch"):
        info_nce(torch.zeros(2, 3), 0.1)
    with pytest.raises(ValueError, match="do not match"):
        slow_to_fast_kl(torch.zeros(2, 2), torch.zeros(3, 3), 0.1, 0.1)


def test_one_direction_ignores_what_the_other_sees():
    g = torch.Generator().manual_seed(2)
    fast = torch.randn(6, 6, generator=g)
    slow = fast * (0.5 / 0.05) + torch.arange(6.0)[:, None]  # a per-image (row) offset
    # per image over captions (rows) a row offset changes nothing; per caption over images it does
    assert slow_to_fast_kl(fast, slow, 0.05, 0.5, ("i2t",)).item() == pytest.approx(0.0, abs=1e-5)
    assert slow_to_fast_kl(fast, slow, 0.05, 0.5, ("t2i",)).item() > 0
    both = slow_to_fast_kl(fast, slow, 0.05, 0.5)
    assert both.item() == pytest.approx(
        0.5 * slow_to_fast_kl(fast, slow, 0.05, 0.5, ("t2i",)).item(), rel=1e-5)
    with pytest.raises(ValueError, match="directions"):
        slow_to_fast_kl(fast, slow, 0.05, 0.5, ("sideways",))


def test_hard_negatives_join_only_the_image_to_text_softmax():
    g = torch.Generator().manual_seed(2)
    similarity = torch.randn(4, 4, generator=g)
    negatives = torch.randn(4, 3, generator=g)
    tau = 0.1
    labels = torch.arange(4)
    by_hand = 0.5 * (
        torch.nn.functional.cross_entropy(torch.cat([similarity, negatives], 1) / tau, labels)
        + torch.nn.functional.cross_entropy(similarity.T / tau, labels))
    assert info_nce(similarity, tau, negatives).item() == pytest.approx(by_hand.item(), rel=1e-6)
    # extra wrong texts can only raise the loss; -inf (a negative true of that image) is left out
    assert info_nce(similarity, tau, negatives) > info_nce(similarity, tau)
    left_out = torch.full((4, 3), float("-inf"))
    assert info_nce(similarity, tau, left_out).item() == pytest.approx(
        info_nce(similarity, tau).item(), rel=1e-6)
    with pytest.raises(ValueError, match="hard negatives must be"):
        info_nce(similarity, tau, torch.zeros(3, 2))


def test_info_nce_splits_the_target_over_every_positive():
    import pytest
    import torch

    from vldistill.retrieval.losses import info_nce

    positives = torch.tensor([[True, True], [False, True]])
    similarity = torch.tensor([[0.0, 0.0], [-1.0, 1.0]])
    # logits at tau 0.01: [[0, 0], [-100, 100]]. Image 0 has two true texts and spreads evenly
    # over them (row loss log 2); image 1 picks its only text (0). Text 0 is true of image 0
    # only, which it prefers (0); text 1 is true of both but image 0 scores it 100 below image 1,
    # so half its target sits on a log-probability of -100 (50).
    tau = 0.01
    loss = info_nce(similarity, tau, positives=positives)
    assert loss.item() == pytest.approx(0.5 * ((0.6931 + 0.0) / 2 + (0.0 + 50.0) / 2), abs=1e-3)
    with pytest.raises(RuntimeError, match="true diagonal"):  # checked on the device
        info_nce(similarity, tau, positives=torch.zeros(2, 2, dtype=torch.bool))
    # the diagonal default is the classic InfoNCE
    assert info_nce(similarity, 1.0).item() == pytest.approx(
        info_nce(similarity, 1.0, positives=torch.eye(2, dtype=torch.bool)).item())
