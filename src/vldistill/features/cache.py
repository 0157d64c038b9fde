"""Write teacher features to sharded, resumable fp16 safetensors files and index them.

One shard = one safetensors file, rows in key order, plus string metadata (keys in row order,
modality, fingerprint, n, dim, n_tokens, grid for vision, timings):

- vision: ``global`` [N, D] and ``tokens`` [N, T, D] (float16), T = grid_h * grid_w.
- text: ``global`` [N, D] (float16), ``tokens`` [R, D] (float16) and ``offsets`` [N + 1]
  (int64). Token states are packed: only each text's real tokens (where the encoder's mask is
  True) are kept, concatenated in key order, so text i owns rows ``offsets[i]:offsets[i + 1]``
  and R = offsets[N] is the total number of real tokens. Masks must be prefixes (real tokens
  first, then padding), so the padded [N, L, D] tokens and [N, L] mask are recovered from the
  offsets alone; metadata ``n_tokens`` is the padded length L (the teacher's max_length).

While a shard is being encoded, finished chunks of ``chunk_size`` items (same layout as a
shard) are kept in ``<out>.partial/`` so a killed job resumes where it stopped; the final file
appears under its name only once complete (temporary name, then os.replace).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from vldistill.io import atomic_output, canonicalise_safetensors, write_json
from vldistill.teachers.base import ImageFeatures, TextFeatures

MODALITIES: tuple[str, ...] = ("vision", "text")
# What a reader (FeatureStore.get) can ask for; text tokens and mask come back padded.
FIELDS: dict[str, tuple[str, ...]] = {
    "vision": ("global", "tokens"),
    "text": ("global", "tokens", "mask"),
}
# The tensors a shard or chunk file holds, in file order.
SHARD_TENSORS: dict[str, tuple[str, ...]] = {
    "vision": ("global", "tokens"),
    "text": ("global", "tokens", "offsets"),
}
_UNITS = {"vision": "img", "text": "txt"}
_DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "BOOL": 1, "U8": 1, "I64": 8}
_PROGRESS_INTERVAL_S = 10.0  # one progress line every few seconds keeps job logs short


def shard_slice(n_items: int, shard: int, n_shards: int) -> slice:
    """Contiguous slice of shard ``shard`` out of ``n_shards`` (numpy.array_split sizes)."""
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}), got {shard}")
    size, extra = divmod(n_items, n_shards)
    start = shard * size + min(shard, extra)
    return slice(start, start + size + (1 if shard < extra else 0))


def _to_tensors(feats: ImageFeatures | TextFeatures, modality: str, keys: list[str]) -> dict:
    """fp16 tensors of one batch; for text, packed ``tokens`` [R, D] and ``lengths`` [B]."""
    expected = ImageFeatures if modality == "vision" else TextFeatures
    if not isinstance(feats, expected):
        raise TypeError(
            f"{modality} encoder returned {type(feats).__name__}, expected {expected.__name__}"
        )
    n = len(keys)
    out = {
        "global": feats.global_emb.detach().cpu().to(torch.float16).contiguous(),
        "tokens": feats.tokens.detach().cpu().to(torch.float16).contiguous(),
    }
    if modality == "text":
        out["mask"] = feats.mask.detach().cpu().to(torch.bool).contiguous()
    for name, tensor in out.items():
        if tensor.shape[0] != n:
            raise ValueError(f"encoder returned {tensor.shape[0]} rows of {name!r} for {n} items")
    if out["tokens"].ndim != 3 or out["tokens"].shape[2] != out["global"].shape[1]:
        raise ValueError(
            f"encoder returned tokens {tuple(out['tokens'].shape)} that do not "
            f"match global {tuple(out['global'].shape)}"
        )
    if modality == "text":
        mask = out.pop("mask")
        if mask.shape != out["tokens"].shape[:2]:
            raise ValueError(
                f"encoder returned mask {tuple(mask.shape)} that does not match tokens "
                f"{tuple(out['tokens'].shape)}"
            )
        lengths = mask.sum(dim=1)
        # Only a prefix mask can be rebuilt from a length, which is all the packed file keeps.
        prefix = torch.arange(mask.shape[1]) < lengths.unsqueeze(1)
        bad = torch.nonzero((mask != prefix).any(dim=1)).flatten().tolist()
        if bad:
            row = bad[0]
            raise ValueError(
                f"text mask of {len(bad)} item(s) is not a prefix (real tokens first, then "
                f"padding), which the packed text cache requires; first: key {keys[row]!r} "
                f"with mask {mask[row].int().tolist()}"
            )
        out["tokens"] = out["tokens"][mask]  # real tokens only, row-major: key order
        out["lengths"] = lengths.to(torch.int64)
    return out


def _chunk_path(partial: Path, index: int) -> Path:
    return partial / f"chunk-{index:06d}.safetensors"


def _reusable_chunk(path: Path, fingerprint: str, modality: str, keys: list[str]) -> dict | None:
    """Metadata of a finished chunk that matches this run, else None (and the file is removed)."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
    except Exception:  # an unreadable chunk is simply encoded again
        meta, names = {}, set()
    if (
        meta.get("fingerprint") == fingerprint
        and meta.get("modality") == modality
        and meta.get("keys") == json.dumps(keys)
        # A chunk in another layout (e.g. padded text from an older version) is re-encoded.
        and names == set(SHARD_TENSORS[modality])
        and (modality != "text" or "n_tokens" in meta)
    ):
        return meta
    path.unlink()
    return None


def _encode_chunk(
    keys: list[str],
    load_batch: Callable[[list[str]], list],
    encode: Callable,
    modality: str,
    batch_size: int,
    bar: tqdm,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    parts: dict[str, list[torch.Tensor]] = {}
    encode_s = load_s = 0.0
    grid = None
    n_tokens = None
    for start in range(0, len(keys), batch_size):
        batch_keys = keys[start : start + batch_size]
        t0 = time.perf_counter()
        items = load_batch(batch_keys)
        t1 = time.perf_counter()
        feats = encode(items)
        t2 = time.perf_counter()
        if len(items) != len(batch_keys):
            raise ValueError(f"load_batch returned {len(items)} items for {len(batch_keys)} keys")
        load_s += t1 - t0
        encode_s += t2 - t1
        for name, tensor in _to_tensors(feats, modality, batch_keys).items():
            parts.setdefault(name, []).append(tensor)
        if modality == "vision":
            grid = list(feats.grid)
        else:
            # Packed rows lose the padded width, so it must be one value per chunk.
            width = int(feats.tokens.shape[1])
            if n_tokens is not None and width != n_tokens:
                raise ValueError(
                    f"text encoder padded one batch to {n_tokens} tokens and another to {width}"
                )
            n_tokens = width
        bar.update(len(batch_keys))
    tensors = {name: torch.cat(chunks) for name, chunks in parts.items()}
    meta = {"encode_seconds": f"{encode_s:.6f}", "load_seconds": f"{load_s:.6f}"}
    if grid is not None:
        meta["grid"] = json.dumps(grid)
    if modality == "text":
        lengths = tensors.pop("lengths")
        tensors["offsets"] = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, dim=0)])
        meta["n_tokens"] = str(n_tokens)
    return tensors, meta


def _check_offsets(offsets: torch.Tensor, n: int, n_rows: int, where: str) -> None:
    """Offsets of ``n`` texts over ``n_rows`` packed token rows: 0, non-decreasing, n_rows."""
    if (
        offsets.dtype != torch.int64
        or offsets.shape != (n + 1,)
        or int(offsets[0]) != 0
        or int(offsets[-1]) != n_rows
        or bool((offsets.diff() < 0).any())
    ):
        raise ValueError(
            f"{where} has offsets {offsets.dtype} {tuple(offsets.shape)} that are not 0, "
            f"non-decreasing, up to its {n_rows} token rows, one more than its {n} items"
        )


def _write_concatenated(
    chunks: list[Path], names: tuple[str, ...], metadata: dict[str, str], out: Path
) -> None:
    """Write the row-wise concatenation of the chunks' tensors as one safetensors file.

    Streams chunk by chunk, so memory stays at one chunk's tensors whatever the shard size; the
    layout (8-byte header length, JSON header padded to 8 bytes, raw row-major data) is the
    safetensors format, which safe_open reads like any other file. ``offsets`` (packed text) is
    concatenated as one index: each chunk after the first drops its leading 0 and is shifted by
    the number of token rows before it.
    """
    shapes: dict[str, list[list[int]]] = {name: [] for name in names}
    dtypes: dict[str, set[str]] = {name: set() for name in names}
    for path in chunks:
        with safe_open(str(path), framework="pt") as f:
            for name in names:
                piece = f.get_slice(name)
                shapes[name].append(piece.get_shape())
                dtypes[name].add(piece.get_dtype())
            if "offsets" in names:  # small (items + 1 integers); checked before any byte is out
                _check_offsets(
                    f.get_tensor("offsets"),
                    f.get_slice("global").get_shape()[0],
                    f.get_slice("tokens").get_shape()[0],
                    f"chunk {path.name} of {out.name}",
                )
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in names:
        if len({tuple(s[1:]) for s in shapes[name]}) > 1 or len(dtypes[name]) > 1:
            raise ValueError(
                f"chunks of {out.name} disagree on {name!r}: shapes {shapes[name]}, "
                f"dtypes {sorted(dtypes[name])}"
            )
        rows = sum(s[0] for s in shapes[name])
        if name == "offsets":
            rows -= len(chunks) - 1  # one shared boundary between neighbouring chunks
        shape = [rows, *shapes[name][0][1:]]
        dtype = dtypes[name].pop()
        size = _DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(out, "wb") as dst:
        dst.write(struct.pack("<Q", len(blob)))
        dst.write(blob)
        for name in names:
            shift = 0
            for index, path in enumerate(chunks):
                with safe_open(str(path), framework="pt") as f:
                    tensor = f.get_tensor(name).contiguous()
                if name == "offsets":
                    rows_before = shift
                    shift += int(tensor[-1])
                    tensor = (tensor if index == 0 else tensor[1:]) + rows_before
                dst.write(tensor.view(torch.uint8).numpy().tobytes())


def _empty_tensors(modality: str) -> dict[str, torch.Tensor]:
    # An empty shard (more shards than items) still gets a valid file so the gather step runs.
    out = {"global": torch.zeros(0, 0, dtype=torch.float16)}
    if modality == "text":
        out["tokens"] = torch.zeros(0, 0, dtype=torch.float16)
        out["offsets"] = torch.zeros(1, dtype=torch.int64)
    else:
        out["tokens"] = torch.zeros(0, 0, 0, dtype=torch.float16)
    return out


def cache_shard(
    keys: list[str],
    load_batch: Callable[[list[str]], list],
    encode: Callable[[list], ImageFeatures | TextFeatures],
    out_path: Path,
    *,
    batch_size: int,
    chunk_size: int,
    fingerprint: str,
    modality: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode ``keys`` (load_batch turns keys into inputs, encode turns inputs into features).

    Resumes from the chunks of an earlier, interrupted run that carry the same fingerprint and
    keys. Returns n, n_reused, n_encoded, encode_seconds and load_seconds (summed over all
    chunks, reused ones included, from their recorded times), items_per_second (n over
    encode_seconds), wall_seconds and peak_rss_mb of this process.
    """
    keys = _checked_keys(keys, modality, batch_size, chunk_size, Path(out_path).name)
    wall_start = time.perf_counter()
    out_path = Path(out_path)
    n_chunks = -(-len(keys) // chunk_size)
    partial = _partial_dir(out_path, n_chunks)

    n_reused = 0
    chunk_paths: list[Path] = []
    metas: list[dict[str, str]] = []
    bar = tqdm(
        total=len(keys),
        unit=_UNITS[modality],
        desc=out_path.name,
        file=sys.stderr,
        mininterval=_PROGRESS_INTERVAL_S,
        disable=not progress,
    )
    with bar:
        for index in range(n_chunks):
            chunk_keys = keys[index * chunk_size : (index + 1) * chunk_size]
            path = _chunk_path(partial, index)
            meta = _reusable_chunk(path, fingerprint, modality, chunk_keys)
            if meta is not None:
                n_reused += len(chunk_keys)
                bar.update(len(chunk_keys))
            else:
                meta = _write_chunk(path, chunk_keys, load_batch, encode, modality, fingerprint,
                                    batch_size, bar)
            metas.append(meta)
            chunk_paths.append(path)

    _write_shard(out_path, chunk_paths, metas, keys, modality, fingerprint)
    shutil.rmtree(partial)
    encode_s = sum(float(meta["encode_seconds"]) for meta in metas)
    return {
        "path": str(out_path),
        "n": len(keys),
        "n_reused": n_reused,
        "n_encoded": len(keys) - n_reused,
        "encode_seconds": encode_s,
        "load_seconds": sum(float(meta["load_seconds"]) for meta in metas),
        "items_per_second": len(keys) / encode_s if encode_s > 0 else 0.0,
        "wall_seconds": time.perf_counter() - wall_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _checked_keys(keys: list[str], modality: str, batch_size: int, chunk_size: int,
                  shard_name: str) -> list[str]:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    keys = list(keys)
    if len(set(keys)) != len(keys):
        dupes = sorted(k for k, count in Counter(keys).items() if count > 1)
        raise ValueError(f"duplicate keys for shard {shard_name}: {dupes[:5]}")
    return keys


def _partial_dir(out_path: Path, n_chunks: int) -> Path:
    """The folder of ``out_path``'s chunks, holding only files this chunking can reuse."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # A stale complete file must not pass for this run's output if this run dies.
    out_path.unlink(missing_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    partial.mkdir(exist_ok=True)
    wanted = {_chunk_path(partial, i).name for i in range(n_chunks)}
    for leftover in partial.iterdir():  # temp files of a killed write, other chunkings
        if leftover.name not in wanted:
            leftover.unlink()
    return partial


def _write_chunk(path: Path, chunk_keys: list[str], load_batch: Callable[[list[str]], list],
                 encode: Callable[[list], ImageFeatures | TextFeatures], modality: str,
                 fingerprint: str, batch_size: int, bar: tqdm) -> dict[str, str]:
    """Encode one chunk and write it atomically; returns its metadata."""
    tensors, timing = _encode_chunk(chunk_keys, load_batch, encode, modality, batch_size, bar)
    meta = {
        "fingerprint": fingerprint,
        "modality": modality,
        "keys": json.dumps(chunk_keys),
        **timing,
    }
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        canonicalise_safetensors(tmp)
    return meta  # the tensors die here: at most one chunk's features are ever in memory


def _write_shard(out_path: Path, chunk_paths: list[Path], metas: list[dict[str, str]],
                 keys: list[str], modality: str, fingerprint: str) -> None:
    """The chunks concatenated into the shard, whose metadata says what they agree on."""
    grids = {meta["grid"] for meta in metas if "grid" in meta}
    widths = {meta["n_tokens"] for meta in metas if "n_tokens" in meta}
    if len(grids) > 1:
        raise ValueError(f"chunks of {out_path.name} disagree on the token grid: {sorted(grids)}")
    if len(widths) > 1:
        raise ValueError(
            f"chunks of {out_path.name} disagree on the padded text length: {sorted(widths)}"
        )
    # No timings in the shard itself: the same inputs must give the same bytes (DVC hashes them).
    metadata = {
        "keys": json.dumps(keys),
        "modality": modality,
        "fingerprint": fingerprint,
        "n": str(len(keys)),
    }
    if modality == "vision":
        metadata["grid"] = grids.pop() if grids else "null"
    with atomic_output(out_path) as tmp:
        if chunk_paths:
            with safe_open(str(chunk_paths[0]), framework="pt") as f:
                tokens_shape = f.get_slice("tokens").get_shape()
            metadata["dim"] = str(tokens_shape[-1])
            # Packed text rows do not show the padded width: it comes from the chunks' metadata.
            metadata["n_tokens"] = widths.pop() if modality == "text" else str(tokens_shape[1])
            _write_concatenated(chunk_paths, SHARD_TENSORS[modality], metadata, tmp)
        else:
            metadata["dim"] = metadata["n_tokens"] = "0"
            save_file(_empty_tensors(modality), str(tmp), metadata=metadata)
            canonicalise_safetensors(tmp)


def _shard_header(path: Path) -> dict[str, Any]:
    """A shard's metadata and tensor shapes, read from the header only."""
    if not path.is_file():
        raise FileNotFoundError(f"feature shard {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = f.keys()  # a safe_open handle is not iterable itself
            shapes = {name: f.get_slice(name).get_shape() for name in names}
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
    except Exception as exc:
        raise ValueError(
            f"feature shard {path.name} is not a readable safetensors file: {exc}"
        ) from exc
    missing = [k for k in ("keys", "modality", "fingerprint", "dim", "n") if k not in meta]
    if missing:
        raise ValueError(f"feature shard {path.name} lacks metadata {missing}")
    modality = meta["modality"]
    if modality not in MODALITIES:
        raise ValueError(f"feature shard {path.name} has unknown modality {modality!r}")
    expected = set(SHARD_TENSORS[modality])
    if set(shapes) != expected:
        raise ValueError(
            f"feature shard {path.name} holds tensors {sorted(shapes)}, a {modality} shard "
            f"holds {sorted(expected)} (written by another version?); re-run the shard"
        )
    keys = json.loads(meta["keys"])
    n = len(keys)
    if not n == int(meta["n"]) == shapes["global"][0]:
        raise ValueError(
            f"feature shard {path.name} has {n} keys, n={meta['n']} and "
            f"{shapes['global'][0]} rows"
        )
    dim = int(meta["dim"])
    tokens = shapes["tokens"]
    if modality == "text":
        if "n_tokens" not in meta:
            raise ValueError(f"feature shard {path.name} lacks metadata ['n_tokens']")
        n_tokens = int(meta["n_tokens"])
        # Packed: one token row per real token, so the row count is not N; offsets has N + 1.
        if shapes["offsets"] != [n + 1] or dtypes["offsets"] != "I64":
            raise ValueError(
                f"feature shard {path.name} has offsets {dtypes['offsets']} "
                f"{shapes['offsets']}, expected I64 [{n + 1}] for {n} items"
            )
        tokens_ok = len(tokens) == 2 and tokens[0] <= n * n_tokens
    else:
        n_tokens = tokens[1] if len(tokens) == 3 else -1
        tokens_ok = len(tokens) == 3 and tokens[0] == n
    if n > 0 and (not tokens_ok or tokens[-1] != dim or shapes["global"][1] != dim):
        raise ValueError(
            f"feature shard {path.name} has global {shapes['global']} and tokens {tokens} "
            f"that do not fit {n} {modality} items of dim {dim} and n_tokens {n_tokens}"
        )
    grid = json.loads(meta["grid"]) if "grid" in meta else None
    return {
        "path": path,
        "meta": meta,
        "keys": keys,
        "n": n,
        "dim": dim,
        "n_tokens": n_tokens,
        "grid": grid,
    }


def gather_index(shard_paths: Sequence[Path], index_path: Path) -> dict[str, Any]:
    """Check the shards agree and write index_path (parquet: key, shard, row) + a JSON summary.

    Reads headers only. ``shard`` is the shard file's path relative to the index's folder.
    """
    if not shard_paths:
        raise ValueError("gather_index needs at least one shard")
    index_path = Path(index_path)
    shards = [_shard_header(Path(p)) for p in shard_paths]
    first = shards[0]
    filled = [s for s in shards if s["n"] > 0]
    ref = filled[0] if filled else first
    for shard in shards:
        name = shard["path"].name
        for key in ("modality", "fingerprint"):
            if shard["meta"][key] != first["meta"][key]:
                raise ValueError(
                    f"feature shard {name} has {key} {shard['meta'][key]!r} but "
                    f"{first['path'].name} has {first['meta'][key]!r}; re-run the stale shard"
                )
        if shard["n"] == 0:
            continue
        for key in ("dim", "n_tokens", "grid"):
            if shard[key] != ref[key]:
                raise ValueError(
                    f"feature shard {name} has {key} {shard[key]} but "
                    f"{ref['path'].name} has {ref[key]}"
                )

    owner: dict[str, str] = {}
    for shard in shards:
        for key in shard["keys"]:
            if key in owner:
                raise ValueError(
                    f"duplicate key {key!r} in feature shard {shard['path'].name} "
                    f"(already in {owner[key]})"
                )
            owner[key] = shard["path"].name

    index_dir = index_path.parent
    index_dir.mkdir(parents=True, exist_ok=True)
    rel = [os.path.relpath(s["path"], index_dir) for s in shards]
    table = pl.DataFrame(
        {
            "key": [k for s in shards for k in s["keys"]],
            "shard": [r for s, r in zip(shards, rel, strict=True) for _ in range(s["n"])],
            "row": [i for s in shards for i in range(s["n"])],
        },
        schema={"key": pl.String, "shard": pl.String, "row": pl.Int64},
    )

    n = sum(s["n"] for s in shards)
    summary = {
        "modality": first["meta"]["modality"],
        "fingerprint": first["meta"]["fingerprint"],
        "dim": ref["dim"],
        "n_tokens": ref["n_tokens"],
        "grid": ref["grid"],
        "n": n,
        "shards": [{"file": r, "n": s["n"]} for s, r in zip(shards, rel, strict=True)],
    }
    with atomic_output(index_path) as tmp:
        table.write_parquet(tmp)
    write_json(summary, index_path.with_suffix(".json"))
    return summary
