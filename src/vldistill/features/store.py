"""Read teacher features by key from a gathered cache (index parquet + JSON + shard files)."""

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
    bool) unless ``dtype`` is given.
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
            runs = np.split(rows, breaks)
            handle = self._shard(int(shard))
            for name in fields:
                sliced = handle.get_slice(name)
                block = torch.cat([sliced[int(run[0]) : int(run[-1]) + 1] for run in runs])
                parts[name].append((positions, block[torch.from_numpy(inverse)]))
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
