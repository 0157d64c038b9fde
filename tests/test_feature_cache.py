"""Sharded, resumable feature cache: shard slicing, shard files, resume, gather, lookups."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vldistill.features import FeatureStore, cache_shard, gather_index, shard_slice
from vldistill.teachers import ImageFeatures, TextFeatures

DIM = 8
GRID = (2, 3)
TEXT_LEN = 5


class Crash(RuntimeError):
    """Stands in for a job killed in the middle of a shard."""


class FakeEncoder:
    """Deterministic per-key features; counts calls and can fail on a given call."""

    def __init__(self, modality: str = "vision", dim: int = DIM, fail_on_call: int | None = None):
        self.modality, self.dim, self.fail_on_call = modality, dim, fail_on_call
        self.calls = 0

    def features(self, key: str) -> dict[str, torch.Tensor]:
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        gen = torch.Generator().manual_seed(seed)
        n_tokens = GRID[0] * GRID[1] if self.modality == "vision" else TEXT_LEN
        tokens = torch.randn(n_tokens, self.dim, generator=gen)
        out = {"global": tokens.mean(0), "tokens": tokens}
        if self.modality == "text":
            out["mask"] = torch.arange(TEXT_LEN) <= seed % TEXT_LEN
        return out

    def __call__(self, items: list[str]) -> ImageFeatures | TextFeatures:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise Crash(f"killed on call {self.calls}")
        rows = [self.features(k) for k in items]
        glob = torch.stack([r["global"] for r in rows])
        tokens = torch.stack([r["tokens"] for r in rows])
        if self.modality == "vision":
            return ImageFeatures(glob, tokens, GRID)
        return TextFeatures(glob, tokens, torch.stack([r["mask"] for r in rows]))


def load_keys(keys: list[str]) -> list[str]:
    return list(keys)


def make_keys(n: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def fake_clock():
    # Every reading one second later: timings, and so the files, are identical across runs.
    counter = itertools.count()
    return lambda: float(next(counter))


def run(keys, out, encoder, *, batch_size=4, chunk_size=8, fingerprint="fp1", clock=None):
    return cache_shard(
        keys,
        load_keys,
        encoder,
        out,
        batch_size=batch_size,
        chunk_size=chunk_size,
        fingerprint=fingerprint,
        modality=encoder.modality,
        progress=False,
        clock=clock or fake_clock(),
    )


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


# shard_slice ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_items", [0, 1, 5, 17, 64])
@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_shard_slice_covers_every_item_once_with_array_split_sizes(n_items, n_shards):
    slices = [shard_slice(n_items, s, n_shards) for s in range(n_shards)]
    covered = [i for sl in slices for i in range(n_items)[sl]]
    assert covered == list(range(n_items))
    sizes = [len(part) for part in np.array_split(np.arange(n_items), n_shards)]
    assert [sl.stop - sl.start for sl in slices] == sizes


@pytest.mark.parametrize("args", [(-1, 0, 1), (5, 0, 0), (5, 2, 2), (5, -1, 2)])
def test_shard_slice_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        shard_slice(*args)


# one shard -----------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_shard_round_trips_through_feature_store(tmp_path, modality):
    keys = make_keys(23)
    enc = FakeEncoder(modality)
    out = tmp_path / "shard-000-of-001.safetensors"
    stats = run(keys, out, enc, batch_size=4, chunk_size=10)
    assert stats["n"] == 23 and stats["n_reused"] == 0 and stats["n_encoded"] == 23
    assert enc.calls == 7  # chunks of 10, 10, 3 in batches of 4: 3 + 3 + 1
    assert not partial_dir(out).exists()
    assert stats["peak_rss_mb"] > 0 and stats["items_per_second"] > 0

    # The streamed file is a valid safetensors file for the reference reader too.
    tensors = load_file(str(out))
    assert tensors["global"].dtype == torch.float16
    assert tensors["tokens"].shape == (23, enc.features("x")["tokens"].shape[0], DIM)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["keys"]) == keys
    assert meta["modality"] == modality and meta["fingerprint"] == "fp1"
    assert meta["dim"] == str(DIM) and meta["n"] == "23"
    assert ("grid" in meta) == (modality == "vision")
    if modality == "vision":
        assert json.loads(meta["grid"]) == list(GRID)
    for row, key in enumerate(keys):
        expected = enc.features(key)
        assert torch.equal(tensors["global"][row], expected["global"].half())
        if modality == "text":
            assert torch.equal(tensors["mask"][row], expected["mask"])

    index = tmp_path / "index.parquet"
    summary = gather_index([out], index)
    assert summary["n"] == 23 and summary["dim"] == DIM
    store = FeatureStore(index)
    assert len(store) == 23 and store.keys == keys and "k0005" in store and "nope" not in store
    assert store.modality == modality and store.dim == DIM
    wanted = ["k0022", "k0003", "k0004", "k0003", "k0015", "k0000"]  # unsorted, a repeat
    fields = ("global", "tokens", "mask") if modality == "text" else ("global", "tokens")
    got = store.get(wanted, fields=fields)
    for name in fields:
        expected = torch.stack([enc.features(k)[name] for k in wanted])
        if name != "mask":
            expected = expected.half()
        assert torch.equal(got[name], expected), name
    as_float = store.get(wanted[:2], dtype=torch.float32)
    assert as_float["tokens"].dtype == torch.float32


def test_store_names_missing_keys_and_bad_fields(tmp_path):
    out = tmp_path / "s.safetensors"
    run(make_keys(5), out, FakeEncoder())
    gather_index([out], tmp_path / "index.parquet")
    store = FeatureStore(tmp_path / "index.parquet")
    with pytest.raises(KeyError, match="missing-key"):
        store.get(["k0001", "missing-key"])
    with pytest.raises(ValueError, match="mask"):
        store.get(["k0001"], fields=("mask",))  # vision caches have no mask
    assert store.get([])["tokens"].shape == (0, GRID[0] * GRID[1], DIM)


# resume --------------------------------------------------------------------------------------


def test_killed_shard_resumes_from_finished_chunks_and_matches_uninterrupted_run(tmp_path):
    keys = make_keys(30)  # chunks of 8: 8, 8, 8, 6 -> batches of 4: 2, 2, 2, 2
    clean = tmp_path / "clean" / "shard.safetensors"
    run(keys, clean, FakeEncoder())

    out = tmp_path / "resumed" / "shard.safetensors"
    crashing = FakeEncoder(fail_on_call=6)  # chunks 0 and 1 done, killed inside chunk 2
    with pytest.raises(Crash):
        run(keys, out, crashing)
    assert not out.exists()
    assert not out.with_name(out.name + ".tmp").exists()
    finished = sorted(p.name for p in partial_dir(out).iterdir())
    assert finished == ["chunk-000000.safetensors", "chunk-000001.safetensors"]
    # A write killed half-way leaves a temporary file; it must be ignored.
    (partial_dir(out) / "chunk-000002.safetensors.tmp").write_bytes(b"half a chunk")

    again = FakeEncoder()
    stats = run(keys, out, again)
    assert stats["n_reused"] == 16 and stats["n_encoded"] == 14
    assert again.calls == 4  # only chunks 2 and 3
    assert out.read_bytes() == clean.read_bytes()
    assert not partial_dir(out).exists()


def test_chunks_with_a_stale_fingerprint_or_other_keys_are_not_reused(tmp_path):
    keys = make_keys(20)
    out = tmp_path / "shard.safetensors"
    with pytest.raises(Crash):
        run(keys, out, FakeEncoder(fail_on_call=5), fingerprint="old")
    assert len(list(partial_dir(out).iterdir())) == 2

    fresh = FakeEncoder()
    stats = run(keys, out, fresh, fingerprint="new")
    assert stats["n_reused"] == 0 and fresh.calls == 5
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["fingerprint"] == "new"

    # Same fingerprint but a different key list: the first chunk's keys differ, the second's
    # are unchanged and reused.
    with pytest.raises(Crash):
        run(keys, out, FakeEncoder(fail_on_call=5))
    changed = ["other", *keys[1:]]
    enc = FakeEncoder()
    stats = run(changed, out, enc)
    assert stats["n_reused"] == 8 and enc.calls == 3
    store_path = tmp_path / "index.parquet"
    gather_index([out], store_path)
    got = FeatureStore(store_path).get(["other"])["global"][0]
    assert torch.equal(got, enc.features("other")["global"].half())


def test_rerun_replaces_a_stale_final_file_before_encoding(tmp_path):
    out = tmp_path / "shard.safetensors"
    run(make_keys(6), out, FakeEncoder(), fingerprint="old")
    with pytest.raises(Crash):
        run(make_keys(6), out, FakeEncoder(fail_on_call=1), fingerprint="new")
    assert not out.exists()


# gather --------------------------------------------------------------------------------------


def test_gather_index_over_shards_and_lookup_across_them(tmp_path):
    keys = make_keys(11)
    enc = FakeEncoder("text")
    paths = []
    for shard in range(3):
        path = tmp_path / "cache" / f"shard-{shard:03d}-of-003.safetensors"
        run(keys[shard_slice(len(keys), shard, 3)], path, enc)
        paths.append(path)
    index = tmp_path / "cache" / "index.parquet"
    summary = gather_index(paths, index)
    table = pl.read_parquet(index)
    assert table.columns == ["key", "shard", "row"]
    assert table["key"].to_list() == keys
    assert table["shard"].unique().sort().to_list() == [p.name for p in paths]
    assert table.filter(pl.col("key") == "k0004")["row"].item() == 0  # first row of shard 1
    sidecar = json.loads(index.with_suffix(".json").read_text())
    assert sidecar == summary
    assert sidecar["modality"] == "text" and sidecar["n"] == 11 and sidecar["grid"] is None
    assert [s["n"] for s in sidecar["shards"]] == [4, 4, 3]
    assert sidecar["items_per_second"] > 0
    got = FeatureStore(index).get(["k0010", "k0000", "k0005"], fields=("mask",))
    expected = torch.stack([enc.features(k)["mask"] for k in ("k0010", "k0000", "k0005")])
    assert torch.equal(got["mask"], expected)


def test_empty_shard_is_written_and_gathered(tmp_path):
    keys = make_keys(2)
    paths = []
    for shard in range(3):
        path = tmp_path / f"shard-{shard}.safetensors"
        run(keys[shard_slice(len(keys), shard, 3)], path, FakeEncoder())
        paths.append(path)
    summary = gather_index(paths, tmp_path / "index.parquet")
    assert summary["n"] == 2 and summary["dim"] == DIM and summary["grid"] == list(GRID)


def test_gather_rejects_mismatched_dims_naming_the_shard(tmp_path):
    a, b = tmp_path / "shard-a.safetensors", tmp_path / "shard-b.safetensors"
    run(make_keys(4, "a"), a, FakeEncoder(dim=DIM))
    run(make_keys(4, "b"), b, FakeEncoder(dim=DIM + 1))
    with pytest.raises(ValueError, match="shard-b.safetensors.*dim"):
        gather_index([a, b], tmp_path / "index.parquet")
    assert not (tmp_path / "index.parquet").exists()


def test_gather_rejects_mismatched_fingerprints_naming_the_shard(tmp_path):
    a, b = tmp_path / "shard-a.safetensors", tmp_path / "shard-b.safetensors"
    run(make_keys(4, "a"), a, FakeEncoder(), fingerprint="one")
    run(make_keys(4, "b"), b, FakeEncoder(), fingerprint="two")
    with pytest.raises(ValueError, match="shard-b.safetensors.*fingerprint"):
        gather_index([a, b], tmp_path / "index.parquet")


def test_gather_rejects_duplicate_keys_naming_the_shard(tmp_path):
    a, b = tmp_path / "shard-a.safetensors", tmp_path / "shard-b.safetensors"
    run(make_keys(4), a, FakeEncoder())
    run(make_keys(6)[3:], b, FakeEncoder())
    with pytest.raises(ValueError, match="k0003.*shard-b.safetensors"):
        gather_index([a, b], tmp_path / "index.parquet")


def test_cache_shard_rejects_duplicate_keys(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        run(["a", "b", "a"], tmp_path / "s.safetensors", FakeEncoder())


def test_store_pickles_after_use(tmp_path):
    import pickle

    out = tmp_path / "s.safetensors"
    run(make_keys(5), out, FakeEncoder())
    gather_index([out], tmp_path / "index.parquet")
    store = FeatureStore(tmp_path / "index.parquet")
    before = store.get(["k0002"])["global"]
    copy = pickle.loads(pickle.dumps(store))
    assert torch.equal(copy.get(["k0002"])["global"], before)
