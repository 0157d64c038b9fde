"""The compute settings: device resolution (one GPU per torchrun rank) and bf16 autocast, whose
training step on the CPU stays within tolerance of fp32."""

import pytest
import torch

from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.factory import create_student
from vldistill.models.tokenizer import Tokenizer
from vldistill.train.compute import Compute
from vldistill.train.loop import TrainConfig, train


def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Compute().torch_device() == torch.device("cpu")
    with pytest.raises(RuntimeError, match="sees no GPU"):
        Compute(device="cuda").torch_device()


def test_each_torchrun_rank_takes_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert Compute(device="auto").torch_device() == torch.device("cuda", 3)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="compute.precision"):
        Compute(precision="fp16")
    with pytest.raises(ValueError, match="compute: unknown key"):
        Compute.from_dict({"devices": "cpu"})


def small_student():
    torch.manual_seed(0)
    cfg = StudentConfig(image_size=32, width=32, heads=2, text_layers=1, fusion_layers=1,
                        decoder_layers=3, context_length=16, pyramid_channels=(16, 16, 32))
    return create_student(cfg, HeadsConfig()), cfg


def caption_batch(cfg, n=6):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=generator) * 2 - 1
    ids, mask = Tokenizer(cfg.context_length)(
        ["a red circle", "two blue squares left of a star", "a green triangle", "one shape",
         "a small yellow square on grey", "three shapes"][:n])
    return images, ids, mask


def test_a_bf16_step_on_the_cpu_is_within_tolerance_of_fp32():
    model, cfg = small_student()
    images, ids, mask = caption_batch(cfg)
    losses, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with Compute(precision=precision).autocast(torch.device("cpu")):
            loss = model.caption_loss(images, ids, mask)
        loss.backward()
        losses[precision] = loss.item()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters()
                                      if p.grad is not None])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cosine > 0.98, cosine
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights


def test_training_in_bf16_follows_the_fp32_loss_curve(tmp_path):
    histories = {}
    for precision in ("fp32", "bf16"):
        model, cfg = small_student()
        images, ids, mask = caption_batch(cfg)

        def loss_fn(model, batch, images=images, ids=ids, mask=mask):
            rows = batch.rows
            return {"loss": model.caption_loss(images[rows], ids[rows], mask[rows])}

        histories[precision] = train(
            model, loss_fn, len(images), TrainConfig(steps=12, batch_size=4, lr=3e-3,
                                                     warmup_steps=2, checkpoint_every=5),
            tmp_path / f"{precision}.pt", progress=False, compute=Compute(precision=precision))
    fp32 = [h["loss"] for h in histories["fp32"]]
    bf16 = [h["loss"] for h in histories["bf16"]]
    assert len(bf16) == 12 and bf16[-1] < bf16[0]
    assert max(abs(a - b) / a for a, b in zip(fp32, bf16, strict=True)) < 0.05


def test_a_non_finite_loss_is_reported_with_its_step_before_any_checkpoint_keeps_it(tmp_path):
    model = torch.nn.Linear(2, 1)
    x = torch.ones(8, 2)

    def loss_fn(model, batch):
        loss = model(x[batch.rows]).pow(2).mean()
        return {"loss": loss * float("nan") if batch.step == 6 else loss}

    state = tmp_path / "state.pt"
    with pytest.raises(FloatingPointError, match="at step 6"):
        train(model, loss_fn, 8, TrainConfig(steps=10, batch_size=4, checkpoint_every=4,
                                              warmup_steps=1), state, progress=False)
    assert torch.load(state, weights_only=False)["step"] == 4  # the last finite checkpoint


def test_compiled_parts_compute_the_same_loss_and_keep_their_parameter_names():
    # dynamo's eager backend traces exactly what inductor would compile, without a C++ build
    model, cfg = small_student()
    images, ids, mask = caption_batch(cfg)
    names = list(model.state_dict())
    expected = model.caption_loss(images, ids, mask)
    Compute(compile=True).compile_parts(model, backend="eager")
    assert all(part._compiled_call_impl is not None for part in model.children())
    assert list(model.state_dict()) == names  # checkpoints load into uncompiled models
    torch.testing.assert_close(model.caption_loss(images, ids, mask), expected)
    with pytest.raises(ValueError, match="compute.compile"):
        Compute(compile="yes")


def test_throughput_counts_a_steps_flops_and_its_utilisation():
    from vldistill.train.throughput import measure, peak_flops

    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16)

    def step():
        layer.zero_grad()
        layer(x).sum().backward()

    cpu = torch.device("cpu")
    result = measure(step, 4, cpu, Compute(), steps=2, warmup=1)
    # forward x @ W.T and the weight gradient: two [4 x 16] x [16 x 8] matmuls, 2 FLOPs a MAC
    assert result.flops_per_example == 2 * 2 * 16 * 8
    assert result.examples_per_s > 0 and result.mfu is None  # no known peak for a CPU
    assert peak_flops(cpu) is None and peak_flops(cpu, 2.0) == 2e12
    given = measure(step, 4, cpu, Compute(), steps=2, warmup=1, peak=1e12)
    assert given.mfu == pytest.approx(given.achieved_tflops)


def test_evaluating_puts_the_models_on_the_device_without_gradients_in_the_precision():
    from vldistill.train.compute import evaluating

    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with evaluating({"device": "cpu", "precision": "bf16"}, layer):
        y = layer(x)
        assert torch.is_autocast_enabled("cpu")
    assert y.dtype == torch.bfloat16 and not y.requires_grad
    assert next(layer.parameters()).dtype == torch.float32  # fp32 weights under autocast
    with evaluating(None, layer):
        assert layer(x).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="compute.precision"), evaluating({"precision": "fp16"},
                                                                         layer):
        pass
