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
from safetensors.torch import load_file, save_file

from vldistill.features import FeatureStore, cache_shard, gather_index, shard_slice
from vldistill.teachers import ImageFeatures, TextFeatures

DIM = 8
GRID = (2, 3)
TEXT_LEN = 5


class Crash(RuntimeError):
    """Stands in for a job killed in the middle of a shard."""


class FakeEncoder:
    """Deterministic per-key features; counts calls and can fail on a given call.

    Text items have ``min_len``..``text_len`` real tokens (a prefix mask) and, like open_clip,
    non-zero states at the padding positions too.
    """

    def __init__(
        self,
        modality: str = "vision",
        dim: int = DIM,
        fail_on_call: int | None = None,
        *,
        text_len: int = TEXT_LEN,
        min_len: int = 1,
    ):
        self.modality, self.dim, self.fail_on_call = modality, dim, fail_on_call
        self.text_len, self.min_len = text_len, min_len
        self.calls = 0

    def length(self, key: str) -> int:
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        return self.min_len + seed % (self.text_len - self.min_len + 1)

    def mask(self, key: str) -> torch.Tensor:
        return torch.arange(self.text_len) < self.length(key)

    def features(self, key: str) -> dict[str, torch.Tensor]:
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        gen = torch.Generator().manual_seed(seed)
        n_tokens = GRID[0] * GRID[1] if self.modality == "vision" else self.text_len
        tokens = torch.randn(n_tokens, self.dim, generator=gen)
        out = {"global": tokens.mean(0), "tokens": tokens}
        if self.modality == "text":
            out["mask"] = self.mask(key)
        return out

    def expected(self, key: str) -> dict[str, torch.Tensor]:
        """What the store returns: fp16 values, text tokens zero at padding positions."""
        feats = self.features(key)
        out = {"global": feats["global"].half(), "tokens": feats["tokens"].half()}
        if self.modality == "text":
            out["mask"] = feats["mask"]
            out["tokens"] = out["tokens"] * feats["mask"].unsqueeze(1)
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


class HolesEncoder(FakeEncoder):
    """A text encoder whose mask for one key has a hole: not a prefix."""

    def mask(self, key: str) -> torch.Tensor:
        mask = super().mask(key)
        if key == "k0006":
            mask = torch.tensor([True, False, True, False, False])
        return mask


def load_keys(keys: list[str]) -> list[str]:
    return list(keys)


def make_keys(n: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def run(keys, out, encoder, *, batch_size=4, chunk_size=8, fingerprint="fp1"):
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
    assert tensors["global"].dtype == torch.float16 and tensors["tokens"].dtype == torch.float16
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["keys"]) == keys
    assert meta["modality"] == modality and meta["fingerprint"] == "fp1"
    assert meta["dim"] == str(DIM) and meta["n"] == "23"
    assert ("grid" in meta) == (modality == "vision")
    for row, key in enumerate(keys):
        assert torch.equal(tensors["global"][row], enc.expected(key)["global"])
    if modality == "vision":
        assert set(tensors) == {"global", "tokens"}
        assert json.loads(meta["grid"]) == list(GRID)
        assert meta["n_tokens"] == str(GRID[0] * GRID[1])
        assert tensors["tokens"].shape == (23, GRID[0] * GRID[1], DIM)
    else:
        # Packed across the three chunks: real tokens only, offsets as one running index.
        assert set(tensors) == {"global", "tokens", "offsets"}
        assert meta["n_tokens"] == str(TEXT_LEN)
        lengths = [enc.length(k) for k in keys]
        assert tensors["offsets"].dtype == torch.int64
        assert tensors["offsets"].tolist() == [0, *itertools.accumulate(lengths)]
        real = [enc.features(k)["tokens"][: enc.length(k)].half() for k in keys]
        assert torch.equal(tensors["tokens"], torch.cat(real))

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
        expected = torch.stack([enc.expected(k)[name] for k in wanted])
        assert got[name].dtype == expected.dtype
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


def test_text_store_empty_lookup_and_unknown_fields(tmp_path):
    out = tmp_path / "s.safetensors"
    run(make_keys(5), out, FakeEncoder("text"))
    gather_index([out], tmp_path / "index.parquet")
    store = FeatureStore(tmp_path / "index.parquet")
    assert store.fields == ("global", "tokens", "mask") and store.n_tokens == TEXT_LEN
    with pytest.raises(ValueError, match="offsets"):
        store.get(["k0001"], fields=("offsets",))  # a storage detail, not a field
    with pytest.raises(KeyError, match="missing-key"):
        store.get(["missing-key"], fields=("mask",))
    empty = store.get([], fields=("global", "tokens", "mask"))
    assert empty["global"].shape == (0, DIM)
    assert empty["tokens"].shape == (0, TEXT_LEN, DIM)
    assert empty["mask"].shape == (0, TEXT_LEN) and empty["mask"].dtype == torch.bool


# packed text ---------------------------------------------------------------------------------


def test_packed_text_round_trips_varied_lengths_in_any_key_order(tmp_path):
    # Lengths 0..28 of 28, including texts with no real token and texts with no padding.
    enc = FakeEncoder("text", text_len=28, min_len=0)
    keys = make_keys(120)
    lengths = {enc.length(k) for k in keys}
    assert 0 in lengths and 28 in lengths
    out = tmp_path / "shard.safetensors"
    run(keys, out, enc, batch_size=7, chunk_size=25)  # batches and chunks of uneven sizes
    gather_index([out], tmp_path / "index.parquet")
    store = FeatureStore(tmp_path / "index.parquet")
    assert store.n_tokens == 28

    rng = np.random.default_rng(0)
    wanted = [keys[i] for i in rng.integers(0, len(keys), size=60)]  # repeats, gaps, runs
    wanted += keys[40:55]
    got = store.get(wanted, fields=("global", "tokens", "mask"), dtype=torch.float32)
    for name in ("global", "tokens", "mask"):
        expected = torch.stack([enc.expected(k)[name] for k in wanted])
        if name != "mask":
            expected = expected.float()
        assert torch.equal(got[name], expected), name
    assert got["mask"].dtype == torch.bool
    only_mask = store.get(keys[::-1], fields=("mask",))
    assert set(only_mask) == {"mask"}
    assert torch.equal(only_mask["mask"], torch.stack([enc.mask(k) for k in keys[::-1]]))


def test_non_prefix_text_mask_is_rejected_naming_the_key(tmp_path):
    out = tmp_path / "shard.safetensors"
    with pytest.raises(ValueError, match="not a prefix.*'k0006'"):
        run(make_keys(10), out, HolesEncoder("text"))
    assert not out.exists()


def test_packed_text_shard_is_smaller_than_the_padded_layout(tmp_path):
    n, text_len, dim = 300, 28, 64
    enc = FakeEncoder("text", dim=dim, text_len=text_len, min_len=8)
    out = tmp_path / "shard.safetensors"
    run(make_keys(n), out, enc, batch_size=32, chunk_size=128)
    padded = n * text_len * dim * 2 + n * text_len  # fp16 tokens + bool mask
    real = sum(enc.length(k) for k in make_keys(n))
    packed_data = n * dim * 2 + real * dim * 2 + (n + 1) * 8
    assert out.stat().st_size < n * dim * 2 + padded
    # Data plus a header (the keys) of well under 64 bytes an item.
    assert out.stat().st_size < packed_data + 64 * n


def test_text_chunk_in_the_padded_layout_is_encoded_again(tmp_path):
    keys = make_keys(12)
    clean = tmp_path / "clean.safetensors"
    run(keys, clean, FakeEncoder("text"))

    out = tmp_path / "shard.safetensors"
    partial_dir(out).mkdir()
    enc = FakeEncoder("text")
    feats = enc(keys[:8])
    old_chunk = {  # the layout of an earlier version: padded tokens plus a mask
        "global": feats.global_emb.half(),
        "tokens": feats.tokens.half(),
        "mask": feats.mask,
    }
    meta = {
        "fingerprint": "fp1",
        "modality": "text",
        "keys": json.dumps(keys[:8]),
        "encode_seconds": "1.0",
        "load_seconds": "1.0",
    }
    save_file(old_chunk, str(partial_dir(out) / "chunk-000000.safetensors"), metadata=meta)
    again = FakeEncoder("text")
    stats = run(keys, out, again)
    assert stats["n_reused"] == 0 and again.calls == 3
    assert out.read_bytes() == clean.read_bytes()


def test_gather_rejects_a_text_shard_in_the_padded_layout(tmp_path):
    keys = make_keys(4)
    feats = FakeEncoder("text")(keys)
    path = tmp_path / "old.safetensors"
    meta = {
        "keys": json.dumps(keys),
        "modality": "text",
        "fingerprint": "fp1",
        "n": "4",
        "dim": str(DIM),
        "n_tokens": str(TEXT_LEN),
    }
    tensors = {"global": feats.global_emb.half(), "tokens": feats.tokens.half(), "mask": feats.mask}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError, match="old.safetensors.*re-run"):
        gather_index([path], tmp_path / "index.parquet")


# resume --------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_killed_shard_resumes_from_finished_chunks_and_matches_uninterrupted_run(
    tmp_path, modality
):
    keys = make_keys(30)  # chunks of 8: 8, 8, 8, 6 -> batches of 4: 2, 2, 2, 2
    clean = tmp_path / "clean" / "shard.safetensors"
    run(keys, clean, FakeEncoder(modality))

    out = tmp_path / "resumed" / "shard.safetensors"
    crashing = FakeEncoder(modality, fail_on_call=6)  # chunks 0, 1 done, killed in chunk 2
    with pytest.raises(Crash):
        run(keys, out, crashing)
    assert not out.exists()
    assert not out.with_name(out.name + ".tmp").exists()
    finished = sorted(p.name for p in partial_dir(out).iterdir())
    assert finished == ["chunk-000000.safetensors", "chunk-000001.safetensors"]
    # A write killed half-way leaves a temporary file; it must be ignored.
    (partial_dir(out) / "chunk-000002.safetensors.tmp").write_bytes(b"half a chunk")

    again = FakeEncoder(modality)
    stats = run(keys, out, again)
    assert stats["n_reused"] == 16 and stats["n_encoded"] == 14
    assert again.calls == 4  # only chunks 2 and 3
    assert out.read_bytes() == clean.read_bytes()
    assert not partial_dir(out).exists()
    gather_index([out], tmp_path / "index.parquet")
    got = FeatureStore(tmp_path / "index.parquet").get(keys[::-1])["tokens"]
    assert torch.equal(got, torch.stack([again.expected(k)["tokens"] for k in keys[::-1]]))


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
    wanted = ["k0010", "k0000", "k0005", "k0003", "k0004"]  # across all three shards
    got = FeatureStore(index).get(wanted, fields=("mask", "tokens"))
    for name in ("mask", "tokens"):
        assert torch.equal(got[name], torch.stack([enc.expected(k)[name] for k in wanted]))


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_empty_shard_is_written_and_gathered(tmp_path, modality):
    keys = make_keys(2)
    enc = FakeEncoder(modality)
    paths = []
    for shard in range(3):
        path = tmp_path / f"shard-{shard}.safetensors"
        run(keys[shard_slice(len(keys), shard, 3)], path, enc)
        paths.append(path)
    assert load_file(str(paths[2]))["global"].shape[0] == 0
    summary = gather_index(paths, tmp_path / "index.parquet")
    assert summary["n"] == 2 and summary["dim"] == DIM
    if modality == "vision":
        assert summary["grid"] == list(GRID) and summary["n_tokens"] == GRID[0] * GRID[1]
    else:
        assert summary["grid"] is None and summary["n_tokens"] == TEXT_LEN
        assert load_file(str(paths[2]))["offsets"].tolist() == [0]
    got = FeatureStore(tmp_path / "index.parquet").get(keys[::-1])
    assert torch.equal(got["tokens"], torch.stack([enc.expected(k)["tokens"] for k in keys[::-1]]))


def test_gather_over_empty_text_shards_only(tmp_path):
    paths = [tmp_path / f"shard-{i}.safetensors" for i in range(2)]
    for path in paths:
        run([], path, FakeEncoder("text"))
    summary = gather_index(paths, tmp_path / "index.parquet")
    assert summary["n"] == 0
    assert FeatureStore(tmp_path / "index.parquet").get([], fields=("mask",))["mask"].shape[0] == 0


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
