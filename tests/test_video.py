"""Video clips: uniform frame sampling, lossless write/read round trips, unreadable clips named,
the clip bank; VATEX annotations over placed clips, missing clips, validation of clips."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from vldistill.data.download import MissingDataError
from vldistill.data.formats import (
    DEFAULT_SPLITS,
    LOADERS,
    VATEX_SPLITS,
    FormatError,
    load_vatex,
    missing_clips,
    require_clips,
    write_dataset,
)
from vldistill.data.manifest import (
    SCHEMAS,
    BadExampleError,
    manifest_path,
    read_manifest,
    write_manifest,
)
from vldistill.data.validate import validate_dataset
from vldistill.data.video import (
    WRITERS,
    ClipBank,
    clip_info,
    load_clip_bank,
    read_clip,
    sample_frame_indices,
    write_clip,
)


def frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random RGB frames: the hardest content for a codec, so any loss shows."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Frame sampling


def test_sampling_takes_segment_midpoints():
    assert sample_frame_indices(16, 4) == [2, 6, 10, 14]
    assert sample_frame_indices(10, 3) == [1, 5, 8]
    assert sample_frame_indices(7, 1) == [3]
    assert sample_frame_indices(5, 5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("length", "n"), [(1, 1), (3, 8), (8, 8), (100, 8), (301, 7), (2, 5)])
def test_sampling_is_uniform_sorted_in_range_and_deterministic(length, n):
    indices = sample_frame_indices(length, n)
    assert len(indices) == n and indices == sample_frame_indices(length, n)
    assert indices == sorted(indices) and indices[0] >= 0 and indices[-1] < length
    # frame k spans [k, k + 1) of the clip's time line; the i-th pick holds segment i's midpoint
    for i, index in enumerate(indices):
        assert 2 * n * index <= (2 * i + 1) * length < 2 * n * (index + 1)


def test_a_short_clip_repeats_every_frame_evenly():
    assert sample_frame_indices(2, 4) == [0, 0, 1, 1]
    assert sample_frame_indices(3, 6) == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices(1, 3) == [0, 0, 0]
    counts = np.bincount(sample_frame_indices(3, 8), minlength=3)
    assert counts.max() - counts.min() <= 1


def test_sampling_refuses_no_frames_and_empty_clips():
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(10, 0)
    with pytest.raises(BadExampleError, match="clip with 0"):
        sample_frame_indices(0, 4)


# ---------------------------------------------------------------------------------------------
# Writing and reading


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_a_written_clip_reads_back_exactly(tmp_path, suffix):
    x = frames(6, 24, 24)
    path = tmp_path / f"clip{suffix}"
    write_clip(x, path)
    np.testing.assert_array_equal(read_clip(path, 6, 24), x)
    assert clip_info(path) == (6, 8.0, 24, 24)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_writing_the_same_frames_twice_gives_the_same_bytes(tmp_path, suffix):
    x = frames(4, 16, 20, seed=1)
    write_clip(x, tmp_path / f"a{suffix}", fps=5)
    write_clip(x, tmp_path / f"b{suffix}", fps=5)
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert clip_info(tmp_path / f"a{suffix}") == (4, 5.0, 20, 16)


def test_reading_samples_uniformly_and_resizes_like_the_image_path(tmp_path):
    from vldistill.data.images import square_view

    x = frames(12, 20, 30, seed=2)  # not square: each frame's central square, as for an image
    write_clip(x, tmp_path / "clip.mp4")
    clip = read_clip(tmp_path / "clip.mp4", 4, 8)
    assert clip.shape == (4, 8, 8, 3) and clip.dtype == np.uint8
    expected = [np.asarray(square_view(Image.fromarray(x[i]), 8))
                for i in sample_frame_indices(12, 4)]
    np.testing.assert_array_equal(clip, np.stack(expected))


def test_more_frames_than_the_clip_has_repeat_frames(tmp_path):
    x = frames(3, 16, 16, seed=3)
    write_clip(x, tmp_path / "clip.mkv")
    np.testing.assert_array_equal(read_clip(tmp_path / "clip.mkv", 6, 16),
                                  x[[0, 0, 1, 1, 2, 2]])


def test_a_long_clip_keeps_only_the_sampled_frames(tmp_path):
    x = frames(60, 16, 16, seed=4)
    write_clip(x, tmp_path / "long.mp4", fps=30)
    np.testing.assert_array_equal(read_clip(tmp_path / "long.mp4", 5, 16),
                                  x[sample_frame_indices(60, 5)])


def test_write_clip_refuses_bad_frames_and_unknown_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        write_clip(frames(2, 8, 8).astype(np.float32), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        write_clip(frames(0, 8, 8), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="suffix must be one of"):
        write_clip(frames(2, 8, 8), tmp_path / "a.gif")
    assert not list(tmp_path.iterdir())


def audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def no_frames(path: Path) -> None:
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "bgr0"
        container.start_encoding()  # a header with a video stream, then nothing


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "truncated", "audio only",
                                    "no frames"])
def test_an_unreadable_clip_is_named(tmp_path, damage):
    path = tmp_path / "clip.mp4"
    if damage in ("audio only", "no frames"):
        (audio_only if damage == "audio only" else no_frames)(path)
    elif damage != "missing":
        write_clip(frames(8, 16, 16), path)
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "garbage": bytes(range(256)) * 20,
                          "truncated": data[: len(data) // 2]}[damage])
    for read in (lambda: read_clip(path, 4, 8), lambda: clip_info(path)):
        with pytest.raises(BadExampleError, match=f"cannot read clip {path}"):
            read()


# ---------------------------------------------------------------------------------------------
# Clip bank


def clip_manifest(root: Path, ids: list[str], name: str = "images.parquet") -> Path:
    rows = {"image_id": ids, "image_path": [f"clips/{i}.mp4" for i in ids],
            "domain": ["source"] * len(ids), "width": [16] * len(ids),
            "height": [12] * len(ids), "scene": [None] * len(ids)}
    path = root / "manifest" / name
    write_manifest(pl.DataFrame(rows, schema=SCHEMAS["images"]), path, "images")
    return path


def test_the_clip_bank_holds_sampled_resized_clips_in_manifest_order(tmp_path):
    ids = ["c2", "c0", "c1"]
    clips = {i: frames(5, 12, 16, seed=k) for k, i in enumerate(ids)}
    for clip_id, x in clips.items():
        write_clip(x, tmp_path / "clips" / f"{clip_id}.mp4")
    bank = load_clip_bank(tmp_path, [clip_manifest(tmp_path, ids)], n_frames=3, size=8,
                          progress=False)
    assert bank.ids == ids and len(bank) == 3
    assert bank.pixels.shape == (3, 3, 3, 8, 8) and bank.pixels.dtype == torch.uint8
    for row, clip_id in enumerate(ids):
        expected = read_clip(tmp_path / "clips" / f"{clip_id}.mp4", 3, 8)
        assert torch.equal(bank.pixels[row], torch.from_numpy(expected).permute(0, 3, 1, 2))
    batch = bank.batch(["c1", "c2"])
    assert batch.shape == (2, 3, 3, 8, 8) and batch.dtype == torch.float32
    assert torch.equal(batch, bank.pixels[[2, 0]].float() / 127.5 - 1.0)
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    assert torch.equal(bank.at(torch.tensor([1])), bank.batch(["c0"]))
    with pytest.raises(KeyError, match="not in the bank"):
        bank.batch(["nope"])


def test_the_clip_bank_names_a_clip_broken_after_the_check(tmp_path):
    write_clip(frames(3, 8, 8), tmp_path / "clips" / "a.mp4")
    (tmp_path / "clips" / "b.mp4").write_bytes(b"not a video")
    with pytest.raises(BadExampleError, match=r"clips/b\.mp4.*image_id b.*re-run the data rule"):
        load_clip_bank(tmp_path, [clip_manifest(tmp_path, ["a", "b"])], 2, 8, progress=False)


def test_the_clip_bank_refuses_wrong_shapes_and_duplicate_ids():
    with pytest.raises(ValueError, match=r"uint8 \[N, T, 3, S, S\]"):
        ClipBank(["a"], torch.zeros((1, 3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError, match="duplicate clip ids"):
        ClipBank(["a", "a"], torch.zeros((2, 1, 3, 8, 8), dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# VATEX


TRAIN_IDS = ["Ptf_2VRj-V0_000122_000132"]
VAL_IDS = ["abc-DEF_123_000000_000010", "xyz987654ab_000005_000015", "q_q_q_q_q_q_000100_000110"]


def vatex_json(path: Path, video_ids: list[str], english: bool = True) -> Path:
    entries = [{"videoID": v, "chCap": [f"中文 {k}" for k in range(10)], "extra": 1}
               for v in video_ids]
    if english:
        for entry in entries:
            entry["enCap"] = [f"{entry['videoID']} caption {k}" for k in range(10)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def vatex(tmp_path):
    """A dataset root with four placed clips and the two official annotation files."""
    root = tmp_path / "vatex"
    for k, video_id in enumerate(TRAIN_IDS + VAL_IDS):
        write_clip(frames(3, 12, 16, seed=k), root / "clips" / f"{video_id}.mp4")
    files = {"training": vatex_json(tmp_path / "vatex_training_v1.0.json", TRAIN_IDS),
             "validation": vatex_json(tmp_path / "vatex_validation_v1.0.json", VAL_IDS)}
    return root, files


def test_vatex_reads_english_captions_and_clips_per_split(vatex):
    root, files = vatex
    tables = load_vatex(files, root, "clips")
    assert LOADERS["vatex"] is load_vatex and DEFAULT_SPLITS["vatex"] is VATEX_SPLITS
    assert set(tables) == {"train", "val", "test"}
    for split_tables in tables.values():
        for table, df in split_tables.items():
            assert df.schema == pl.Schema(SCHEMAS[table])
    train = tables["train"]
    assert train["images"].to_dicts() == [{
        "image_id": f"vatex-{TRAIN_IDS[0]}", "image_path": f"clips/{TRAIN_IDS[0]}.mp4",
        "domain": "source", "width": 16, "height": 12, "scene": None}]
    captions = train["captions"]
    assert captions["caption_id"].to_list() == [f"vatex-{TRAIN_IDS[0]}-c{k}" for k in range(10)]
    assert captions["caption"].to_list() == [f"{TRAIN_IDS[0]} caption {k}" for k in range(10)]
    assert captions["hard_negative"].null_count() == 10  # chCap and other fields are not read
    # validation is cut by clip: every clip and all its captions in exactly one of val / test
    val, test = (set(tables[s]["images"]["image_id"]) for s in ("val", "test"))
    assert val | test == {f"vatex-{v}" for v in VAL_IDS} and not val & test
    assert (len(val), len(test)) == (2, 1)
    for split in ("val", "test"):
        images, captions = tables[split]["images"], tables[split]["captions"]
        assert set(captions["image_id"]) == set(images["image_id"])
        assert captions.height == 10 * images.height
    again = load_vatex(files, root, "clips")
    assert all(again[s][t].equals(tables[s][t]) for s in tables for t in tables[s])


def test_vatex_reports_missing_clips_with_their_exact_paths(vatex):
    root, files = vatex
    (root / "clips" / f"{VAL_IDS[1]}.mp4").unlink()
    (root / "clips" / f"{TRAIN_IDS[0]}.mp4").unlink()
    tables = load_vatex(files, root, "clips")
    expected = sorted(str(root / "clips" / f"{v}.mp4") for v in (TRAIN_IDS[0], VAL_IDS[1]))
    assert missing_clips(root, tables) == expected
    assert tables["train"]["images"].select("width", "height").row(0) == (0, 0)
    with pytest.raises(MissingDataError) as error:
        require_clips(root, tables)
    message = str(error.value)
    assert message.startswith("2 VATEX clip(s) are missing")
    assert all(f"\n  {p}\n" in message for p in expected)
    assert "never downloads" in message and "named <videoID>.mp4" in message
    (root / "clips" / f"{VAL_IDS[1]}.mp4").write_bytes(b"")  # present, if broken: not missing
    write_clip(frames(2, 8, 8), root / "clips" / f"{TRAIN_IDS[0]}.mp4")
    assert missing_clips(root, tables) == []
    require_clips(root, tables)


def test_vatex_without_english_captions_is_refused(vatex, tmp_path):
    root, _ = vatex
    public_test = vatex_json(tmp_path / "vatex_public_test_english_v1.1.json", VAL_IDS,
                             english=False)
    with pytest.raises(FormatError, match=r"\[0\] \(videoID .*\) has no English captions"):
        load_vatex({"public_test": public_test}, root, "clips")
    (tmp_path / "bad.json").write_text(json.dumps({"videoID": "x"}))
    with pytest.raises(FormatError, match="expected a list"):
        load_vatex({"training": tmp_path / "bad.json"}, root, "clips")


def test_vatex_manifests_pass_validation_and_a_broken_clip_is_named_or_dropped(vatex):
    root, files = vatex
    tables = load_vatex(files, root, "clips")
    write_dataset(root, tables)
    report = validate_dataset(root, skip_bad_examples=False)
    assert report["checked"]["val"] == {"images": 2, "captions": 20, "vqa": 0, "ve": 0, "vcr": 0}
    broken_id = tables["test"]["images"]["image_id"][0]
    broken = root / tables["test"]["images"]["image_path"][0]
    broken.write_bytes(broken.read_bytes()[:200])  # cut off: no longer decodes
    with pytest.raises(BadExampleError, match=rf"clip does not decode: cannot read clip {broken}"):
        validate_dataset(root, skip_bad_examples=False)
    report = validate_dataset(root, skip_bad_examples=True)
    assert report["skipped"]["test"] == {"images": 1, "captions": 10, "vqa": 0, "ve": 0, "vcr": 0}
    assert report["reasons"] == {"clip does not decode": 1, "unusable image": 10}
    left = read_manifest(manifest_path(root, "test", "captions"), "captions")
    assert broken_id not in set(left["image_id"])
    assert validate_dataset(root, skip_bad_examples=False)["skipped"]["test"]["images"] == 0


def test_a_vatex_source_goes_through_the_data_stage_after_its_clip_check(vatex, tmp_path):
    from vldistill.data.download import MissingDataError
    from vldistill.stages.data import make_from_sources

    root, files = vatex
    sources = [{"format": "vatex", "images": "vatex",
                "annotations": {split: str(path) for split, path in files.items()}}]
    roots = {"vatex": [str(root / "clips")]}  # absolute: the user's own folder of cut clips
    summary = make_from_sources(sources, roots, 0, root, tmp_path / "summary.json")
    assert summary["counts"]["train"] == {"images": 1, "captions": 10, "vqa": 0, "ve": 0,
                                          "vcr": 0}
    assert (root / "images/vatex" / f"{TRAIN_IDS[0]}.mp4").is_symlink()
    (root / "clips" / f"{VAL_IDS[1]}.mp4").unlink()
    with pytest.raises(MissingDataError, match=VAL_IDS[1]):
        make_from_sources(sources, roots, 0, root, tmp_path / "summary.json")


def test_teacher_items_of_clips_are_their_sampled_frames(vatex, tmp_path):
    from vldistill.data.formats import load_vatex, write_dataset
    from vldistill.data.manifest import manifest_path
    from vldistill.stages.teacher import image_items, load_pictures

    root, files = vatex
    write_dataset(root, load_vatex(files, root, "clips"))
    items = image_items(root, [manifest_path(root, "train", "images")], frames=4)
    clip = f"vatex-{TRAIN_IDS[0]}"
    assert items["key"].to_list() == [f"{clip}#{t:02d}" for t in range(4)]
    pictures = load_pictures(items["payload"].to_list(), 4, 16)
    expected = read_clip(root / "clips" / f"{TRAIN_IDS[0]}.mp4", 4, 16)
    assert [np.asarray(p).tolist() for p in pictures] == [f.tolist() for f in expected]
