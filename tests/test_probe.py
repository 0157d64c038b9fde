import pytest
import torch

from vldistill.distill.probe import cross_fitted_p_gold, fit_probe


def blobs(n=300, k=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 3
    labels = torch.arange(n) % k
    return centres[labels] + torch.randn(n, dim, generator=g), labels


def test_probe_learns_separable_classes_and_reports_gold_probabilities():
    x, y = blobs()
    probe = fit_probe(x, y)
    accuracy = (probe.logits(x).argmax(dim=1) == y).float().mean()
    assert accuracy > 0.95
    p = probe.p_gold(x, y)
    assert p.shape == (300,) and (p > 0).all() and (p <= 1).all()
    assert p.mean() > 0.8
    wrong = (y + 1) % 3
    assert probe.p_gold(x, wrong).mean() < 0.2
    assert 0 < probe.train_loss < 0.5


def test_probe_on_unlearnable_labels_stays_near_chance():
    x, _ = blobs(seed=1)
    y = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(2))
    x_test, _ = blobs(seed=3)
    y_test = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(4))
    probe = fit_probe(x, y)
    assert probe.p_gold(x_test, y_test).mean() < 0.45


def test_multiple_choice_probe_scores_candidates():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, 6, generator=g)
    gold = torch.randint(0, 4, (200,), generator=g)
    x[torch.arange(200), gold, 0] += 3.0  # the gold candidate stands out on feature 0
    probe = fit_probe(x, gold)
    assert probe.logits(x).shape == (200, 4)
    assert (probe.logits(x).argmax(dim=1) == gold).float().mean() > 0.9


def test_probe_is_deterministic_and_checks_shapes():
    x, y = blobs()
    assert torch.equal(fit_probe(x, y).weight, fit_probe(x, y).weight)
    with pytest.raises(ValueError, match="labels"):
        fit_probe(x, y[:10])
    with pytest.raises(ValueError, match="out of range"):
        fit_probe(x, y, n_classes=2)


def test_cross_fitting_is_not_fooled_by_memorised_labels():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(60, 200, generator=g)  # more dimensions than examples: labels memorisable
    y = torch.randint(0, 3, (60,), generator=g)
    in_sample = fit_probe(x, y).p_gold(x, y)
    assert in_sample.mean() > 0.9
    p_gold, loss = cross_fitted_p_gold(x, y, folds=5)
    assert p_gold.shape == (60,) and p_gold.mean() < 0.5
    assert loss > 0.8  # near or above ln 3 = 1.10, far from the in-sample loss


def test_cross_fitting_keeps_real_signal():
    x, y = blobs()
    p_gold, loss = cross_fitted_p_gold(x, y)
    assert p_gold.mean() > 0.8 and loss < 0.5
