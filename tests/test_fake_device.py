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


def test_teacher_targets_read_on_the_host_move_to_the_device(fake_cuda):
    teacher, _ = teacher_and_student()
    host = DistillTargets(*(t.to("cpu") if isinstance(t, torch.Tensor) else t
                            for t in vars(teacher).values()))
    moved = host.to(DEVICE)
    assert_on_device(vars(moved))
    assert moved.vision_grid == teacher.vision_grid


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


def small_student():
    from vldistill.models.config import HeadsConfig, StudentConfig
    from vldistill.models.factory import create_student

    cfg = StudentConfig(image_size=32, width=16, heads=2, text_layers=1, fusion_layers=1,
                        decoder_layers=3, context_length=12, pyramid_channels=[16, 16, 16])
    with torch.device(DEVICE):
        return create_student(cfg, HeadsConfig(vqa_answers=5, teacher_vision_dim=12,
                                               teacher_text_dim=10)), cfg


def token_batch(batch: int, length: int):
    ids = torch.randint(1, 100, (batch, length), device=DEVICE)
    mask = torch.ones(batch, length, dtype=torch.bool, device=DEVICE)
    return ids, mask


def test_the_student_forward_heads_and_caption_scores_stay_on_the_device(fake_cuda):
    model, cfg = small_student()
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size, device=DEVICE)
    ids, mask = token_batch(3, 8)
    for task in ("vqa", "ve", "vcr", "itm"):
        assert_on_device(model.forward_task(task, images, ids, mask))
    assert_on_device(model.caption_loss(images, ids, mask))
    assert_on_device(model.slow_scores(images, ids, mask))
    assert_on_device(model.slow_score_matrix(images, ids, mask, max_pairs=4))
    fused = model.fuse(model.encode_image(images), model.encode_text(ids, mask), mask)
    assert_on_device(fused.pooled)


@pytest.fixture
def host_reads_unavailable(monkeypatch):
    """Fake host tensors hold no data either, so the host's free read of a batch's longest row
    (trim_padding) cannot run under the fake mode: use the full width, as on a device."""
    from vldistill.models import fusion, tokenizer

    for module in (tokenizer, fusion):
        monkeypatch.setattr(module, "used_columns", lambda mask: mask.shape[-1])


@pytest.mark.parametrize("task", ["vqa", "ve", "vcr"])
def test_fine_tuning_logits_and_loss_move_host_batches_to_the_device(
        fake_cuda, host_reads_unavailable, task):
    """The task data stay on the host (CPU) and the model on the device: each batch moves."""
    from vldistill.data.images import ImageBank
    from vldistill.train.tasks import TaskData, task_logits, task_loss

    model, cfg = small_student()
    n, length = 6, 8
    shape = (n, 4, length) if task == "vcr" else (n, length)
    targets = (torch.rand(n, 5) if task == "vqa" else
               torch.randint(0, 4 if task == "vcr" else 3, (n,)))
    data = TaskData(task=task, image_ids=[f"i{i}" for i in range(n)],
                    image_rows=torch.arange(n), ids=torch.randint(1, 100, shape),
                    mask=torch.ones(shape, dtype=torch.bool), primary_text=[""] * n,
                    targets=targets, gold=torch.zeros(n, dtype=torch.long))
    bank = ImageBank([f"i{i}" for i in range(n)],
                     torch.randint(0, 255, (n, 3, cfg.image_size, cfg.image_size),
                                   dtype=torch.uint8))
    rows = torch.tensor([0, 2, 3])
    logits = task_logits(model, data, rows, bank)
    assert_on_device(logits)
    assert_on_device(task_loss(logits, data, rows))


def test_retrieval_evaluation_reads_host_galleries_on_the_device(fake_cuda,
                                                                 host_reads_unavailable):
    """Gallery pixels, captions and the Slow pyramids stay on the host; the Fast and Slow
    models on the device: embeddings and scores come out on the device, the pyramids go back
    to the host (a large gallery's would not fit beside the model)."""
    from vldistill.data.images import ImageBank
    from vldistill.models.fast import FastDualEncoder
    from vldistill.retrieval.gallery import embed_gallery, embed_queries, gallery_levels

    slow, cfg = small_student()
    with torch.device(DEVICE):
        fast = FastDualEncoder(cfg, 8)
    n, length = 5, 8
    bank = ImageBank([f"i{i}" for i in range(n)],
                     torch.randint(0, 255, (n, 3, cfg.image_size, cfg.image_size),
                                   dtype=torch.uint8))
    ids = torch.randint(1, 100, (3, length))
    mask = torch.ones(3, length, dtype=torch.bool)
    assert_on_device(embed_gallery(fast, bank, batch_size=2))
    assert_on_device(embed_queries(fast, ids, mask, batch_size=2))
    levels = gallery_levels(slow, bank, batch_size=2)
    assert all(level.device.type == "cpu" for level in levels)
    scores = slow.decoder.pairwise_scores(levels, ids, mask, max_pairs=4)
    assert scores.shape == (n, 3)
    assert_on_device(scores)
