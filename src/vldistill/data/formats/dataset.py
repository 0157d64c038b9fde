"""Assemble loaded task tables into manifests: the images tables, merging, writing every file.

A loader's result is ``{split: {table: DataFrame}}`` already conforming to ``manifest.SCHEMAS``.
Image paths are relative to the dataset root, as every manifest's are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from PIL import Image

from vldistill.data.formats.splits import TaskTables
from vldistill.data.manifest import SCHEMAS, SPLITS, TABLES, conform, manifest_path, write_manifest

log = logging.getLogger(__name__)

Tables = dict[str, dict[str, pl.DataFrame]]  # split -> table -> rows
SIZE_THREADS = 8  # header reads wait on the disk, not the CPU


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header without decoding pixels; (0, 0) if it cannot be
    opened, so validate.py, which decodes every image, names the file and drops or fails it."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # any PIL failure means "unusable": validate.py says why
        return 0, 0


def images_table(root: str | Path, tasks: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per distinct image the task tables use (sorted by id), with its size."""
    keys = [df.select("image_id", "image_path") for df in tasks.values()]
    if not keys:
        return pl.DataFrame(schema=SCHEMAS["images"])
    pairs = merge_images(keys)
    with ThreadPoolExecutor(SIZE_THREADS) as pool:
        sizes = list(pool.map(image_size, (Path(root) / p for p in pairs["image_path"])))
    return conform(pairs.with_columns(
        pl.lit("source").alias("domain"),
        pl.Series("width", [w for w, _ in sizes], dtype=pl.Int32),
        pl.Series("height", [h for _, h in sizes], dtype=pl.Int32),
        pl.lit(None, dtype=pl.String).alias("scene"),  # no scene graph for real images
    ), "images")


def merge_images(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Distinct images of several tables (any with image_id, image_path), sorted by id.

    The same id with two different paths means two loaders disagree on where an image lives
    (e.g. COCO captions and VQA v2 given different image directories): an error, not a guess.
    """
    frames = list(frames)
    if not frames:
        return pl.DataFrame(schema=SCHEMAS["images"])
    columns = frames[0].columns
    rows = pl.concat([f.select(columns) for f in frames]).unique(
        "image_id", keep="first", maintain_order=True)
    paths = pl.concat([f.select("image_id", "image_path") for f in frames]).unique()
    clash = paths.filter(pl.col("image_id").is_duplicated()).sort("image_id", "image_path")
    if clash.height:
        first = clash["image_id"][0]
        both = clash.filter(pl.col("image_id") == first)["image_path"].to_list()
        raise ValueError(f"image id {first!r} has different paths {both} "
                         f"({clash['image_id'].n_unique()} such id(s)); give every loader of the "
                         "same images the same image directory")
    return rows.sort("image_id")


def finish(root: str | Path, tasks_by_split: Mapping[str, TaskTables]) -> Tables:
    """Conform each split's task tables and add its images table."""
    out: Tables = {}
    for split, tasks in tasks_by_split.items():
        out[split] = {t: conform(df, t) for t, df in tasks.items()}
        out[split]["images"] = images_table(root, tasks)
    return out


def combine(*loaded: Tables) -> Tables:
    """Several loaders' results as one dataset: task rows concatenated, images deduplicated."""
    out: Tables = {}
    for split in SPLITS:
        parts = [tables[split] for tables in loaded if split in tables]
        if not parts:
            continue
        out[split] = {}
        for table in TABLES:
            frames = [p[table] for p in parts if table in p]
            if frames:
                out[split][table] = (merge_images(frames) if table == "images"
                                     else pl.concat(frames))
    return out


def images_in_several_splits(tables: Tables) -> dict[str, list[str]]:
    """{image_id: splits} for images that appear in more than one split (e.g. a COCO image in
    the Karpathy train split whose VQA v2 questions fell in test), for the caller to report."""
    seen: dict[str, list[str]] = {}
    for split in SPLITS:
        if "images" in tables.get(split, {}):
            for image_id in tables[split]["images"]["image_id"].to_list():
                seen.setdefault(image_id, []).append(split)
    return {i: s for i, s in seen.items() if len(s) > 1}


def write_dataset(root: str | Path, tables_by_split: Tables) -> dict[str, dict[str, int]]:
    """Write every manifest of every split; a table or split with no rows is written empty with
    its schema, so later stages find every file. Returns {split: {table: rows}}."""
    unknown = [s for s in tables_by_split if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {SPLITS}")
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        tables = tables_by_split.get(split, {})
        counts[split] = {}
        for table in TABLES:
            df = tables.get(table, pl.DataFrame(schema=SCHEMAS[table]))
            write_manifest(df, manifest_path(root, split, table), table)
            counts[split][table] = df.height
    log.info("wrote manifests under %s: %s", root, counts)
    return counts
