"""Student towers from pretrained unimodal checkpoints: a timm CNN as the vision pyramid's
backbone and an open_clip text transformer in the text tower, with random-weight tiny
architectures saved in the formats users download (offline)."""

import pytest
import torch
from safetensors.torch import save_file

from vldistill.config import semantic_errors
from vldistill.models.backbones import TimmBackbone, load_clip_text, load_vision_backbone
from vldistill.models.config import StudentConfig
from vldistill.models.factory import create_student, load_checkpoint, save_checkpoint
from vldistill.models.tokenizer import Tokenizer
from vldistill.stages.student import initialise_towers

BACKBONE = "resnet10t"  # channels 128/256/512 at strides 8/16/32
VISION = StudentConfig(image_size=64, width=32, heads=2, pyramid_channels=(128, 256, 512),
                       text_layers=1, fusion_layers=1, decoder_layers=1,
                       vision_backbone=BACKBONE)
TEXT = StudentConfig(image_size=64, width=64, heads=2, pyramid_channels=(16, 32, 64),
                     text_layers=2, fusion_layers=1, decoder_layers=1, context_length=32,
                     text_causal=True)


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """A full timm classifier's random weights, as a hub ``model.safetensors`` holds them."""
    import timm

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_file(timm.create_model(BACKBONE, pretrained=False).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def clip():
    from open_clip.model import CLIP

    torch.manual_seed(2)
    model = CLIP(embed_dim=32, vision_cfg={"layers": 1, "width": 32, "patch_size": 16,
                                           "image_size": 32, "head_width": 16},
                 text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                           "layers": 2})
    return model.eval()


@pytest.fixture(scope="module")
def clip_checkpoint(clip, tmp_path_factory):
    """An open_clip training checkpoint: {"state_dict": ...} with DDP's module. prefix."""
    path = tmp_path_factory.mktemp("clip") / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in
                                           clip.state_dict().items()}}, path)
    return path


def test_the_timm_backbone_gives_the_pyramid_the_checkpoints_features(timm_checkpoint):
    import timm

    student = create_student(VISION).eval()
    record = load_vision_backbone(student.vision, timm_checkpoint)
    assert record["name"] == BACKBONE and len(record["sha256"]) == 64
    reference = timm.create_model(BACKBONE, pretrained=True, features_only=True,
                                  out_indices=(2, 3, 4),
                                  pretrained_cfg_overlay={"file": str(timm_checkpoint)}).eval()
    images = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(reference.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(reference.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = student.vision.feature_maps(images * 2 - 1)  # the student's input range
        theirs = reference((images - mean) / std)
    assert [tuple(m.shape[1:]) for m in ours] == [(128, 8, 8), (256, 4, 4), (512, 2, 2)]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert student.encode_image(images * 2 - 1).grids == [(8, 8), (4, 4), (2, 2)]


def test_frozen_batch_norm_keeps_an_images_features_independent_of_its_batch():
    backbone = TimmBackbone(BACKBONE, (128, 256, 512), (8, 16, 32)).train()
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        alone = backbone(images[:1])
        batched = backbone(images)
    for a, b in zip(alone, batched, strict=True):
        torch.testing.assert_close(a, b[:1], rtol=1e-5, atol=1e-5)


def test_a_checkpoint_of_a_student_with_a_backbone_rebuilds_without_the_timm_file(
        timm_checkpoint, tmp_path):
    student = create_student(VISION)
    load_vision_backbone(student.vision, timm_checkpoint)
    save_checkpoint(tmp_path / "s.safetensors", student)
    rebuilt, cfg, _ = load_checkpoint(tmp_path / "s.safetensors")
    assert cfg.vision_backbone == BACKBONE
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_image(images).pooled,
                                   student.eval().encode_image(images).pooled)


def test_pyramid_channels_that_do_not_match_the_backbone_are_refused_by_name():
    with pytest.raises(ValueError, match=r"pyramid_channels must be \[128, 256, 512\]"):
        create_student(StudentConfig(image_size=64, width=32, heads=2,
                                     pyramid_channels=(32, 64, 128), vision_backbone=BACKBONE))
    with pytest.raises(ValueError, match="vision_backbone"):
        TimmBackbone("no_such_model_x", (128, 256, 512), (8, 16, 32))


def test_the_text_tower_from_clip_computes_clips_text_features(clip, clip_checkpoint):
    student = create_student(TEXT).eval()
    record = load_clip_text(student.text, clip_checkpoint)
    assert record["kind"] == "open_clip"
    ids, mask = Tokenizer(32)(["a red circle left of a blue square", "two dogs", "!"])
    padded = torch.zeros(len(ids), 77, dtype=torch.long)  # open_clip pads to 77 with id 0
    padded[:, :ids.shape[1]] = ids
    with torch.no_grad():
        ours = student.text(ids, mask)
        eot = mask.sum(dim=1) - 1
        projected = ours.tokens[torch.arange(len(ids)), eot] @ clip.text_projection
        torch.testing.assert_close(projected, clip.encode_text(padded), rtol=1e-4, atol=1e-5)
    # the decoder shares the token embedding, so it reads CLIP's too
    assert student.decoder.token_embedding.weight.data_ptr() == \
        student.text.token_embedding.weight.data_ptr()


def test_a_text_checkpoint_of_another_shape_is_refused_with_the_setting_to_change(
        clip_checkpoint):
    deeper = StudentConfig(**{**TEXT.to_dict(), "text_layers": 3})
    with pytest.raises(ValueError, match="student.text_layers must be 2"):
        load_clip_text(create_student(deeper).text, clip_checkpoint)
    wider = StudentConfig(**{**TEXT.to_dict(), "width": 128})
    with pytest.raises(ValueError, match="student.width"):
        load_clip_text(create_student(wider).text, clip_checkpoint)


def test_initialised_towers_are_recorded_as_provenance(timm_checkpoint, clip_checkpoint):
    cfg = StudentConfig(**{**TEXT.to_dict(), "pyramid_channels": (128, 256, 512),
                           "vision_backbone": BACKBONE})
    records = initialise_towers(create_student(cfg),
                                {"vision": str(timm_checkpoint), "text": str(clip_checkpoint)})
    assert [(r["stage"], r["tower"], r["path"]) for r in records] == [
        ("tower_init", "vision", str(timm_checkpoint)),
        ("tower_init", "text", str(clip_checkpoint))]
    assert initialise_towers(create_student(TEXT), {"vision": None, "text": None}) == []


def test_init_files_without_the_matching_architecture_are_config_errors(tmp_path):
    config = {"dataset": {"name": "x", "source": "synthetic"},
              "student": {"frames": 1}, "finetune": {"tasks": ["vqa"]},
              "pretrain": {"init": {"vision": "a.safetensors", "text": "b.pt"}}}
    problems = semantic_errors(config)
    assert any("pretrain.init.vision" in p and "vision_backbone" in p for p in problems)
    assert any("pretrain.init.text" in p and "text_causal: true" in p for p in problems)
