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

    def loss_fn(model, batch):
        pred = model.net(x[batch.rows]).squeeze(-1)
        return {"loss": nn.functional.mse_loss(pred, y[batch.rows])}

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

    def dies_at_step_10(model, batch):
        if batch.step == 10:
            raise KeyboardInterrupt  # as if killed after the checkpoint at step 8
        return loss_fn(model, batch)

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

        def loss_fn(model, batch):
            if batch.step == die_at:
                raise KeyboardInterrupt
            out = inner(model, batch)
            if schedule.due(batch.step):
                schedule.update(out["loss"].item(), batch.step)
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


def image_problem():
    """A regression on 16 tiny uint8 images, 48 examples (3 per image) that read them through
    the loader: what a training stage's loss sees of a bank."""
    from vldistill.data.images import ImageBank

    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (16, 3, 2, 2), generator=g, dtype=torch.uint8)
    bank = ImageBank([f"i{k}" for k in range(16)], pixels)
    image_rows = torch.arange(48) % 16
    target = torch.randn(48, generator=g)

    def loss_fn(model, batch):
        # the batch holds exactly its rows' images, as the bank would give them
        assert torch.equal(batch.pixels, pixels[image_rows[batch.rows]])
        pred = model.net(batch.images(torch.device("cpu")).flatten(1)[:, :4]).squeeze(-1)
        return {"loss": nn.functional.mse_loss(pred, target[batch.rows])}

    return loss_fn, (bank, image_rows)


def test_loader_workers_change_nothing_and_a_killed_run_resumes_bit_identically(tmp_path):
    from vldistill.train.compute import Compute

    loss_fn, images = image_problem()
    reference = fresh_model()
    train(reference, loss_fn, 48, CFG, tmp_path / "reference.pt", progress=False,
          images=images)

    def dies_at_step_10(model, batch):
        if batch.step == 10:
            raise KeyboardInterrupt
        return loss_fn(model, batch)

    workers = Compute(workers=2)
    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), dies_at_step_10, 48, CFG, tmp_path / "state.pt", progress=False,
              images=images, compute=workers)
    resumed = fresh_model()
    history = train(resumed, loss_fn, 48, CFG, tmp_path / "state.pt", progress=False,
                    images=images, compute=workers)
    assert [h["step"] for h in history] == list(range(30))
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_batch_pins_its_pixels_for_the_copy_to_a_gpu():
    from vldistill.train.loop import Batch, StepBatches, step_loader

    batches = StepBatches(48, CFG, image_problem()[1])
    batch = batches[7]
    assert batch.step == 7 and len(batch.rows) == CFG.batch_size
    assert torch.equal(batch.rows, batch_indices(48, CFG.batch_size, 7, CFG.seed))
    with pytest.raises(ValueError, match="no images"):
        Batch(0, batch.rows).images(torch.device("cpu"))
    # a CUDA model gets a pinning loader; without a GPU here only its settings can be checked
    assert step_loader(batches, 3, 2, torch.device("cuda")).pin_memory
    assert not step_loader(batches, 3, 0, torch.device("cpu")).pin_memory
    assert list(step_loader(batches, 27, 0, torch.device("cpu")).sampler) == [27, 28, 29]
