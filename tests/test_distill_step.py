import torch

from vldistill.data.manifest import text_id
from vldistill.distill.mad import distillation_loss, method_config
from vldistill.features.cache import cache_shard, gather_index
from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.factory import create_student
from vldistill.models.tokenizer import Tokenizer
from vldistill.teachers.base import ImageFeatures, TextFeatures
from vldistill.train.distill_step import TeacherFeatures, distilled_level, student_states

VISION_DIM, TEXT_DIM, GRID, MAX_LEN = 12, 10, (4, 4), 8


def image_features(keys):
    g = torch.Generator().manual_seed(len(keys))
    tokens = torch.randn(len(keys), GRID[0] * GRID[1], VISION_DIM, generator=g)
    return ImageFeatures(global_emb=tokens.mean(dim=1), tokens=tokens, grid=GRID)


def text_features(texts):
    g = torch.Generator().manual_seed(len(texts))
    mask = torch.zeros(len(texts), MAX_LEN, dtype=torch.bool)
    for i, text in enumerate(texts):
        mask[i, : min(MAX_LEN, 2 + len(text.split()))] = True
    tokens = torch.randn(len(texts), MAX_LEN, TEXT_DIM, generator=g) * mask[..., None]
    return TextFeatures(global_emb=tokens.sum(dim=1), tokens=tokens, mask=mask)


def build_caches(tmp_path, image_ids, texts):
    common = dict(batch_size=4, chunk_size=4, fingerprint="f", progress=False)
    vision = tmp_path / "vision" / "shard-000-of-001.safetensors"
    cache_shard(image_ids, list, image_features, vision, modality="vision", **common)
    gather_index([vision], tmp_path / "vision" / "index.parquet")
    by_id = {text_id(t): t for t in texts}
    text = tmp_path / "text" / "shard-000-of-001.safetensors"
    cache_shard(sorted(by_id), lambda keys: [by_id[k] for k in keys], text_features, text,
                modality="text", **common)
    gather_index([text], tmp_path / "text" / "index.parquet")
    return TeacherFeatures(tmp_path / "vision" / "index.parquet",
                           tmp_path / "text" / "index.parquet")


def test_distillation_reaches_the_student_towers_through_the_teacher_cache(tmp_path):
    image_ids = ["img-a", "img-b", "img-c"]
    texts = ["a red circle", "a blue square left of a green triangle", "two shapes"]
    teachers = build_caches(tmp_path, image_ids, texts)
    assert teachers.dims == (VISION_DIM, TEXT_DIM) and teachers.grid == GRID

    targets = teachers.batch(["img-c", "img-a"], [texts[1], texts[0]])
    assert targets.vision_tokens.shape == (2, 16, VISION_DIM)
    assert targets.text_mask[0].sum() == 8 and targets.text_mask[1].sum() == 5

    torch.manual_seed(0)
    model = create_student(
        StudentConfig(width=32, heads=2, text_layers=1, fusion_layers=1, context_length=16),
        HeadsConfig(teacher_vision_dim=VISION_DIM, teacher_text_dim=TEXT_DIM),
    )
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    ids, mask = Tokenizer(16)([texts[1], texts[0]])
    vision = model.encode_image(images)
    assert distilled_level(vision, GRID) == 1  # the student's 4x4 level at 64 px
    states = student_states(model, vision, model.encode_text(ids, mask), mask, GRID)
    assert states.vision_tokens.shape == (2, 16, VISION_DIM)
    out = distillation_loss(method_config("mad"), states, targets)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text.parameters())
    assert all(p.grad is None for p in model.decoder.parameters() if p is not
               model.text.token_embedding.weight)
