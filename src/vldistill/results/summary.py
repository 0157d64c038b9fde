"""What every results source shares: the long row schema, the summary over seeds, how a
``mean ± std`` cell is printed, and how a report's three files are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from vldistill.io import atomic_output

KEYS: tuple[str, ...] = ("dataset", "task", "regime", "split", "method", "metric")
ROW_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "task": pl.String, "regime": pl.String, "split": pl.String,
    "method": pl.String, "metric": pl.String, "seed": pl.Int64,
    # the student chain (pretrain.seeds) a fine-tuning row ran on; null where none applies
    "student_seed": pl.Int64, "value": pl.Float64,
    "n": pl.Int64, "reference": pl.Float64, "reference_kind": pl.String,
}


def summarise(rows: pl.DataFrame) -> pl.DataFrame:
    """Mean, sample standard deviation (null for one replicate) and replicate count per cell;
    a replicate is a (student seed, seed) pair."""
    return (
        rows.group_by(KEYS, maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
            pl.struct("student_seed", "seed").n_unique().alias("seeds"),
            pl.col("n").first().alias("n"),
            pl.col("reference").mean().alias("reference"),
            pl.col("reference_kind").first().alias("reference_kind"),
        )
        .sort(KEYS)
    )


def mean_spread(mean: float, spread: float | None, digits: int) -> str:
    """``mean ± spread``, or the mean alone for one seed (no spread)."""
    if spread is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def write_report_files(rows: pl.DataFrame, summary: pl.DataFrame, text: str, *,
                       csv_path: str | Path, summary_path: str | Path,
                       markdown_path: str | Path) -> None:
    """The long rows, the seed summary and the Markdown view, each written atomically."""
    for path, write in ((csv_path, rows.write_csv), (summary_path, summary.write_csv)):
        with atomic_output(path) as tmp:
            write(tmp)
    with atomic_output(markdown_path) as tmp:
        Path(tmp).write_text(text)
