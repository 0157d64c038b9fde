import pytest
import torch
from torch import nn

from vldistill.train.loop import TrainConfig, batch_indices, lr_factor, train


def test_batches_cover_every_example_once_per_epoch_and_are_seeded():
    rows = torch.cat([batch_indices(10, 5, step, seed=0) for step in range(2)])
    assert sorted(rows.tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 5, 3, seed=0), batch_indices(10, 5, 3, seed=0))
    assert not torch.equal(batch_indices(10, 5, 2, seed=0), batch_indices(10, 5, 2, seed=1))
    straddling = batch_indices(10, 4, 2, seed=0)  # positions 8..11 cross into epoch 1
    assert len(straddling) == 4


def test_lr_warms_up_then_decays_to_a_tenth():
    cfg = TrainConfig(steps=100, warmup_steps=10)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) == pytest.approx(0.1, abs=0.01)


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Linear(16, 1))


def make_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)

    def loss_fn(model, rows, step):
        pred = model.net(x[rows]).squeeze(-1)
        return {"loss": nn.functional.mse_loss(pred, y[rows])}

    return loss_fn


def fresh_model():
    torch.manual_seed(123)
    return Regression()


CFG = TrainConfig(steps=30, batch_size=8, lr=1e-2, warmup_steps=3, checkpoint_every=4)


def test_training_reduces_the_loss(tmp_path):
    cfg = TrainConfig(steps=60, batch_size=16, lr=5e-2, warmup_steps=3, checkpoint_every=20)
    history = train(fresh_model(), make_problem(), 64, cfg, tmp_path / "state.pt",
                    progress=False)
    assert len(history) == 60
    assert sum(h["loss"] for h in history[-5:]) < 0.3 * sum(h["loss"] for h in history[:5])


def test_a_killed_run_resumes_to_bit_identical_weights(tmp_path):
    reference = fresh_model()
    train(reference, make_problem(), 64, CFG, tmp_path / "reference.pt", progress=False)

    loss_fn = make_problem()

    def dies_at_step_10(model, rows, step):
        if step == 10:
            raise KeyboardInterrupt  # as if killed after the checkpoint at step 8
        return loss_fn(model, rows, step)

    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), dies_at_step_10, 64, CFG, tmp_path / "state.pt", progress=False)
    resumed = fresh_model()
    history = train(resumed, loss_fn, 64, CFG, tmp_path / "state.pt", progress=False)
    assert [h["step"] for h in history] == list(range(30))
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_state_the_loss_carries_across_steps_is_restored_on_resume(tmp_path):
    """AF's smoothed held-out loss lives outside the model; a resumed run must see its old
    value."""
    from vldistill.distill.mad import AdaptiveLambda, method_config

    def run(state_path, die_at=None):
        schedule = AdaptiveLambda(method_config("mad", ema=0.9, af_every=3), teacher_loss=0.5)
        inner = make_problem()

        def loss_fn(model, rows, step):
            if step == die_at:
                raise KeyboardInterrupt
            out = inner(model, rows, step)
            if schedule.due(step):
                schedule.update(out["loss"].item(), step)
            return {"loss": schedule.value * out["loss"]}

        model = fresh_model()
        train(model, loss_fn, 64, CFG, state_path, progress=False, extra_state=schedule)
        return model, schedule

    reference, reference_schedule = run(tmp_path / "reference.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "state.pt", die_at=10)
    resumed, resumed_schedule = run(tmp_path / "state.pt")
    assert resumed_schedule.smoothed == reference_schedule.smoothed
    assert resumed_schedule.updates == reference_schedule.updates
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resuming_with_another_config_is_refused(tmp_path):
    train(fresh_model(), make_problem(), 64, CFG, tmp_path / "state.pt", progress=False)
    other = TrainConfig(**{**CFG.__dict__, "lr": 0.5})
    with pytest.raises(ValueError, match="another training config"):
        train(fresh_model(), make_problem(), 64, other, tmp_path / "state.pt", progress=False)


def test_unknown_training_key_is_named():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
