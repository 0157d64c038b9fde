"""Retrieval results: every evaluated model's JSON (one per model and seed) as rows of the same
long table the fine-tuning results use, a seed summary, and a Markdown view.

task is ``retrieval``; method the model (fast, fast_distilled, slow, rerank_k<K>); split the
gallery split; metrics t2i_R@K / i2t_R@K (percent), t2i/i2t_median_rank, and the latency per
query in ms (fast_ms, slow_ms, total_ms) with slow_calls per query, and hard_negative_acc: how often
a model prefers an image's caption to the caption's hard negative (for the synthetic clips, the
same words said of the time-reversed clip). The reference beside a recall is chance, beside a
median rank a random order's: the figures the evaluation wrote under ``chance`` (image -> text,
where an image has several correct captions), else K / gallery and (gallery + 1) / 2; beside
hard_negative_acc a coin flip's 50 %. Method
``ceiling`` is the best text -> image R@K any model can reach when gallery images share the
query's exact caption (see stages.retrieval.caption_ceiling); ``teacher_ridge`` is a reference
row with no student: a ridge map between the teachers' own embeddings (stages.shortcuts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from vldistill.results.summary import (
    KEYS,
    ROW_SCHEMA,
    mean_spread,
    summarise,
    write_report_files,
)

REPORTED_DIRECTIONS: tuple[str, ...] = ("t2i", "i2t")
LATENCY: tuple[str, ...] = ("fast", "slow", "total")


def rerank_k(model: str) -> int | None:
    """K of a re-ranker's name (``rerank_k50`` -> 50); None for any other model."""
    match = re.fullmatch(r"rerank_k(\d+)", model)
    return None if match is None else int(match.group(1))


def model_order(model: str) -> tuple[int, int]:
    """The ceiling and the teachers' ridge reference, fast, fast_distilled, slow, then the
    re-rankers by K; a video model's single-frame evaluation (``*_1frame``) right after it."""
    fixed = {"ceiling": (-1, 0), "teacher_ridge": (-1, 1), "fast": (0, 0), "fast_1frame": (0, 1),
             "fast_distilled": (1, 0), "slow": (2, 0), "slow_1frame": (2, 1)}
    if model in fixed:
        return fixed[model]
    k = rerank_k(model)
    if k is None:
        raise ValueError(f"unknown retrieval model {model!r}")
    return 3, k


def result_rows(result: dict[str, Any], dataset: str, split: str) -> list[dict[str, Any]]:
    """The rows of one retrieval result JSON (as written by the retrieval evaluation rules)."""
    model, gallery = result["model"], int(result["gallery"])
    model_order(model)  # rejects unknown names early
    base = {"dataset": dataset, "task": "retrieval", "regime": "full", "split": split,
            "method": model, "seed": int(result["seed"])}
    rows = []
    for direction in REPORTED_DIRECTIONS:
        metrics = result.get(direction)
        if metrics is None:  # re-rankers answer text -> image only
            continue
        candidates = gallery if direction == "t2i" else int(result["queries"])
        chance = metrics.get("chance", {})
        for name, value in metrics.items():
            if name in ("n", "chance"):
                continue
            if name in chance:
                reference, kind = float(chance[name]), \
                    "random" if name == "median_rank" else "chance"
            elif name == "median_rank":
                reference, kind = (candidates + 1) / 2, "random"
            else:
                reference, kind = 100.0 * min(int(name.removeprefix("R@")), candidates) \
                    / candidates, "chance"
            rows.append({**base, "metric": f"{direction}_{name}", "value": float(value),
                         "n": int(metrics["n"]), "reference": reference,
                         "reference_kind": kind})
    hard = result.get("hard_negative")  # absent where no caption has a hard negative
    if hard is not None:
        rows.append({**base, "metric": "hard_negative_acc", "value": float(hard["accuracy"]),
                     "n": int(hard["n"]), "reference": 50.0, "reference_kind": "chance"})
    ceiling = result.get("t2i_ceiling")  # written with the Slow-only reference
    if ceiling is not None:
        rows += [{**base, "method": "ceiling", "metric": f"t2i_{name}", "value": float(value),
                  "n": int(ceiling["n"]), "reference": 100.0 * min(int(name[2:]), gallery)
                  / gallery, "reference_kind": "chance"}
                 for name, value in ceiling.items() if name != "n"]
    latency = result.get("latency_ms_per_query", {})  # untimed ablations have none
    for part in LATENCY if latency else ():
        rows.append({**base, "metric": f"{part}_ms", "value": float(latency[part]),
                     "n": int(result["queries"]), "reference": None, "reference_kind": None})
    rows.append({**base, "metric": "slow_calls", "value": float(result["slow_calls_per_query"]),
                 "n": int(result["queries"]), "reference": None, "reference_kind": None})
    return rows


def collect(paths: Iterable[str | Path], dataset: str, split: str) -> pl.DataFrame:
    rows = []
    for path in paths:
        path = Path(path)
        try:
            rows.extend(result_rows(json.loads(path.read_text()), dataset, split))
        except (KeyError, ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a retrieval result ({error}); re-run the job that "
                             "wrote it") from None
    return pl.DataFrame(rows, schema=ROW_SCHEMA).sort([*KEYS, "seed"])


COLUMNS: tuple[tuple[str, str], ...] = (
    ("t2i_R@1", "t2i R@1"), ("t2i_R@5", "R@5"), ("t2i_R@10", "R@10"),
    ("t2i_median_rank", "med r"), ("i2t_R@1", "i2t R@1"), ("i2t_R@5", "R@5"),
    ("i2t_R@10", "R@10"), ("hard_negative_acc", "hard neg"), ("fast_ms", "Fast ms"),
    ("slow_ms", "Slow ms"), ("total_ms", "ms/query"), ("slow_calls", "Slow calls"),
)


def markdown_lines(summary: pl.DataFrame) -> list[str]:
    """A caption line and a table: a row per model (mean ± std over seeds), recall in percent,
    latency per text query, and the speed-up of each model's ms/query over Slow-only.
    ``summary`` is one dataset's retrieval rows with ``mean`` and ``std`` columns."""
    cell = {(r["method"], r["metric"]): r for r in summary.iter_rows(named=True)}
    models = sorted(set(summary["method"]), key=model_order)
    seeds = summary["seeds"].max()
    recall = next((cell[m, "t2i_R@1"] for m in models if (m, "t2i_R@1") in cell), None)
    slow_total = cell.get(("slow", "total_ms"))
    caption = f"{seeds} seed{'s' if seeds != 1 else ''}, mean ± std; recall in %"
    if recall is not None:
        caption += (f"; t2i n = {recall['n']} text queries; chance R@1 = "
                    f"{recall['reference']:.2f}%")
    hard = next((cell[m, "hard_negative_acc"] for m in models
                 if (m, "hard_negative_acc") in cell), None)
    if hard is not None:
        caption += (f"; hard neg = % of {hard['n']} (image, caption) pairs scored above the "
                    "caption's hard negative (chance 50)")
    out = [caption, "",
           "| model | " + " | ".join(title for _, title in COLUMNS) + " | speed-up vs Slow |",
           "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for model in models:
        values = []
        for metric, _ in COLUMNS:
            row = cell.get((model, metric))
            digits = 0 if metric == "slow_calls" else 2 if metric.endswith("_ms") else 1
            values.append("" if row is None else mean_spread(row["mean"], row["std"], digits))
        total = cell.get((model, "total_ms"))
        speedup = "" if slow_total is None or total is None or total["mean"] <= 0 else \
            f"{slow_total['mean'] / total['mean']:.1f}x"
        out.append(f"| {model} | " + " | ".join(values) + f" | {speedup} |")
    return out


def write_report(result_paths: Iterable[str | Path], dataset: str, split: str, *,
                 csv_path: str | Path, summary_path: str | Path,
                 markdown_path: str | Path) -> str:
    """Write the long rows, the seed summary and the Markdown view; return the Markdown."""
    rows = collect(result_paths, dataset, split)
    summary = summarise(rows)
    text = "\n".join([f"# Retrieval results: {dataset} ({split} gallery)", "",
                      *markdown_lines(summary)]) + "\n"
    write_report_files(rows, summary, text, csv_path=csv_path, summary_path=summary_path,
                       markdown_path=markdown_path)
    return text
