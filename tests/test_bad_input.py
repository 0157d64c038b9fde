"""Bad input: each fault either fails naming the file, row and reason, or (skip_bad_examples) is
dropped and counted; a seeded fuzz run feeds random corruptions to the loaders."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from vldistill.data.images import load_image_bank
from vldistill.data.manifest import (
    SPLITS,
    BadExampleError,
    ManifestError,
    manifest_path,
    read_manifest,
)
from vldistill.data.validate import validate_dataset
from vldistill.features import FeatureStore, cache_shard, gather_index
from vldistill.results.table import build_table
from vldistill.synthetic.images import SyntheticConfig, generate
from vldistill.teachers import ImageFeatures

COUNTS = {"train": 4, "val": 2, "test": 2, "test_shifted": 2}


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "ds"
    generate(SyntheticConfig(counts=COUNTS, captions_per_image=2, vqa_per_image=2),
             root, seed=3, progress=False)
    return root


@pytest.fixture()
def dataset(clean_dataset, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(clean_dataset, root)
    return root


def rows(root: Path, split: str, table: str) -> pl.DataFrame:
    return read_manifest(manifest_path(root, split, table), table)


def rewrite(root: Path, split: str, table: str, df: pl.DataFrame) -> None:
    df.write_parquet(manifest_path(root, split, table))  # as a user's broken file would be


def set_cell(root: Path, split: str, table: str, row: int, column: str, value) -> None:
    df = rows(root, split, table)
    values = df[column].to_list()
    values[row] = value
    rewrite(root, split, table, df.with_columns(pl.Series(column, values, dtype=df[column].dtype)))


def image_file(root: Path, split: str = "train", row: int = 1) -> Path:
    return root / rows(root, split, "images")["image_path"][row]


# One fault each: (what it does to the dataset, the table it hits, the reason reported).
def truncate_image(root):
    path = image_file(root)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return "images", "image does not decode"


def garbage_image(root):
    image_file(root).write_bytes(b"not an image at all" * 10)
    return "images", "image does not decode"


def empty_image(root):
    image_file(root).write_bytes(b"")
    return "images", "image does not decode"


def missing_image(root):
    image_file(root).unlink()
    return "images", "image does not decode"


def empty_caption(root):
    set_cell(root, "train", "captions", 1, "caption", "   ")
    return "captions", "empty caption"


def no_answers(root):
    set_cell(root, "train", "vqa", 1, "answers", [])
    return "vqa", "question with no answers"


def blank_answers(root):
    set_cell(root, "train", "vqa", 1, "answers", ["", " "])
    return "vqa", "question with no answers"


def unknown_ve_label(root):
    set_cell(root, "train", "ve", 1, "label", "maybe")
    return "ve", "unknown label"


def three_vcr_answers(root):
    set_cell(root, "train", "vcr", 1, "answers", ["a", "b", "c"])
    return "vcr", "bad answers"


def vcr_label_out_of_range(root):
    set_cell(root, "train", "vcr", 1, "answer_label", 7)
    return "vcr", "bad answer_label"


FAULTS = [truncate_image, garbage_image, empty_image, missing_image, empty_caption, no_answers,
          blank_answers, unknown_ve_label, three_vcr_answers, vcr_label_out_of_range]


def test_a_clean_dataset_passes_with_nothing_skipped(dataset):
    report = validate_dataset(dataset, skip_bad_examples=False)
    assert report["reasons"] == {}
    assert all(n == 0 for tables in report["skipped"].values() for n in tables.values())
    assert report["checked"]["train"]["images"] == COUNTS["train"]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_a_bad_example_fails_naming_file_row_and_reason(dataset, fault):
    table, reason = fault(dataset)
    with pytest.raises(BadExampleError) as info:
        validate_dataset(dataset, skip_bad_examples=False)
    message = str(info.value)
    assert f"{manifest_path(dataset, 'train', table)} row 1 (" in message
    assert reason in message and "skip_bad_examples: true" in message


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_with_skip_bad_examples_the_row_is_dropped_and_counted(dataset, fault):
    table, reason = fault(dataset)
    before = rows(dataset, "train", table)
    report = validate_dataset(dataset, skip_bad_examples=True)
    after = rows(dataset, "train", table)
    assert len(after) == len(before) - 1
    assert report["skipped"]["train"][table] >= 1 and report["reasons"][reason] == 1
    assert validate_dataset(dataset, skip_bad_examples=False)["reasons"] == {}  # clean now


def test_a_bad_image_takes_every_task_row_that_uses_it(dataset):
    bad_id = rows(dataset, "train", "images")["image_id"][1]
    truncate_image(dataset)
    used = {t: int((rows(dataset, "train", t)["image_id"] == bad_id).sum())
            for t in ("captions", "vqa", "ve", "vcr")}
    report = validate_dataset(dataset, skip_bad_examples=True)
    for table, n in used.items():
        assert n > 0 and report["skipped"]["train"][table] == n
        assert bad_id not in rows(dataset, "train", table)["image_id"].to_list()
    assert report["reasons"]["unusable image"] == sum(used.values())


def test_a_manifest_missing_a_column_fails_in_either_mode(dataset):
    rewrite(dataset, "val", "vqa", rows(dataset, "val", "vqa").drop("answers"))
    for skip in (False, True):
        with pytest.raises(ManifestError,
                           match=r"val/vqa\.parquet.*lacks column\(s\) \['answers'\]"):
            validate_dataset(dataset, skip_bad_examples=skip)


def test_an_unreadable_manifest_is_named(dataset):
    path = manifest_path(dataset, "test", "captions")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ManifestError, match=r"test/captions\.parquet is not a readable parquet"):
        validate_dataset(dataset, skip_bad_examples=True)


def test_an_image_broken_after_the_check_fails_loading_naming_it(dataset):
    truncate_image(dataset)
    with pytest.raises(BadExampleError, match=r"cannot read image .*re-run the data rule"):
        load_image_bank(dataset, [manifest_path(dataset, "train", "images")], 32, progress=False)


def test_skips_reach_the_results_table(tmp_path):
    summary = tmp_path / "results" / "ds" / "finetune_summary.csv"
    summary.parent.mkdir(parents=True)
    pl.DataFrame({"dataset": ["ds"], "task": ["vqa"], "regime": ["full"], "split": ["test"],
                  "method": ["mad"], "metric": ["accuracy"], "mean": [0.5], "std": [None],
                  "seeds": [1], "n": [97], "reference": [0.2], "reference_kind": ["majority"]},
                 ).write_csv(summary)
    validation = tmp_path / "data" / "ds" / "validation.json"
    validation.parent.mkdir(parents=True)
    validation.write_text(json.dumps({"skipped": {"test": {"vqa": 3, "images": 1}}}))
    table = build_table([summary], [validation])
    assert table["n"].item() == 97 and table["skipped"].item() == 3
    assert build_table([summary])["skipped"].item() == 0


# A feature shard whose tensors do not fit its metadata ----------------------------------------


def vision_shard(path: Path, n: int = 4) -> None:
    def encode(items):
        g = torch.Generator().manual_seed(len(items))
        return ImageFeatures(torch.randn(len(items), 8, generator=g),
                             torch.randn(len(items), 6, 8, generator=g), (2, 3))
    cache_shard([f"k{i}" for i in range(n)], list, encode, path, batch_size=2, chunk_size=2,
                fingerprint="fp", modality="vision", progress=False)


def test_a_feature_shard_with_the_wrong_shape_is_named(tmp_path):
    shard = tmp_path / "shard-0.safetensors"
    vision_shard(shard)
    from safetensors import safe_open
    with safe_open(str(shard), framework="pt") as f:
        meta = f.metadata()
    save_file({"global": torch.zeros(4, 8, dtype=torch.float16),
               "tokens": torch.zeros(4, 6, 5, dtype=torch.float16)}, str(shard), metadata=meta)
    with pytest.raises(ValueError, match="shard-0.safetensors has global .* tokens .* do not fit"):
        gather_index([shard], tmp_path / "index.parquet")


# Fuzz: random corruptions ---------------------------------------------------------------------

ALLOWED = (BadExampleError, ManifestError, ValueError, FileNotFoundError)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random corruption of a file's bytes: truncate, flip bytes, zero a run, or append."""
    kind = rng.choice(["truncate", "flip", "zero", "append"])
    if kind == "truncate" or not data:
        return data[: rng.randrange(len(data) + 1)]
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == "zero":
        start = rng.randrange(len(out))
        out[start : start + rng.randint(1, 64)] = bytes(min(64, len(out) - start))
    else:
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(out)


def mutate_manifest(root: Path, rng: random.Random) -> None:
    """A random semantic corruption of one manifest: a null, an empty text, a dropped column."""
    split, table = rng.choice(SPLITS), rng.choice(["images", "captions", "vqa", "ve", "vcr"])
    df = rows(root, split, table)
    column = rng.choice(df.columns)
    action = rng.choice(["null", "empty", "drop"])
    if action == "drop":
        df = df.drop(column)
    else:
        values = df[column].to_list()
        row = rng.randrange(len(values))
        values[row] = None if action == "null" else ([] if isinstance(values[row], list) else
                                                     "" if isinstance(values[row], str) else None)
        df = df.with_columns(pl.Series(column, values, dtype=df[column].dtype))
    rewrite(root, split, table, df)


@pytest.mark.parametrize("seed", range(24))
def test_fuzzed_datasets_fail_cleanly_or_are_skipped(clean_dataset, tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path / "ds"
    shutil.copytree(clean_dataset, root)
    files = {suffix: sorted(root.rglob(f"*{suffix}")) for suffix in (".png", ".parquet")}
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["image bytes", "image bytes", "manifest bytes", "manifest cells"])
        if kind == "manifest cells":
            mutate_manifest(root, rng)
        else:
            path = rng.choice(files[".png" if kind == "image bytes" else ".parquet"])
            path.write_bytes(mutate(path.read_bytes(), rng))
    for skip in (False, True):
        try:
            report = validate_dataset(root, skip_bad_examples=skip)
        except ALLOWED as exc:  # a failure must say which file
            assert str(root) in str(exc), exc
            continue
        if skip:  # whatever was kept is clean
            assert validate_dataset(root, skip_bad_examples=False)["checked"] == {
                split: {t: n - report["skipped"][split][t] for t, n in tables.items()}
                for split, tables in report["checked"].items()}


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_feature_shards_fail_naming_the_shard(tmp_path, seed):
    rng = random.Random(seed)
    shard = tmp_path / "shard-0.safetensors"
    vision_shard(shard)
    shard.write_bytes(mutate(shard.read_bytes(), rng))
    try:
        gather_index([shard], tmp_path / "index.parquet")
        store = FeatureStore(tmp_path / "index.parquet")
        store.get(store.keys)
    except ALLOWED as exc:
        assert "shard-0.safetensors" in str(exc), exc
