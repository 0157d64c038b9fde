"""A split's pixels written once at the student's input size, read back a batch at a time.

The ``pixels`` rule decodes every image (or clip) of a split into one uint8 ``.npy`` array,
``data/<dataset>/pixels/<split>.npy`` ([N, 3, S, S], or [N, T, 3, S, S] for clips), with its row
ids and geometry beside it in ``<split>.json``. Training and evaluation jobs then read only the
rows a batch needs, with positioned reads (``os.pread``): a job's memory holds one batch
whatever the split's size (COCO's 113k training images are 17 GB at 224 px), the rows come
from the OS page cache that every job, rank and loader worker on a node shares, and nothing is
decoded twice.

Why one array rather than tar shards (webdataset): the training sampler draws any rows at any
step (a seeded permutation per epoch, so a resumed run repeats its batches exactly), which a
flat array serves with one read per row; tar shards are read in order and would need a shuffle
buffer, whose batches depend on where the stream was when the job stopped. The ``.npy``
format also opens with ``np.load(path, mmap_mode="r")`` for anyone inspecting the data.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vldistill.data.images import ImageBank, PixelBank, decode_resized, image_table
from vldistill.data.manifest import manifest_path
from vldistill.io import atomic_output, write_json


def pixel_path(root: str | Path, split: str) -> Path:
    return Path(root) / "pixels" / f"{split}.npy"


def pixel_shape(n: int, size: int, frames: int) -> tuple[int, ...]:
    return (n, 3, size, size) if frames == 1 else (n, frames, 3, size, size)


def write_pixel_file(root: str | Path, split: str, size: int, frames: int = 1,
                     progress: bool = True) -> dict[str, Any]:
    """Decode the split's images (clips of ``frames`` frames when > 1), each as its square view
    at ``size`` px, into ``pixel_path(root, split)`` in the images manifest's order; returns
    the sidecar record (ids, size, frames, shape)."""
    from vldistill.data.video import read_clip_checked  # video pulls in PyAV

    root = Path(root)
    table = image_table([manifest_path(root, split, "images")])
    shape = pixel_shape(len(table), size, frames)
    out = pixel_path(root, split)
    with atomic_output(out) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
        rows = zip(table["image_id"], table["image_path"], strict=True)
        for image_id, rel_path in tqdm(rows, total=len(table), unit="img", desc=split,
                                       file=sys.stderr, mininterval=10.0, disable=not progress):
            if frames == 1:
                array = decode_resized(root, rel_path, image_id, size).transpose(2, 0, 1)
            else:
                array = read_clip_checked(root, rel_path, image_id, frames, size)
                array = array.transpose(0, 3, 1, 2)
            handle.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    record = {"ids": table["image_id"].to_list(), "size": size, "frames": frames,
              "shape": list(shape)}
    write_json(record, out.with_suffix(".json"))
    return record


class PixelFiles:
    """uint8 rows of one or more pixel files, concatenated in the given order, read on demand.

    Indexing with a 1-D LongTensor of rows returns those rows as one uint8 tensor, like indexing
    the in-memory array would; each row is one positioned read. File handles open lazily per
    process, so a DataLoader worker forked or spawned from the job opens its own. ``select``:
    only these rows of the concatenation, in this order (splits that share images, as COCO's
    VQA test and shifted test can, hold a shared image once in the bank)."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str | Path],
                 select: Sequence[int] | None = None) -> None:
        if not paths:
            raise ValueError("PixelFiles needs at least one file")
        self.paths = [Path(p) for p in paths]
        self._offsets, counts, shapes = [], [], set()
        for path in self.paths:
            with open(path, "rb") as handle:
                read_header = (np.lib.format.read_array_header_1_0
                               if np.lib.format.read_magic(handle) == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                if dtype != np.uint8 or fortran:
                    raise ValueError(f"{path}: expected a C-order uint8 array, got {dtype}"
                                     f"{' (Fortran order)' if fortran else ''}; re-run the "
                                     "pixels rule")
                self._offsets.append(handle.tell())
            counts.append(shape[0])
            shapes.add(tuple(shape[1:]))
            expected = self._offsets[-1] + int(np.prod(shape))
            if path.stat().st_size != expected:
                raise ValueError(f"{path}: {path.stat().st_size} bytes where its header "
                                 f"promises {expected}; the file is truncated: re-run the "
                                 "pixels rule")
        if len(shapes) != 1:
            raise ValueError(f"pixel files of different geometries: {sorted(shapes)}")
        self.item_shape = shapes.pop()
        self.row_bytes = int(np.prod(self.item_shape))
        self.starts = np.cumsum([0, *counts])  # first global row of each file
        self.select = None if select is None else np.asarray(select, dtype=np.int64)
        if self.select is not None and len(self.select) and (
                self.select.min() < 0 or self.select.max() >= self.starts[-1]):
            raise IndexError(f"selected rows out of range [0, {int(self.starts[-1])})")
        n = int(self.starts[-1]) if self.select is None else len(self.select)
        self.shape = torch.Size((n, *self.item_shape))
        self.ndim = len(self.shape)
        self._handles: dict[int, int] = {}  # file index -> fd, for the process that opened them
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def _fd(self, file: int) -> int:
        if self._pid != os.getpid():  # a fresh process (loader worker): its own descriptors
            self._handles, self._pid = {}, os.getpid()
        if file not in self._handles:
            self._handles[file] = os.open(self.paths[file], os.O_RDONLY)
        return self._handles[file]

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(self)):
            raise IndexError(f"pixel rows out of range [0, {len(self)})")
        out = np.empty((len(rows), *self.item_shape), dtype=np.uint8)
        rows = rows.numpy() if self.select is None else self.select[rows.numpy()]
        files = np.searchsorted(self.starts, rows, side="right") - 1
        for k, (row, file) in enumerate(zip(rows.tolist(), files.tolist(), strict=True)):
            offset = self._offsets[file] + (row - int(self.starts[file])) * self.row_bytes
            data = os.pread(self._fd(file), self.row_bytes, offset)
            out[k] = np.frombuffer(data, dtype=np.uint8).reshape(self.item_shape)
        return torch.from_numpy(out)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}, "_pid": -1}  # descriptors do not travel


def open_visual_bank(root: str | Path, splits: Sequence[str], size: int,
                     frames: int = 1) -> PixelBank:
    """The bank of the given splits' pixel files (rows in split order), checked against the
    geometry the model reads. Outside the pipeline, where no pixels rule ran (a notebook, a
    test on freshly generated data), the splits are decoded into memory instead."""
    from vldistill.data.video import ClipBank, load_visual_bank

    paths = [pixel_path(root, s) for s in splits]
    if not all(p.exists() for p in paths):
        return load_visual_bank(root, [manifest_path(root, s, "images") for s in splits], size,
                                frames, progress=False)
    ids: list[str] = []
    for path in paths:
        record = json.loads(path.with_suffix(".json").read_text())
        if (record["size"], record["frames"]) != (size, frames):
            raise ValueError(
                f"{path} holds {record['frames']}-frame items at {record['size']} px; the model "
                f"reads {frames} frame(s) at {size} px. Re-run the pixels rule with the "
                "student's image_size and frames (student.image_size / student.frames).")
        ids.extend(record["ids"])
    first = {}
    for row, item_id in enumerate(ids):
        first.setdefault(item_id, row)  # an image in two splits: its first copy, as image_table
    select = None if len(first) == len(ids) else list(first.values())
    bank_class = ImageBank if frames == 1 else ClipBank
    return bank_class(list(first), PixelFiles(paths, select))
