"""Atomic file output (an artifact appears under its final name complete, or not at all) and
file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write to; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(obj: object, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def canonicalise_safetensors(path: str | Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys, in place.

    The safetensors writer keeps the string metadata in a hash map whose order changes from
    process to process, so the same tensors and metadata give different bytes on every run (and
    DVC sees a new file). Sorting the header fixes the bytes; tensor data and offsets (relative
    to the end of the header) are untouched. Call it on the temporary path before it is moved.
    """
    path = Path(path)
    with open(path, "rb") as src:
        (length,) = struct.unpack("<Q", src.read(8))
        header = json.loads(src.read(length))
        blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # the format pads the header to 8 bytes with spaces
        rewritten = path.with_name(path.name + ".canonical")
        with open(rewritten, "wb") as dst:
            dst.write(struct.pack("<Q", len(blob)))
            dst.write(blob)
            shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(rewritten, path)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
