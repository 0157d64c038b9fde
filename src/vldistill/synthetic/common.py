"""What the synthetic generators (images.py, video.py) share: their configs' checks, for callers
that build a config in Python without the workflow's schema; per-item random streams; and
writing a split's manifests with a tally of what they hold."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from vldistill.data.manifest import SCHEMAS, SPLITS, manifest_path, write_manifest
from vldistill.synthetic.scenes import geometry

T = TypeVar("T")


# ``owner`` is the config section (synthetic, synthetic_video): a message names the key as the
# workflow's config check does
def check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name}: must be an integer >= {minimum}, got {value!r}")


def check_image_size(owner: str, image_size: Any) -> None:
    check_int(owner, "image_size", image_size, 1)
    try:
        geometry(image_size)
    except ValueError as exc:
        raise ValueError(f"{owner}.image_size: {exc}") from exc


def check_counts(owner: str, counts: Mapping[str, Any]) -> None:
    """Items per split: every split named, no other, none negative."""
    for split in counts:
        if split not in SPLITS:
            raise ValueError(f"{owner}.counts: unknown split {split!r}")
    for split in SPLITS:
        if split not in counts:
            raise ValueError(f"{owner}.counts: lacks split {split!r}")
        check_int(owner, f"counts[{split!r}]", counts[split], 0)


def check_object_range(owner: str, minimum: Any, maximum: Any, most: int, why: str) -> None:
    check_int(owner, "min_objects", minimum, 1)
    check_int(owner, "max_objects", maximum, 1)
    if minimum > maximum:
        raise ValueError(f"{owner}.min_objects: must not exceed {owner}.max_objects "
                         f"({minimum} > {maximum})")
    if maximum > most:
        raise ValueError(f"{owner}.max_objects: must be <= {most}{why}")


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def item_rng(seed: int, split: str, index: int, stream: int, *tags: int) -> np.random.Generator:
    """The random stream of one item of one split for one purpose (``stream``), independent of
    every other item's: an item never depends on generation order or on other items' counts."""
    split_key = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([seed, split_key, index, stream, *tags]))


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def tally(values: list) -> dict[str, int]:
    """Counts of each value, keyed by its text in text order: a JSON-friendly distribution."""
    return {str(k): v for k, v in sorted(Counter(values).items(), key=lambda kv: str(kv[0]))}


def write_split(root: str | Path, split: str, rows: Mapping[str, list[dict[str, Any]]]
                ) -> dict[str, pl.DataFrame]:
    """Every manifest table of one split from its rows; returns the tables written."""
    frames = {table: pl.DataFrame(table_rows, schema=SCHEMAS[table])
              for table, table_rows in rows.items()}
    for table, df in frames.items():
        write_manifest(df, manifest_path(root, split, table), table)
    return frames
