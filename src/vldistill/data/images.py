"""A dataset split's images as uint8 pixels at the student's input size, looked up by image id.

The pipeline's banks read their rows from the split's pixel file (data/pixels.py), written once
by the ``pixels`` rule; ``load_image_bank`` decodes a split into memory instead, for use outside
the pipeline. Either way a batch is normalised only after it reaches its device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image
from tqdm import tqdm

from vldistill.data.manifest import BadExampleError, read_manifest


class PixelBank:
    """uint8 pixels with an id -> row map; ``batch`` returns normalised floats. The one bank of
    the project: a subclass only names its layout (ImageBank below, ClipBank in data/video.py)."""

    layout = "[N, ..., 3, S, S]"  # what ``pixels`` must be, as error messages say it
    ndim = 0
    item = "item"

    def __init__(self, ids: Sequence[str], pixels: torch.Tensor) -> None:
        if pixels.dtype != torch.uint8 or pixels.ndim != self.ndim or pixels.shape[-3] != 3:
            raise ValueError(f"pixels must be uint8 {self.layout}, got {pixels.dtype} "
                             f"{tuple(pixels.shape)}")
        if len(ids) != len(pixels):
            raise ValueError(f"{len(ids)} ids for {len(pixels)} {self.item}s")
        self.ids = list(ids)
        self.row = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self.row) != len(self.ids):
            raise ValueError(f"duplicate {self.item} ids in the bank")
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, item_ids: Sequence[str]) -> torch.Tensor:
        missing = [i for i in item_ids if i not in self.row]
        if missing:
            raise KeyError(f"{len(missing)} {self.item} id(s) not in the bank, e.g. {missing[:3]}")
        return torch.tensor([self.row[i] for i in item_ids], dtype=torch.long)

    def batch(self, item_ids: Sequence[str]) -> torch.Tensor:
        """Floats in [-1, 1] (mean = std = 0.5 per channel), [B, ...] in the bank's layout."""
        return self.at(self.rows(item_ids))

    def at(self, rows: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """``batch`` for bank rows already looked up; the uint8 pixels move to ``device`` and
        are normalised there (a quarter of the bytes of floats cross the bus)."""
        pixels = self.pixels[rows]
        return normalise(pixels if device is None else pixels.to(device, non_blocking=True))

    def batches(self, batch_size: int, rows: tuple[int, int] | None = None,
                device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """``at`` over the bank in order, ``batch_size`` rows at a time (or over its rows
        [start, stop) only), on ``device``: what a gallery's embeddings and pyramids are
        computed from."""
        start, stop = rows if rows is not None else (0, len(self))
        for first in range(start, stop, batch_size):
            yield self.at(torch.arange(first, min(first + batch_size, stop)), device)


class ImageBank(PixelBank):
    """Still images, uint8 [N, 3, S, S]."""

    layout = "[N, 3, S, S]"
    ndim = 4
    item = "image"


def decode_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB; BadExampleError naming the file otherwise."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # decodes every pixel: truncation shows up here
    # PIL reports broken files with many types (OSError, SyntaxError, EOFError, zlib.error,
    # struct.error, DecompressionBombError): all mean "this file is not a usable image"
    except Exception as exc:
        raise BadExampleError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1], the student's input (mean = std = 0.5)."""
    return pixels.float().div_(127.5).sub_(1.0)


def image_table(image_manifests: Sequence[str | Path]) -> pl.DataFrame:
    """(image_id, image_path) of the given ``images`` manifests, first occurrence of each id, in
    manifest order: the row order of an ImageBank and of a streamed gallery alike."""
    frames = [read_manifest(p, "images").select("image_id", "image_path") for p in image_manifests]
    return pl.concat(frames).unique("image_id", keep="first", maintain_order=True)


def square_view(image: Image.Image, size: int) -> Image.Image:
    """What every model sees of an image: its central square (side = the shorter side), resized
    bilinearly to size x size. open_clip's transforms (shorter side resized, then centre crop)
    keep the same region, so the student and every teacher look at the same pixels and
    position-matched token distillation compares the same places; squashing the whole image
    into a square instead would stretch it differently for the student than for the teacher."""
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def decode_resized(root: str | Path, rel_path: str, image_id: str, image_size: int) -> np.ndarray:
    """One image as uint8 [S, S, 3]: its square view at the student's input size."""
    try:
        image = decode_rgb(Path(root) / rel_path)
    except BadExampleError as exc:
        raise BadExampleError(f"{exc} (image_id {image_id}); the data rule checked it, so "
                              "it changed since: re-run the data rule") from exc
    return np.asarray(square_view(image, image_size), dtype=np.uint8)


def load_image_bank(root: str | Path, image_manifests: Sequence[str | Path], image_size: int,
                    progress: bool = True) -> ImageBank:
    """Decode every image listed in the given ``images`` manifests, resized to ``image_size``."""
    table = image_table(image_manifests)
    pixels = torch.empty((len(table), 3, image_size, image_size), dtype=torch.uint8)
    rows = zip(table["image_id"], table["image_path"], strict=True)
    for i, (image_id, rel_path) in enumerate(tqdm(rows, total=len(table), unit="img",
                                                  desc="images", disable=not progress)):
        array = decode_resized(root, rel_path, image_id, image_size)
        pixels[i] = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return ImageBank(table["image_id"].to_list(), pixels)
