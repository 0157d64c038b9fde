"""Read teacher features by key from a gathered cache (index parquet + JSON + shard files).

Vision shards hold ``tokens`` [N, T, D] and are sliced directly. Text shards hold
packed token rows (``tokens`` [R, D], text i at ``offsets[i]:offsets[i + 1]``, see
vldistill.features.cache); a lookup reads the offsets of the wanted rows, then their token
rows, and returns them zero-padded to ``n_tokens`` with the matching prefix ``mask``, the same
[B, L, D] / [B, L] tensors a padded file would give.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors import safe_open

from vldistill.features.cache import FIELDS


class FeatureStore:
    """Batched lookups of ``global``/``tokens`` (and ``mask`` for text) by key.

    Shards are opened lazily (memory-mapped by safetensors) and a lookup reads only the rows
    it needs, as contiguous runs via ``get_slice``. Values come back as stored (float16, mask
    bool) unless ``dtype`` is given; text tokens are zero at padding positions.
    """

    def __init__(self, index_path: str | Path) -> None:
        self.index_path = Path(index_path)
        summary_path = self.index_path.with_suffix(".json")
        for path in (self.index_path, summary_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"feature index file {path} does not exist; run the "
                    f"gather step (gather_index) first"
                )
        summary: dict[str, Any] = json.loads(summary_path.read_text())
        table = pl.read_parquet(self.index_path)
        self.modality: str = summary["modality"]
        self.fingerprint: str = summary["fingerprint"]
        self.dim: int = int(summary["dim"])
        self.n_tokens: int = int(summary["n_tokens"])
        self.grid: tuple[int, int] | None = tuple(summary["grid"]) if summary["grid"] else None
        self.fields: tuple[str, ...] = FIELDS[self.modality]
        self._dir = self.index_path.parent
        self._shard_files: list[str] = [s["file"] for s in summary["shards"]]
        shard_ids = {name: i for i, name in enumerate(self._shard_files)}
        unknown = set(table["shard"].unique().to_list()) - set(shard_ids)
        if unknown:
            raise ValueError(
                f"{self.index_path} names shards {sorted(unknown)} that its summary "
                f"{summary_path.name} does not list"
            )
        self.keys: list[str] = table["key"].to_list()
        shards = [shard_ids[s] for s in table["shard"].to_list()]
        self._loc: dict[str, tuple[int, int]] = dict(
            zip(self.keys, zip(shards, table["row"].to_list(), strict=True), strict=True)
        )
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._loc

    def __getstate__(self) -> dict[str, Any]:
        # Open shard handles cannot be pickled (e.g. to DataLoader workers); each process
        # reopens its own.
        return {**self.__dict__, "_handles": {}}

    def _shard(self, index: int):
        if index not in self._handles:
            path = self._dir / self._shard_files[index]
            handle = safe_open(str(path), framework="pt")
            found = (handle.metadata() or {}).get("fingerprint")
            if found != self.fingerprint:
                # The shard was re-encoded after the index was built; rows would not match.
                raise ValueError(
                    f"feature shard {path.name} has fingerprint {found!r}, the "
                    f"index {self.index_path.name} expects {self.fingerprint!r}"
                )
            self._handles[index] = handle
        return self._handles[index]

    def _empty(self, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        shapes = {
            "global": (0, self.dim),
            "tokens": (0, self.n_tokens, self.dim),
            "mask": (0, self.n_tokens),
        }
        if name == "mask":
            return torch.zeros(shapes[name], dtype=torch.bool)
        return torch.zeros(shapes[name], dtype=dtype or torch.float16)

    def get(
        self,
        keys: Sequence[str],
        fields: Sequence[str] = ("global", "tokens"),
        dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """Rows of ``keys`` in the given order; KeyError naming keys the cache lacks."""
        bad = [f for f in fields if f not in self.fields]
        if bad:
            raise ValueError(
                f"unknown field(s) {bad} for a {self.modality} cache; available: {self.fields}"
            )
        missing = [k for k in keys if k not in self._loc]
        if missing:
            raise KeyError(
                f"{len(missing)} key(s) not in the feature cache {self.index_path}: {missing[:10]}"
            )
        if len(keys) == 0:
            return {name: self._empty(name, dtype) for name in fields}
        locs = np.array([self._loc[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        parts: dict[str, list[tuple[np.ndarray, torch.Tensor]]] = {name: [] for name in fields}
        for shard in np.unique(locs[:, 0]):
            positions = np.flatnonzero(locs[:, 0] == shard)
            rows, inverse = np.unique(locs[positions, 1], return_inverse=True)
            # Contiguous runs of the sorted rows: one read each.
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            runs = [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks)]
            blocks = self._read_runs(int(shard), runs, fields)
            for name in fields:
                parts[name].append((positions, blocks[name][torch.from_numpy(inverse)]))
        out = {}
        for name in fields:
            first = parts[name][0][1]
            result = torch.empty((len(keys), *first.shape[1:]), dtype=first.dtype)
            for positions, values in parts[name]:
                result[torch.from_numpy(positions)] = values
            if dtype is not None and name != "mask":
                result = result.to(dtype)
            out[name] = result
        return out

    def _read_runs(
        self, shard: int, runs: list[tuple[int, int]], fields: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """``fields`` of rows [start, stop) of each run, concatenated in run order."""
        handle = self._shard(shard)
        out: dict[str, torch.Tensor] = {}
        direct = ("global",) if self.modality == "text" else ("global", "tokens")
        for name in fields:
            if name in direct:
                sliced = handle.get_slice(name)
                out[name] = torch.cat([sliced[start:stop] for start, stop in runs])
        if self.modality != "text" or not {"tokens", "mask"} & set(fields):
            return out
        offsets = handle.get_slice("offsets")
        # One read per run of its bounds; run i contributes sizes[i] + 1 entries to ``bounds``.
        sizes = np.array([stop - start for start, stop in runs], dtype=np.int64)
        bounds = torch.cat([offsets[start : stop + 1] for start, stop in runs]).numpy()
        last = np.cumsum(sizes + 1) - 1  # each run's closing bound
        is_start = np.ones(len(bounds), dtype=bool)
        is_start[last] = False
        lengths = np.diff(bounds)[is_start[:-1]]
        if len(lengths) and (lengths.min() < 0 or lengths.max() > self.n_tokens):
            raise ValueError(
                f"feature shard {self._shard_files[shard]} has offsets outside "
                f"0..{self.n_tokens} tokens per text"
            )
        # Masks are prefixes (checked when writing), so a length rebuilds one.
        mask = torch.arange(self.n_tokens) < torch.from_numpy(lengths).unsqueeze(1)
        if "mask" in fields:
            out["mask"] = mask
        if "tokens" in fields:
            packed = handle.get_slice("tokens")
            first = bounds[last - sizes]
            rows = torch.cat(
                [packed[int(a) : int(b)] for a, b in zip(first, bounds[last], strict=True)]
            )
            padded = rows.new_zeros((len(lengths), self.n_tokens, self.dim))
            padded[mask] = rows
            out["tokens"] = padded
        return out
