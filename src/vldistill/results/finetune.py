"""Fine-tuning results: every job's metrics.json as rows of one long table, and a seed summary.

One row per (task, regime, method, seed, eval split, metric) with its value, its n and the
reference a reader needs beside it: chance level (VE, VCR) or the majority-answer baseline
computed from the regime's training answers (VQA).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from vldistill.results.summary import KEYS, ROW_SCHEMA, mean_spread, summarise, write_report_files

METRICS: dict[str, tuple[str, ...]] = {"vqa": ("accuracy",), "ve": ("accuracy",),
                                       "vcr": ("q2a", "qa2r", "q2ar")}


def metric_rows(metrics: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """The rows of one fine-tuning job's metrics.json."""
    task = metrics["task"]
    if task not in METRICS:
        raise ValueError(f"unknown task {task!r} in metrics of {dataset}")
    rows = []
    for split, result in metrics["results"].items():
        for metric in METRICS[task]:
            if task == "vqa":
                reference, kind = result.get("majority_baseline"), "majority"
            else:
                reference, kind = result.get("chance", {}).get(metric), "chance"
            rows.append({
                "dataset": dataset, "task": task, "regime": metrics["regime"], "split": split,
                "method": metrics["method"], "metric": metric, "seed": metrics["seed"],
                "student_seed": metrics.get("seeds", {}).get("pretrain"),  # none: no student
                "value": float(result[metric]), "n": int(result["n"]),
                "reference": None if reference is None else float(reference),
                "reference_kind": kind,
            })
    return rows


def collect(paths: Iterable[str | Path], dataset: str) -> pl.DataFrame:
    """Rows of every given metrics.json of one dataset."""
    rows = []
    for path in paths:
        path = Path(path)
        try:
            rows.extend(metric_rows(json.loads(path.read_text()), dataset))
        except (KeyError, ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a fine-tuning metrics file ({error}); re-run the job "
                             "that wrote it") from None
    return pl.DataFrame(rows, schema=ROW_SCHEMA).sort([*KEYS, "student_seed", "seed"])


# text_only: the task's shortcut detector, a reference row beside chance (stages/shortcuts.py)
REFERENCE_METHODS: tuple[str, ...] = ("text_only",)
METHOD_ORDER: tuple[str, ...] = ("baseline", "kd", "mad", "mad-ts", "mad-cw", "mad-af",
                                 *REFERENCE_METHODS)


def regime_order(regime: str) -> float:
    """Low-shot regimes by their fraction, then full."""
    return 101.0 if regime == "full" else float(regime.removeprefix("lowshot-"))


def markdown(summary: pl.DataFrame) -> str:
    """One table per task: a row per (metric, regime, split), a column per method, each cell
    ``mean ± std`` over seeds, and the reference (chance or majority) and n beside them."""
    methods = [m for m in METHOD_ORDER if m in set(summary["method"])]
    out = []
    for task in [t for t in METRICS if t in set(summary["task"])]:
        part = summary.filter(pl.col("task") == task)
        seeds = part["seeds"].max()
        out += [f"### {task} ({seeds} seed{'s' if seeds != 1 else ''}; mean ± std)", "",
                "| metric | regime | split | " + " | ".join(methods) + " | reference | n |",
                "|---|---|---|" + "---:|" * (len(methods) + 2)]
        cells = part.with_columns(
            pl.col("metric").map_elements(METRICS[task].index, return_dtype=pl.Int64)
            .alias("_metric"),
            pl.col("regime").map_elements(regime_order, return_dtype=pl.Float64).alias("_regime"))
        ordered = cells.sort(["_metric", "_regime", "split"])
        for (metric, regime, split), group in ordered.group_by(
                ["metric", "regime", "split"], maintain_order=True):
            by_method = {r["method"]: r for r in group.iter_rows(named=True)}
            values = ["" if r is None else mean_spread(r["mean"], r["std"], 3)
                      for r in (by_method.get(m) for m in methods)]
            first = next(iter(by_method.values()))
            reference = "" if first["reference"] is None else \
                f"{first['reference']:.3f} ({first['reference_kind']})"
            out.append(f"| {metric} | {regime} | {split} | " + " | ".join(values) +
                       f" | {reference} | {first['n']} |")
        out.append("")
    return "\n".join(out)


def write_report(metrics_paths: Iterable[str | Path], dataset: str, *, csv_path: str | Path,
                 summary_path: str | Path, markdown_path: str | Path) -> str:
    """Write the long rows, the seed summary and the Markdown view; return the Markdown."""
    rows = collect(metrics_paths, dataset)
    summary = summarise(rows)
    text = f"# Fine-tuning results: {dataset}\n\n{markdown(summary)}"
    write_report_files(rows, summary, text, csv_path=csv_path, summary_path=summary_path,
                       markdown_path=markdown_path)
    return text
