"""Named image folders of a real dataset, gathered under ``data/<name>/images/<root>/``.

A dataset's images often arrive as several folders (COCO: ``train2014.zip`` and ``val2014.zip``
extract to two trees), while the official annotations name images relative to one parent
(``train2014/COCO_train2014_...jpg``). Each configured root lists folders whose entries are
linked (symlinks, nothing copied) into one directory, which the loaders then read as
``images/<root>``; manifests store paths relative to the dataset folder as always.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

# Snakemake marks every directory() output with this file; it is not an image
IGNORED = {".snakemake_timestamp"}


class ImageRootError(FileNotFoundError):
    """A configured image folder is missing or two folders offer the same entry."""


def resolve(root: Path, path: str) -> Path:
    """A config path: absolute as given, otherwise relative to the dataset folder."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def link_image_roots(root: str | Path, image_roots: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """(Re)build ``root/images/<name>/`` for every configured root; returns entries per root."""
    root = Path(root)
    images = root / "images"
    counts = {}
    for name, folders in image_roots.items():
        target = images / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        owner: dict[str, Path] = {}
        for folder in folders:
            source = resolve(root, folder)
            if not source.is_dir():
                raise ImageRootError(
                    f"image_roots.{name}: folder {source.resolve()} does not exist; it should "
                    f"hold the dataset's images (an extracted download, data/<name>/raw/<file>.d, "
                    f"or a folder you placed)")
            for entry in sorted(source.iterdir()):
                if entry.name in IGNORED:
                    continue
                if entry.name in owner:
                    raise ImageRootError(
                        f"image_roots.{name}: {entry.name!r} is in both {owner[entry.name]} and "
                        f"{source}; each entry may come from one folder only")
                owner[entry.name] = source
                os.symlink(entry.resolve(), target / entry.name)
        counts[name] = len(owner)
    return counts
