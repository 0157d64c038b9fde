"""Plots of the results table (matplotlib, headless): low-shot curves, re-ranking recall against
K, and retrieval accuracy against time per query."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from vldistill.io import atomic_output  # noqa: E402
from vldistill.results.finetune import (  # noqa: E402
    METHOD_ORDER,
    REFERENCE_METHODS,
    regime_order,
)
from vldistill.results.retrieval import rerank_k  # noqa: E402
from vldistill.results.table import SPLIT_NAMES, regime_label  # noqa: E402

PRIMARY_METRIC: dict[str, str] = {"vqa": "accuracy", "ve": "accuracy", "vcr": "q2ar"}


def _log_ticks(ax: plt.Axes, values: list[float], labels: list[str]) -> None:
    """A log x axis ticked at the data's own values (1%, 10%, full; K = 1, 5, ...)."""
    ax.set_xscale("log")
    ax.set_xticks(values, labels)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_lowshot(table: pl.DataFrame, path: str | Path) -> None:
    """Accuracy against the fraction of training images, a line per method, a panel per task
    (rows) and eval split (columns); dashed: the text-only reference, chance or the majority
    answer."""
    rows = table.filter(pl.col("task").is_in(list(PRIMARY_METRIC)))
    rows = rows.filter(pl.col("metric") == pl.col("task").replace_strict(PRIMARY_METRIC))
    tasks = [t for t in PRIMARY_METRIC if t in set(rows["task"])]
    splits = [s for s in ("test", "test_shifted") if s in set(rows["split"])]
    if not tasks or not splits:
        raise ValueError("no fine-tuning results to plot")
    fig, axes = plt.subplots(len(tasks), len(splits), figsize=(4.2 * len(splits), 3.2 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        for j, split in enumerate(splits):
            ax = axes[i][j]
            cell = rows.filter((pl.col("task") == task) & (pl.col("split") == split))
            for method in [m for m in METHOD_ORDER if m in set(cell["method"])]:
                line = cell.filter(pl.col("method") == method).with_columns(
                    pl.col("regime").map_elements(lambda r: min(regime_order(r), 100.0),
                                                  return_dtype=pl.Float64).alias("percent")
                ).sort("percent")
                reference_row = method in REFERENCE_METHODS
                ax.errorbar(line["percent"], line["value"],
                            yerr=line["spread"].fill_null(0.0), marker="x" if reference_row
                            else "o", capsize=3, label=method,
                            linestyle="--" if reference_row else "-",
                            color="black" if reference_row else None)
            reference = cell.filter(pl.col("reference").is_not_null())
            if len(reference):
                ax.axhline(reference["reference"].mean(), color="grey", linestyle="--",
                           linewidth=1, label=reference["reference_kind"][0])
            regimes = sorted(set(cell["regime"]), key=regime_order)
            _log_ticks(ax, [min(regime_order(r), 100.0) for r in regimes],
                       [regime_label(r) for r in regimes])
            ax.set_xlabel("training images")
            ax.set_ylabel(f"{task} {PRIMARY_METRIC[task]}")
            ax.set_title(f"{task}: {SPLIT_NAMES.get(split, split)} test")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    save_figure(fig, path)


def _retrieval(table: pl.DataFrame, metric: str) -> dict[str, tuple[float, float | None]]:
    rows = table.filter((pl.col("task") == "retrieval") & (pl.col("metric") == metric))
    return {r["method"]: (r["value"], r["spread"]) for r in rows.iter_rows(named=True)}


def _rerankers(values: dict[str, tuple[float, float | None]]) -> list[tuple[int, str]]:
    return sorted((k, name) for name in values if (k := rerank_k(name)) is not None)


def plot_recall_vs_k(table: pl.DataFrame, path: str | Path) -> None:
    """Text -> image R@1/5/10 of re-ranking the Fast top-K, against K; dashed: Slow alone,
    dotted: Fast alone, dash-dotted: the teachers' ridge reference, wide and pale: the
    caption-ambiguity ceiling."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for metric, colour in (("R@1", "C0"), ("R@5", "C1"), ("R@10", "C2")):
        values = _retrieval(table, f"t2i_{metric}")
        rerank = _rerankers(values)
        if not rerank:
            raise ValueError("no re-ranking results to plot")
        ax.errorbar([k for k, _ in rerank], [values[n][0] for _, n in rerank],
                    yerr=[values[n][1] or 0.0 for _, n in rerank], marker="o", capsize=3,
                    color=colour, label=f"rerank {metric}")
        if "slow" in values:
            ax.axhline(values["slow"][0], color=colour, linestyle="--", linewidth=1,
                       label=f"Slow {metric}")
        if "ceiling" in values:
            ax.axhline(values["ceiling"][0], color=colour, linestyle="-", linewidth=4, alpha=0.2,
                       label=f"ceiling {metric}")
        if "fast_distilled" in values:
            ax.axhline(values["fast_distilled"][0], color=colour, linestyle=":", linewidth=1,
                       label=f"Fast distilled {metric}")
        if "teacher_ridge" in values:
            ax.axhline(values["teacher_ridge"][0], color=colour, linestyle="-.", linewidth=1,
                       label=f"teacher ridge {metric}")
    ks = [k for k, _ in _rerankers(_retrieval(table, "t2i_R@1"))]
    _log_ticks(ax, ks, [str(k) for k in ks])
    ax.set_xlabel("K (Fast candidates re-scored by Slow)")
    ax.set_ylabel("text -> image recall (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    save_figure(fig, path)


def plot_accuracy_vs_latency(table: pl.DataFrame, path: str | Path) -> None:
    """Text -> image R@1 against ms per query: Fast, Fast distilled, re-ranking at each K, Slow."""
    recall, latency = _retrieval(table, "t2i_R@1"), _retrieval(table, "total_ms")
    if not latency:
        raise ValueError("no retrieval results to plot")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    rerank = _rerankers(recall)
    if rerank:
        ax.plot([latency[n][0] for _, n in rerank], [recall[n][0] for _, n in rerank],
                marker="o", color="C0", label="rerank@K")
        for k, name in rerank:
            ax.annotate(f"K={k}", (latency[name][0], recall[name][0]), fontsize=7,
                        textcoords="offset points", xytext=(4, -9))
    for name, marker, colour in (("fast", "s", "C1"), ("fast_distilled", "D", "C2"),
                                 ("slow", "*", "C3")):
        if name in recall:
            ax.errorbar(latency[name][0], recall[name][0], yerr=recall[name][1] or 0.0,
                        marker=marker, markersize=9, color=colour, linestyle="none", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("ms per text query (Fast + Slow parts)")
    ax.set_ylabel("text -> image R@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
