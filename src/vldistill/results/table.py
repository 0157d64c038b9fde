"""The results table: every stage's seed summary in one long table, a paper-style Markdown view
and a nested metrics.json for ``dvc metrics``.

results/table.csv has one row per (dataset, task, regime, split, method, metric) with value (the
mean over seeds), spread (sample std over seeds; empty for one seed), seeds, n and the reference
a reader needs beside it (chance, majority answer, random order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from vldistill.io import atomic_output
from vldistill.results import retrieval
from vldistill.results.finetune import METHOD_ORDER, METRICS, regime_order
from vldistill.results.summary import KEYS, mean_spread

TABLE_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "task": pl.String, "regime": pl.String, "split": pl.String,
    "method": pl.String, "metric": pl.String, "value": pl.Float64, "spread": pl.Float64,
    "seeds": pl.Int64, "n": pl.Int64, "reference": pl.Float64, "reference_kind": pl.String,
}
SPLIT_NAMES: dict[str, str] = {"test": "source", "test_shifted": "shifted"}


def build_table(summary_paths: Iterable[str | Path]) -> pl.DataFrame:
    """Concatenate seed summaries (results/<ds>/*_summary.csv) into the long results table."""
    frames = []
    for path in summary_paths:
        summary = pl.read_csv(path, schema_overrides={"std": pl.Float64,
                                                      "reference": pl.Float64,
                                                      "reference_kind": pl.String})
        missing = {*KEYS, "mean", "std", "seeds", "n"} - set(summary.columns)
        if missing:
            raise ValueError(f"{path}: not a results summary (missing {sorted(missing)})")
        frames.append(summary.rename({"mean": "value", "std": "spread"})
                      .select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA))
    if not frames:
        raise ValueError("no results to tabulate")
    return pl.concat(frames).sort(list(KEYS))


def read_table(path: str | Path) -> pl.DataFrame:
    """results/table.csv with its column types (an all-empty spread column stays a float)."""
    return pl.read_csv(path, schema=TABLE_SCHEMA)


def regime_label(regime: str) -> str:
    """``lowshot-10`` -> ``10%``; ``full`` stays."""
    return "full" if regime == "full" else f"{regime.removeprefix('lowshot-')}%"


def finetune_markdown(table: pl.DataFrame) -> list[str]:
    """Per task and metric: a row per method, a column per regime x eval split (source, then
    shifted), then rows for the reference and n."""
    out = []
    part = table.filter(pl.col("task").is_in(list(METRICS)))
    for dataset in part["dataset"].unique(maintain_order=True).to_list():
        for task in [t for t in METRICS if t in set(part["task"])]:
            task_rows = part.filter((pl.col("dataset") == dataset) & (pl.col("task") == task))
            regimes = sorted(set(task_rows["regime"]), key=regime_order)
            splits = [s for s in ("test", "test_shifted") if s in set(task_rows["split"])]
            splits += sorted(set(task_rows["split"]) - set(splits))
            columns = [(r, s) for s in splits for r in regimes]
            methods = [m for m in METHOD_ORDER if m in set(task_rows["method"])]
            seeds = task_rows["seeds"].max()
            for metric in METRICS[task]:
                rows = task_rows.filter(pl.col("metric") == metric)
                cell = {(r["method"], r["regime"], r["split"]): r
                        for r in rows.iter_rows(named=True)}
                out += [f"### {dataset}: {task} {metric} ({seeds} seed"
                        f"{'s' if seeds != 1 else ''}, mean ± std)", "",
                        "| method | " + " | ".join(
                            f"{regime_label(r)} {SPLIT_NAMES.get(s, s)}" for r, s in columns)
                        + " |",
                        "|---|" + "---:|" * len(columns)]
                for method in methods:
                    values = [cell.get((method, r, s)) for r, s in columns]
                    out.append(f"| {method} | " + " | ".join(
                        "" if v is None else mean_spread(v["value"], v["spread"], 3)
                        for v in values)
                        + " |")
                first = {(r, s): cell.get((methods[0], r, s)) for r, s in columns}
                kind = next((v["reference_kind"] for v in first.values() if v), "reference")
                out.append(f"| *{kind}* | " + " | ".join(
                    "" if v is None or v["reference"] is None else f"{v['reference']:.3f}"
                    for v in first.values()) + " |")
                out.append("| *n* | " + " | ".join(
                    "" if v is None else str(v["n"]) for v in first.values()) + " |")
                out.append("")
    return out


def retrieval_markdown(table: pl.DataFrame) -> list[str]:
    """Per dataset: the retrieval report's model table (results.retrieval.markdown_lines)."""
    out = []
    part = table.filter(pl.col("task") == "retrieval")
    for dataset in part["dataset"].unique(maintain_order=True).to_list():
        rows = part.filter(pl.col("dataset") == dataset)
        out += [f"### {dataset}: retrieval on the {rows['split'][0]} gallery", "",
                *retrieval.markdown_lines(rows.rename({"value": "mean", "spread": "std"})), ""]
    return out


def markdown(table: pl.DataFrame) -> str:
    return "\n".join(["# Results", "", *finetune_markdown(table), *retrieval_markdown(table)])


def metrics_json(table: pl.DataFrame) -> dict[str, Any]:
    """{dataset: {task: {regime: {split: {method: {metric: value}}}}}} for ``dvc metrics``."""
    nested: dict[str, Any] = {}
    for r in table.iter_rows(named=True):
        leaf = nested
        for key in ("dataset", "task", "regime", "split", "method"):
            leaf = leaf.setdefault(r[key], {})
        leaf[r["metric"]] = r["value"]
    return nested


def write_table(summary_paths: Iterable[str | Path], *, csv_path: str | Path,
                markdown_path: str | Path, metrics_path: str | Path) -> pl.DataFrame:
    table = build_table(summary_paths)
    with atomic_output(csv_path) as tmp:
        table.write_csv(tmp)
    with atomic_output(markdown_path) as tmp:
        Path(tmp).write_text(markdown(table))
    with atomic_output(metrics_path) as tmp:
        Path(tmp).write_text(json.dumps(metrics_json(table), indent=1, sort_keys=True) + "\n")
    return table
