"""Student cross-modal VL encoder: shapes, tokenizer, decoder causality and layer-to-level
schedule, padding invariance, batched Slow scoring, a real overfitting check and checkpoints."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vldistill.models import (
    HeadsConfig,
    Student,
    StudentConfig,
    Tokenizer,
    create_student,
    itm_score,
    load_checkpoint,
    reverse_ids,
    save_checkpoint,
    student_config_from_dict,
    vcr_choice_logits,
)

CAPTIONS = ["a dog runs on the grass", "two cats sleep on a red sofa near the window"]
HEADS = HeadsConfig(vqa_answers=7, teacher_vision_dim=1280, teacher_text_dim=384)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(context_length=32)


@pytest.fixture(scope="module")
def model() -> Student:
    torch.manual_seed(0)
    return create_student(StudentConfig(), HEADS).eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=gen) * 2 - 1


def test_output_shapes(model: Student, tokenizer: Tokenizer) -> None:
    d, v = 128, 49408
    ids, mask = tokenizer(CAPTIONS)
    images = _images(2)
    with torch.no_grad():
        vis = model.encode_image(images)
        assert vis.grids == [(8, 8), (4, 4), (2, 2)]
        assert [tuple(t.shape) for t in vis.levels] == [(2, 64, d), (2, 16, d), (2, 4, d)]
        assert vis.pooled.shape == (2, d)
        txt = model.encode_text(ids, mask)
        assert txt.tokens.shape == (2, 32, d) and txt.pooled.shape == (2, d)
        fused = model.fuse(vis, txt, mask)
        assert fused.tokens.shape == (2, 32, d) and fused.pooled.shape == (2, d)

        assert model.forward_task("vqa", images, ids, mask).shape == (2, 7)
        assert model.forward_task("ve", images, ids, mask).shape == (2, 3)
        assert model.forward_task("vcr", images, ids, mask).shape == (2,)
        itm = model.forward_task("itm", images, ids, mask)
        assert itm.shape == (2, 2) and itm_score(itm).shape == (2,)
        assert vcr_choice_logits(torch.arange(8.0)).shape == (2, 4)

        assert model.decoder.logits(vis.levels, ids, "forward").shape == (2, 32, v)
        for direction in ("forward", "backward"):
            ll = model.decoder.caption_log_likelihood(vis.levels, ids, mask, direction)
            assert ll.shape == (2,) and bool((ll < 0).all())
        assert model.slow_scores(images, ids, mask).shape == (2,)
        assert model.slow_score_matrix(images, ids, mask).shape == (2, 2)
        loss = model.caption_loss(images, ids, mask)
        assert loss.dim() == 0 and torch.isfinite(loss)

        proj = model.projections(vis.levels[0], txt.tokens, vis.pooled, txt.pooled)
        assert proj.vision_tokens.shape == (2, 64, 1280)
        assert proj.text_tokens.shape == (2, 32, 384)
        assert proj.vision_global.shape == (2, 1280) and proj.text_global.shape == (2, 384)

    with pytest.raises(ValueError, match="no vqa head"):
        create_student(StudentConfig()).forward_task("vqa", images, ids, mask)
    # The 49408 x 128 token embedding (shared by text tower and LM head) dominates.
    assert create_student(StudentConfig()).num_parameters() < 10_000_000


def test_tokenizer_ids_and_mask(tokenizer: Tokenizer) -> None:
    ids, mask = tokenizer(CAPTIONS)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (2, 32)
    assert tokenizer.vocab_size == 49408 and tokenizer.pad_id == 0
    assert bool((ids[:, 0] == tokenizer.sot_id).all())
    lengths = mask.sum(dim=1)
    for row, n in enumerate(lengths.tolist()):
        assert ids[row, n - 1] == tokenizer.eot_id
        assert bool(mask[row, :n].all()) and not bool(mask[row, n:].any())
        assert bool((ids[row, n:] == tokenizer.pad_id).all())
    assert tokenizer.decode(ids, mask) == CAPTIONS

    short = Tokenizer(context_length=5)
    ids, mask = short(["one two three four five six"])
    assert ids.shape == (1, 5) and bool(mask.all()) and ids[0, -1] == short.eot_id


def test_reverse_ids_hand_example() -> None:
    sot, eot = 49406, 49407
    ids = torch.tensor([[sot, 11, 12, 13, eot, 0, 0], [sot, 21, eot, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.tensor([[sot, 13, 12, 11, eot, 0, 0], [sot, 21, eot, 0, 0, 0, 0]])
    assert torch.equal(reverse_ids(ids, mask), expected)
    assert torch.equal(reverse_ids(reverse_ids(ids, mask), mask), ids)


def test_decoder_is_causal(model: Student, tokenizer: Tokenizer) -> None:
    ids, mask = tokenizer(["a small brown dog chases a red ball across the wet grass"])
    n = int(mask.sum())
    t = 4
    changed = ids.clone()
    gen = torch.Generator().manual_seed(3)
    changed[0, t + 1 : n - 1] = torch.randint(1000, 40000, (n - 2 - t,), generator=gen)
    levels = model.encode_image(_images(1)).levels
    with torch.no_grad():
        before = model.decoder.token_log_probs(levels, ids, mask, "forward")
        after = model.decoder.token_log_probs(levels, changed, mask, "forward")
    # Column j scores token j+1 given tokens <= j: columns < t only see unchanged tokens.
    torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, t : n - 1], after[:, t : n - 1])


def test_decoder_layers_read_levels_coarse_to_fine(model: Student, tokenizer: Tokenizer) -> None:
    assert model.decoder.level_for_layer == (2, 1, 0)
    seen: list[int] = []

    def record(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        seen.append(kwargs["keys_values"][0].shape[2])  # keys [B, H, Lk, D / H]

    hooks = [
        block.cross_attn.register_forward_pre_hook(record, with_kwargs=True)
        for block in model.decoder.blocks
    ]
    try:
        ids, mask = tokenizer(CAPTIONS[:1])
        with torch.no_grad():
            model.slow_scores(_images(1), ids, mask)
    finally:
        for h in hooks:
            h.remove()
    # Forward then backward pass; each visits layers 0, 1, 2 -> 2x2, 4x4, 8x8 grids.
    assert seen == [4, 16, 64, 4, 16, 64]

    deep = create_student(dataclasses.replace(StudentConfig(), decoder_layers=5))
    assert deep.decoder.level_for_layer == (2, 1, 0, 0, 0)


def test_padding_does_not_change_pooled_outputs(model: Student, tokenizer: Tokenizer) -> None:
    images = _images(2)
    ids, mask = tokenizer(CAPTIONS)  # row 0 shares a batch with a longer caption, context 32
    n = int(mask[0].sum())
    alone_ids, alone_mask = Tokenizer(context_length=n)(CAPTIONS[:1])  # no padding at all
    assert torch.equal(alone_ids[0], ids[0, :n])
    with torch.no_grad():
        vis = model.encode_image(images)
        padded_txt = model.encode_text(ids, mask)
        padded_fused = model.fuse(vis, padded_txt, mask)
        vis0 = model.encode_image(images[:1])
        alone_txt = model.encode_text(alone_ids, alone_mask)
        alone_fused = model.fuse(vis0, alone_txt, alone_mask)
        padded_score = model.slow_scores(images, ids, mask)[0]
        alone_score = model.slow_scores(images[:1], alone_ids, alone_mask)[0]
    tol = {"rtol": 0, "atol": 1e-5}
    torch.testing.assert_close(padded_txt.pooled[0], alone_txt.pooled[0], **tol)
    torch.testing.assert_close(padded_txt.tokens[0, :n], alone_txt.tokens[0], **tol)
    torch.testing.assert_close(padded_fused.pooled[0], alone_fused.pooled[0], **tol)
    torch.testing.assert_close(padded_score, alone_score, **tol)


def test_batched_scoring_equals_per_pair_loop(model: Student, tokenizer: Tokenizer) -> None:
    images = _images(3, seed=5)
    ids, mask = tokenizer(["a dog", "a red bus on a street", "people on a beach at dusk", "sky"])
    with torch.no_grad():
        matrix = model.slow_score_matrix(images, ids, mask)
        chunked = model.slow_score_matrix(images, ids, mask, max_pairs=5)
        split_captions = model.slow_score_matrix(images, ids, mask, max_pairs=3)  # < captions
        pairs = model.decoder.pair_scores(model.encode_image(images).levels, ids, mask,
                                          torch.tensor([2, 0, 2, 1]), torch.tensor([0, 3, 3, 1]),
                                          max_pairs=3)
        loop = torch.empty(3, 4)
        for i in range(3):
            for j in range(4):
                one = model.slow_scores(images[i : i + 1], ids[j : j + 1], mask[j : j + 1])
                loop[i, j] = one[0]
    assert matrix.shape == (3, 4)
    torch.testing.assert_close(matrix, loop, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked, loop, rtol=0, atol=1e-5)
    torch.testing.assert_close(split_captions, loop, rtol=0, atol=1e-5)
    torch.testing.assert_close(pairs, loop[[2, 0, 2, 1], [0, 3, 3, 1]], rtol=0, atol=1e-5)


def test_caption_loss_decreases_when_overfitting(tokenizer: Tokenizer) -> None:
    torch.manual_seed(0)
    student = create_student(StudentConfig())
    images = _images(4, seed=7)
    ids, mask = tokenizer(["a dog on grass", "a red car", "two birds in a tree", "a boat"])
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = student.caption_loss(images, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 10.0  # ~log(49408) at initialisation
    assert losses[-1] < 0.3 * losses[0]
    # Each direction on its own has learned too, not just their average.
    with torch.no_grad():
        for direction in ("forward", "backward"):
            assert student.caption_loss(images, ids, mask, directions=(direction,)) < 4.0


def test_checkpoint_round_trip(model: Student, tokenizer: Tokenizer, tmp_path) -> None:
    path = tmp_path / "ckpt" / "student.safetensors"
    save_checkpoint(path, model, model.cfg, extra={"step": 12, "method": "mad"})
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    loaded, cfg, extra = load_checkpoint(path)
    assert cfg == model.cfg and loaded.heads_config == HEADS
    assert extra == {"step": 12, "method": "mad"}
    # The shared token embedding is still one tensor after loading.
    assert loaded.decoder.token_embedding.weight is loaded.text.token_embedding.weight

    images = _images(2)
    ids, mask = tokenizer(CAPTIONS)
    with torch.no_grad():
        for task in ("vqa", "ve", "vcr", "itm"):
            a = model.forward_task(task, images, ids, mask)
            assert torch.equal(a, loaded.forward_task(task, images, ids, mask))
        a = model.slow_score_matrix(images, ids, mask)
        assert torch.equal(a, loaded.slow_score_matrix(images, ids, mask))

    with pytest.raises(ValueError, match="cfg differs"):
        save_checkpoint(path, model, dataclasses.replace(model.cfg, width=64))


def test_config_from_dict() -> None:
    cfg = StudentConfig(width=64, pyramid_channels=(16, 32))
    restored = student_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg and isinstance(restored.pyramid_channels, tuple)
    assert restored.grids == ((8, 8), (4, 4))
    with pytest.raises(ValueError, match="'widht'"):
        StudentConfig.from_dict({"widht": 64})
    with pytest.raises(ValueError, match="'vqa_answer'"):
        HeadsConfig.from_dict({"vqa_answer": 10})
    with pytest.raises(ValueError, match="divisible by heads"):
        StudentConfig(width=130)
    with pytest.raises(ValueError, match="image_size"):
        StudentConfig(image_size=48)


def test_without_progressive_upsampling_every_decoder_layer_reads_the_finest_level():
    from vldistill.models.fusion import coarse_to_fine_schedule

    assert coarse_to_fine_schedule(3, 3) == (2, 1, 0)  # coarse (index 2) to fine (index 0)
    assert coarse_to_fine_schedule(4, 3) == (2, 1, 0, 0)
    assert coarse_to_fine_schedule(3, 3, progressive=False) == (0, 0, 0)


def test_cross_attention_over_shared_keys_folds_rows_and_equals_copying_them():
    """n contexts' keys and values for n x g rows (each context's g rows consecutive, as one
    image's captions are) give what copying the keys and values to every row gives."""
    from vldistill.models.text import Attention

    torch.manual_seed(0)
    attention = Attention(16, 4).eval()
    contexts, group, length = 3, 5, 7
    x = torch.randn(contexts * group, length, 16)
    k, v = attention.keys_values(torch.randn(contexts, 11, 16))
    folded = attention(x, keys_values=(k, v))
    copied = attention(x, keys_values=(k.repeat_interleave(group, dim=0),
                                       v.repeat_interleave(group, dim=0)))
    assert torch.allclose(folded, copied, atol=1e-6)
    with pytest.raises(ValueError, match="unmasked"):
        attention(x, keys_values=(k, v), attn_mask=torch.ones(length, 11, dtype=torch.bool))
