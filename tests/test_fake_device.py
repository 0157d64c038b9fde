"""Every loss runs on a GPU's tensors without a GPU: under a fake CUDA device
(``FakeTensorMode``), a tensor made on the CPU inside a loss raises a device mismatch, and a
host sync (``bool()``/``.item()`` on a device value) raises too, since fake tensors have no data.
So these catch, in CI, what would otherwise only fail (or stall) on a GPU node. Forward only:
autograd's engine wants a real CUDA context for backward."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vldistill.distill.mad import FUSED, DistillTargets, MadConfig, StudentStates, distillation_loss
from vldistill.retrieval.losses import info_nce, slow_to_fast_kl

DEVICE = "cuda"


@pytest.fixture
def fake_cuda():
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        yield mode


def assert_on_device(value) -> None:
    if isinstance(value, dict):
        for item in value.values():
            assert_on_device(item)
    elif isinstance(value, torch.Tensor):
        assert value.device.type == DEVICE, value.device


def teacher_and_student(batch=4, dv=12, dt=10, grid=(2, 2), teacher_grid=(3, 3), ls=7, lt=9):
    mask = torch.ones(batch, lt, dtype=torch.bool, device=DEVICE)
    student_mask = torch.ones(batch, ls, dtype=torch.bool, device=DEVICE)
    teacher = DistillTargets(
        vision_global=torch.randn(batch, dv, device=DEVICE, dtype=torch.float16),
        vision_tokens=torch.randn(batch, teacher_grid[0] * teacher_grid[1], dv, device=DEVICE,
                                  dtype=torch.float16),
        vision_grid=teacher_grid,
        text_global=torch.randn(batch, dt, device=DEVICE, dtype=torch.float16),
        text_tokens=torch.randn(batch, lt, dt, device=DEVICE, dtype=torch.float16),
        text_mask=mask)
    student = StudentStates(
        vision_tokens=torch.randn(batch, grid[0] * grid[1], dv, device=DEVICE,
                                  requires_grad=True),
        vision_grid=grid,
        vision_global=torch.randn(batch, dv, device=DEVICE),
        text_tokens=torch.randn(batch, ls, dt, device=DEVICE),
        text_mask=student_mask,
        text_global=torch.randn(batch, dt, device=DEVICE),
        fused_text_tokens=torch.randn(batch, ls, dt, device=DEVICE),
        fused_global=torch.randn(batch, dv + dt, device=DEVICE))
    return teacher, student


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("token_selection", [True, False])
def test_mad_distillation_loss_stays_on_the_device(fake_cuda, fused, token_selection):
    teacher, student = teacher_and_student()
    cfg = MadConfig(token_selection=token_selection, fused=fused)
    p_gold = torch.rand(4, device=DEVICE)
    terms = distillation_loss(cfg, student, teacher, p_gold=p_gold)
    assert_on_device(terms)


def test_retrieval_losses_stay_on_the_device(fake_cuda):
    similarity = torch.randn(6, 6, device=DEVICE, requires_grad=True)
    positives = torch.eye(6, dtype=torch.bool, device=DEVICE)
    positives[0, 1] = True
    hard = torch.randn(6, 3, device=DEVICE)
    loss = info_nce(similarity, 0.05, hard_negatives=hard, positives=positives)
    loss = loss + info_nce(similarity, 0.05)
    loss = loss + slow_to_fast_kl(similarity, torch.randn(6, 6, device=DEVICE), 0.05, 0.5)
    assert_on_device(loss)
