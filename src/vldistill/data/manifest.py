"""The one manifest schema every dataset ends in (synthetic generator and real loaders alike).

Layout under a dataset root ``data/{dataset}/``::

    images/...                         image files (paths in manifests are relative to the root)
    manifest/{split}/{table}.parquet   one parquet per split and table

Tables: ``images`` (one row per image) and one per task: ``captions``, ``vqa``, ``ve``, ``vcr``.
Every task row repeats ``image_id`` and ``image_path`` so a task table is usable on its own.
Splits: ``train``, ``val``, ``test`` (source domain) and ``test_shifted`` (shifted domain).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from vldistill.io import atomic_output

SPLITS: tuple[str, ...] = ("train", "val", "test", "test_shifted")
TASKS: tuple[str, ...] = ("captions", "vqa", "ve", "vcr")
TABLES: tuple[str, ...] = ("images", *TASKS)
VE_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")

_IMAGE_KEY = {"image_id": pl.String, "image_path": pl.String}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "images": {
        **_IMAGE_KEY,
        "domain": pl.String,  # "source" | "shifted" (real data: "source")
        "width": pl.Int32,
        "height": pl.Int32,
        "scene": pl.String,  # JSON scene graph for synthetic data, null for real data
    },
    "captions": {
        **_IMAGE_KEY,
        "caption_id": pl.String,
        "caption": pl.String,
        # a minimally edited *false* caption (swapped attribute/relation); null when unknown
        "hard_negative": pl.String,
        # JSON of what the caption claims (data/truth.py), for synthetic data; null otherwise
        "claim": pl.String,
    },
    "vqa": {
        **_IMAGE_KEY,
        "question_id": pl.String,
        "question": pl.String,
        "question_type": pl.String,  # e.g. "count", "color", "exist", "shape", "relation"
        "answer_type": pl.String,  # VQA v2: "yes/no" | "number" | "other"
        "answers": pl.List(pl.String),  # the raw annotator answers (10 in VQA v2)
        "multiple_choice_answer": pl.String,  # the most common (normalised) answer
    },
    "ve": {
        **_IMAGE_KEY,
        "pair_id": pl.String,
        "hypothesis": pl.String,
        "label": pl.String,  # one of VE_LABELS
    },
    "vcr": {
        **_IMAGE_KEY,
        "item_id": pl.String,
        "question": pl.String,
        "answers": pl.List(pl.String),  # 4 candidates
        "rationales": pl.List(pl.String),  # 4 candidates, given the right answer
        "answer_label": pl.Int32,
        "rationale_label": pl.Int32,
    },
}

# Which columns of which table hold text that a text teacher must encode.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "captions": ("caption", "hard_negative"),
    "vqa": ("question",),
    "ve": ("hypothesis",),
    "vcr": ("question", "answers", "rationales"),
}
# What the text teacher encodes: every text a distillation target or a probe feature is read for.
# Hard negatives only serve the student's image-text matching, never a teacher.
TEACHER_TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    **TEXT_COLUMNS, "captions": ("caption",),
}


class ManifestError(ValueError):
    """A manifest file does not match the schema; the message names the file and the problem."""


class BadExampleError(ValueError):
    """Examples that cannot be used (an image that does not decode, an empty text, ...); the
    message names each file, row and reason."""


def manifest_path(root: str | Path, split: str, table: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if table not in TABLES:
        raise ValueError(f"unknown manifest table {table!r}; expected one of {TABLES}")
    return Path(root) / "manifest" / split / f"{table}.parquet"


# Columns only a generator can fill (what a caption claims); absent from every real format.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"captions": ("claim",)}


def conform(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """Select and cast the schema's columns in schema order; fail naming any missing column
    (optional columns missing are null)."""
    schema = SCHEMAS[table]
    absent = [c for c in OPTIONAL_COLUMNS.get(table, ()) if c not in df.columns]
    df = df.with_columns(pl.lit(None, dtype=schema[c]).alias(c) for c in absent)
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ManifestError(f"{table} manifest lacks column(s) {missing}; expected {list(schema)}")
    return df.select([pl.col(c).cast(t, strict=True) for c, t in schema.items()])


def write_manifest(df: pl.DataFrame, path: str | Path, table: str) -> None:
    """Write a manifest atomically (temporary name, then rename) after conforming it."""
    with atomic_output(path) as tmp:
        conform(df, table).write_parquet(tmp, statistics=False)


def read_manifest(path: str | Path, table: str) -> pl.DataFrame:
    """Read a manifest and check it against the schema; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run the data rule first")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise ManifestError(f"manifest {path} is not a readable parquet file: {exc}") from exc
    try:
        return conform(df, table)
    except (ManifestError, pl.exceptions.PolarsError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def text_id(text: str) -> str:
    """Stable key of a text in the teacher feature cache."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def collect_texts(frames: dict[str, pl.DataFrame],
                  columns: dict[str, tuple[str, ...]] = TEXT_COLUMNS) -> pl.DataFrame:
    """Unique texts (text_id, text) of the given task tables, sorted by id for stable sharding."""
    parts: list[pl.Series] = []
    for table, df in frames.items():
        for column in columns.get(table, ()):
            series = df.get_column(column)
            if series.dtype == pl.List(pl.String):
                series = series.explode()
            parts.append(series.drop_nulls().alias("text"))
    if not parts:
        return pl.DataFrame(schema={"text_id": pl.String, "text": pl.String})
    texts = pl.concat(parts).unique()
    return (
        pl.DataFrame({"text": texts})
        .with_columns(pl.col("text").map_elements(text_id, return_dtype=pl.String).alias("text_id"))
        .select("text_id", "text")
        .sort("text_id")
    )
