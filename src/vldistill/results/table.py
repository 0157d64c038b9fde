"""The results table: every stage's seed summary in one long table, a paper-style Markdown view
and a nested metrics.json for ``dvc metrics``.

results/table.csv has one row per (dataset, task, regime, split, method, metric) with value (the
mean over seeds), spread (sample std over seeds; empty for one seed), seeds, n (examples
evaluated), skipped (evaluation examples the data check dropped as bad) and the reference a
reader needs beside it (chance, majority answer, random order). Latencies (ms per query) live
in results/timings.csv with the same columns: the table itself is bit-identical across runs of
the same config and seeds on the same machine kind, timings never are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from vldistill.io import atomic_output
from vldistill.results import effects, retrieval
from vldistill.results.finetune import METHOD_ORDER, METRICS, regime_order
from vldistill.results.summary import KEYS, mean_spread

TABLE_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "task": pl.String, "regime": pl.String, "split": pl.String,
    "method": pl.String, "metric": pl.String, "value": pl.Float64, "spread": pl.Float64,
    "seeds": pl.Int64, "n": pl.Int64, "skipped": pl.Int64, "reference": pl.Float64,
    "reference_kind": pl.String,
}
# The manifest table whose rows a task evaluates (data/validate.py counts skips per table).
TASK_TABLE: dict[str, str] = {"vqa": "vqa", "ve": "ve", "vcr": "vcr", "retrieval": "captions"}
SPLIT_NAMES: dict[str, str] = {"test": "source", "test_shifted": "shifted"}


def skipped_counts(validation_paths: Iterable[str | Path]) -> pl.DataFrame:
    """(dataset, task, split, skipped): evaluation rows the data check dropped as bad, read from
    data/<dataset>/validation.json."""
    rows = []
    for path in validation_paths:
        report = json.loads(Path(path).read_text())
        for split, tables in report["skipped"].items():
            for task, table in TASK_TABLE.items():
                rows.append({"dataset": Path(path).parent.name, "task": task, "split": split,
                             "skipped": tables.get(table, 0)})
    return pl.DataFrame(rows, schema={"dataset": pl.String, "task": pl.String,
                                      "split": pl.String, "skipped": pl.Int64})


def build_table(summary_paths: Iterable[str | Path],
                validation_paths: Iterable[str | Path] = ()) -> pl.DataFrame:
    """Concatenate seed summaries (results/<ds>/*_summary.csv) into the long results table;
    ``skipped`` comes from the datasets' validation reports (0 without one)."""
    frames = []
    for path in summary_paths:
        summary = pl.read_csv(path, schema_overrides={"std": pl.Float64,
                                                      "reference": pl.Float64,
                                                      "reference_kind": pl.String})
        missing = {*KEYS, "mean", "std", "seeds", "n"} - set(summary.columns)
        if missing:
            raise ValueError(f"{path}: not a results summary (missing {sorted(missing)})")
        frames.append(summary.rename({"mean": "value", "std": "spread"}))
    if not frames:
        raise ValueError("no results to tabulate")
    table = pl.concat(frames, how="diagonal_relaxed").join(
        skipped_counts(validation_paths), on=["dataset", "task", "split"], how="left",
        maintain_order="left")
    return (table.with_columns(pl.col("skipped").fill_null(0))
            .select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA).sort(list(KEYS)))


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
                    "" if v is None else f"{v['n']}" + (f" ({v['skipped']} bad skipped)"
                                                        if v["skipped"] else "")
                    for v in first.values()) + " |")
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


def built_from_line(built_from: Mapping[str, Any]) -> str:
    """One line saying which config the table was built from (dataset, tasks, seeds, ...)."""
    parts = [f"{key} {', '.join(map(str, value)) if isinstance(value, list) else value}"
             if not isinstance(value, Mapping) else
             f"{key} ({'; '.join(f'{k} {v}' for k, v in value.items())})"
             for key, value in built_from.items()]
    return "Built from: " + "; ".join(parts) + "."


def markdown(table: pl.DataFrame, effect_rows: pl.DataFrame | None = None,
             built_from: Mapping[str, Any] | None = None, figures: Sequence[str] = ()) -> str:
    """The paper-style view; with ``effect_rows`` (results/effects.csv) a short Effects section
    pointing to effects.md; with ``built_from`` a line naming the config it was built from;
    with ``figures`` (paths relative to the Markdown) a Figures section linking each."""
    head = ["# Results", "", *([built_from_line(built_from), ""] if built_from else [])]
    return "\n".join([*head, *finetune_markdown(table), *retrieval_markdown(table),
                      *([] if effect_rows is None else effects.summary_lines(effect_rows)),
                      *figure_lines(figures)])


def figure_lines(figures: Sequence[str]) -> list[str]:
    if not figures:
        return []
    return ["## Figures", "", *(f"- [{Path(f).stem.replace('_', ' ')}]({f})" for f in figures),
            ""]


def metrics_json(table: pl.DataFrame) -> dict[str, Any]:
    """{dataset: {task: {regime: {split: {method: {metric: value}}}}}} for ``dvc metrics``."""
    nested: dict[str, Any] = {}
    for r in table.iter_rows(named=True):
        leaf = nested
        for key in ("dataset", "task", "regime", "split", "method"):
            leaf = leaf.setdefault(r[key], {})
        leaf[r["metric"]] = r["value"]
    return nested


def is_timing() -> pl.Expr:
    """Rows that measure wall-clock time (ms per query): they differ from run to run."""
    return pl.col("metric").str.ends_with("_ms")


def write_table(summary_paths: Iterable[str | Path], *, csv_path: str | Path,
                timings_path: str | Path, markdown_path: str | Path,
                metrics_path: str | Path,
                validation_paths: Iterable[str | Path] = (),
                effects_path: str | Path | None = None,
                built_from: Mapping[str, Any] | None = None,
                figures: Iterable[str | Path] = ()) -> pl.DataFrame:
    """Write the table (quality metrics only, so the same config and seeds give the same bytes),
    the timings (same columns), the Markdown view of both and metrics.json (quality only, so
    ``dvc metrics diff`` shows results, not machine load). Returns the whole table.
    ``effects_path``: results/effects.csv, summarised in the Markdown; ``built_from``: the
    config the table was made for, stated in the Markdown; ``figures``: the plots, linked from
    the Markdown."""
    table = build_table(summary_paths, validation_paths)
    quality, timings = table.filter(~is_timing()), table.filter(is_timing())
    with atomic_output(csv_path) as tmp:
        quality.write_csv(tmp)
    with atomic_output(timings_path) as tmp:
        timings.write_csv(tmp)
    with atomic_output(markdown_path) as tmp:
        effect_rows = None if effects_path is None else effects.read_effects(effects_path)
        links = [os.path.relpath(f, Path(markdown_path).parent) for f in figures]
        Path(tmp).write_text(markdown(table, effect_rows, built_from, links))
    with atomic_output(metrics_path) as tmp:
        Path(tmp).write_text(json.dumps(metrics_json(quality), indent=1, sort_keys=True) + "\n")
    return table
