"""Video towers: clips [B, T, 3, S, S] through the student's pyramid as space-time tokens."""

import pytest
import torch

from vldistill.models.config import StudentConfig
from vldistill.models.fast import FastDualEncoder
from vldistill.models.student import Student
from vldistill.models.tokenizer import Tokenizer

CFG = dict(image_size=32, width=16, pyramid_channels=(8, 16), heads=2, text_layers=1,
           fusion_layers=1, decoder_layers=2)


def clips(b: int = 2, t: int = 4) -> torch.Tensor:
    return torch.randn(b, t, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_still_image_towers_are_unchanged_by_the_video_option():
    torch.manual_seed(0)
    still = Student(StudentConfig(**CFG))
    assert not any("temporal" in name or "ln_clip" in name for name, _ in still.named_parameters())
    with pytest.raises(ValueError, match="built for still images"):
        still.encode_image(clips())


def test_clip_levels_are_frame_major_space_time_tokens():
    torch.manual_seed(0)
    model = Student(StudentConfig(**CFG, frames=4))
    x = clips()
    out = model.encode_image(x)
    per_frame = model.encode_image(x[:, 2])  # frame 2 alone, as a still image
    assert [level.shape for level in out.levels] == [(2, 4 * 16, 16), (2, 4 * 4, 16)]
    assert out.pooled.shape == (2, 16)
    # zero temporal embedding at init: frame 2's tokens are its own image tokens
    torch.testing.assert_close(out.levels[1][:, 2 * 4:3 * 4], per_frame.levels[1])
    with pytest.raises(ValueError, match="5 frames"):
        model.encode_image(clips(t=5))


def test_the_order_of_frames_reaches_slow_and_fast_scores():
    torch.manual_seed(0)
    cfg = StudentConfig(**CFG, frames=4)
    slow, fast = Student(cfg), FastDualEncoder(cfg, embed_dim=8)
    for model in (slow, fast):  # as after training: frame positions are told apart
        with torch.no_grad():
            model.vision.temporal_embedding.normal_()
    x = clips()
    backwards = x.flip(1)
    ids, mask = Tokenizer(16)(["the circle moves left then stops", "a square appears"])
    # (untrained attention is near uniform, so the difference is small, but it is there)
    assert not torch.equal(slow.slow_score_matrix(x, ids, mask),
                           slow.slow_score_matrix(backwards, ids, mask))
    assert not torch.allclose(fast.encode_image(x), fast.encode_image(backwards))


def test_the_temporal_parameters_learn():
    torch.manual_seed(0)
    model = Student(StudentConfig(**CFG, frames=4))
    ids, mask = Tokenizer(16)(["the circle moves left then stops"] * 2)
    model.caption_loss(clips(), ids, mask).backward()
    assert model.vision.temporal_embedding.grad.abs().sum() > 0
    # the pooled path (ITM, Fast) trains the temporal block
    model.vision(clips()).pooled.sum().backward()
    assert all(p.grad is not None for p in model.vision.temporal.parameters())


def test_the_frame_order_path_tells_a_clip_from_its_reversal_without_frame_embeddings():
    torch.manual_seed(0)
    fast = FastDualEncoder(StudentConfig(**CFG, frames=4), embed_dim=8)
    x = clips()
    # at init the order path is zero: the block and mean see a bag of frames
    torch.testing.assert_close(fast.encode_image(x), fast.encode_image(x.flip(1)))
    with torch.no_grad():
        fast.vision.frame_order.weight.normal_()  # as after training
    assert not torch.allclose(fast.encode_image(x), fast.encode_image(x.flip(1)))
    fast.encode_image(x).sum().backward()
    assert fast.vision.frame_order.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="3 frames"):  # fewer frames: repeat one (a still clip)
        fast.encode_image(clips(t=3))


def test_the_single_frame_baseline_shows_each_clip_as_its_middle_frame_held_still():
    from vldistill.data.video import ClipBank
    from vldistill.retrieval.gallery import RetrievalSet, middle_frame

    pixels = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.uint8).view(2, 4, 3, 2, 2)
    empty = torch.zeros(1, 1, dtype=torch.long)
    data = RetrievalSet(ClipBank(["a", "b"], pixels), empty, empty.bool(), torch.zeros(1).long(),
                        torch.ones(1).long(), empty, empty.bool(), torch.zeros(1).bool())
    still = middle_frame(data).bank.pixels
    assert still.shape == pixels.shape
    assert all(torch.equal(still[:, t], pixels[:, 2]) for t in range(4))


def test_motion_tokens_carry_each_tokens_change_since_the_previous_frame():
    torch.manual_seed(0)
    model = Student(StudentConfig(**CFG, frames=4))
    x = clips()
    still = x[:, :1].expand(-1, 4, -1, -1, -1)
    with torch.no_grad():
        for motion in model.vision.motion:
            motion.weight.normal_()
        # nothing changes in a still clip: its tokens are the frame's tokens at every position
        frame = model.encode_image(still[:, 0]).levels[1]
        torch.testing.assert_close(model.encode_image(still).levels[1],
                                   frame.repeat(1, 4, 1))
        # a moving clip's tokens differ from its frames' by the projected differences, and a
        # reversed clip's tokens are not its frames' tokens in reverse
        forwards, backwards = model.encode_image(x).levels[1], model.encode_image(x.flip(1))
        assert not torch.allclose(forwards.unflatten(1, (4, 4)).flip(1),
                                  backwards.levels[1].unflatten(1, (4, 4)))
    model.caption_loss(x, *Tokenizer(16)(["a circle moves left"] * 2)).backward()
    assert all(m.weight.grad.abs().sum() > 0 for m in model.vision.motion)
