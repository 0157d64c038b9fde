"""Training curves: each training stage's loss terms per step, and its held-out validation where
it measures one, read from the metrics.json every training job writes (``history``, and
``validation`` for pre-training). One panel per job; fine-tuning jobs of one task share a panel,
a line per method, so the methods' losses are seen side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402

from vldistill.results.plots import save_figure  # noqa: E402

COLUMNS = 3
NOT_CURVES = ("step", "lr")  # logged per step, but a schedule, not something learnt


def curve_label(path: str | Path) -> str:
    """What a metrics file is, from where the workflow keeps it: ``models/<dataset>/`` dropped,
    e.g. ``student/seed-0/pretrained`` or ``retrieval/seed-0/fast_distilled``."""
    parts = list(Path(path).with_suffix("").parts)
    if "models" in parts:
        parts = parts[parts.index("models") + 2:]
    if parts and parts[-1] == "metrics":
        parts = parts[:-1]
    return "/".join(parts)


def read_curves(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-step history, validation records) of one job; a job that logged no steps fails,
    since its panel would be empty."""
    metrics = json.loads(Path(path).read_text())
    history = metrics.get("history") or []
    if not history:
        raise ValueError(f"{path}: no training history to plot (metrics.json key 'history')")
    return history, metrics.get("validation") or []


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def is_rate(key: str) -> bool:
    """Accuracies (in [0, 1]) go on their own axis, beside the losses."""
    return "accuracy" in key or "_vs_" in key


def _draw_job(ax: plt.Axes, history: list[dict[str, Any]],
              validation: list[dict[str, Any]]) -> None:
    """Losses on the left axis, accuracies on the right; held-out (``val_``) as dashed markers."""
    records = [*history, *validation]
    keys = sorted({k for r in records for k in r} - set(NOT_CURVES) - {"val_n"})
    rates = ax.twinx() if any(is_rate(k) for k in keys) else None
    for i, key in enumerate(keys):  # one colour per key across both axes
        axis = rates if is_rate(key) else ax
        held_out = key.startswith("val_")
        steps, values = _series(validation if held_out and validation else history, key)
        style = "o--" if held_out else (":" if is_rate(key) else "-")
        axis.plot(steps, values, style, label=key, markersize=4, color=plt.cm.tab20(i % 20),
                  linewidth=1.8 if key == "loss" else 1.0)
    ax.set_ylabel("loss")
    ax.legend(fontsize=6, loc="upper left")
    if rates is not None:
        rates.set_ylabel("accuracy")
        rates.legend(fontsize=6, loc="upper right")


def _draw_methods(ax: plt.Axes, jobs: list[tuple[str, list[dict[str, Any]]]]) -> None:
    for method, history in jobs:
        steps, values = _series(history, "loss")
        ax.plot(steps, values, label=method, linewidth=1.2)
    ax.legend(fontsize=6)


def plot_training_curves(metrics_paths: Sequence[str | Path], path: str | Path) -> None:
    """Every job's curves (fine-tuning jobs grouped by task and regime) in one figure."""
    panels: dict[str, Any] = {}
    for metrics_path in metrics_paths:
        label = curve_label(metrics_path)
        history, validation = read_curves(metrics_path)
        parts = label.split("/")
        if len(parts) >= 3 and parts[0] not in ("student", "retrieval"):  # task/regime/method/...
            group = f"fine-tuning {parts[0]} {parts[1]}: loss"
            panels.setdefault(group, []).append(("/".join(parts[2:]), history))
        else:
            panels[label] = (history, validation)
    if not panels:
        raise ValueError("no training jobs to plot")
    rows = -(-len(panels) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4.6 * COLUMNS, 3.2 * rows), squeeze=False)
    for ax, (title, content) in zip(axes.flat, panels.items(), strict=False):
        if isinstance(content, list):
            _draw_methods(ax, content)
        else:
            _draw_job(ax, *content)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    save_figure(fig, path)
