"""Effects: one method minus another on the same test items and seeds, with a bootstrap
confidence interval (docs/design.md, Evidence).

The outcomes are per item: a fine-tuning job's item_scores.parquet (each test item's VQA
accuracy, or 1 / 0 for a right / wrong VE label or VCR choice) and a retrieval model's
ranks.parquet (each text query's gold-image place, read as its chance of rank <= K over the
random order of ties, in percent, so that the mean over queries is R@K). A
difference is the mean over seeds and items of A's score minus B's on the same item under the
same seeds.

Pairing is strict: A and B must have been run on the same seeds and scored on the same items,
or the comparison fails naming what differs (a silently dropped item or seed would change what
the interval is about). A run's seeds are its metrics file's ``seeds`` record (data, student,
fine-tuning, retrieval, ...) restricted to the stages every compared run records, so a stage
only one method has does not keep two runs of the same seeds apart.

The interval is a percentile bootstrap over the two sources of chance: seeds are drawn with
replacement, then items. Items are drawn once per resample for all drawn seeds, not anew for
each seed: every seed scores the same test items, so an item that is hard for one seed is hard
for all, and independent draws per seed would average that away and narrow the interval. Every
effect restarts the generator from the configured seed, so adding a method moves no other
interval.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from vldistill.config import read_section
from vldistill.eval.retrieval import KS
from vldistill.io import atomic_output
from vldistill.results.finetune import METRICS, regime_order
from vldistill.results.ranks import read_query_ranks
from vldistill.results.retrieval import rerank_k

# (A, B) for every effect A - B the results report, where both were run
FINETUNE_EFFECTS: tuple[tuple[str, str], ...] = (
    ("mad", "baseline"), ("kd", "baseline"),
    ("mad-ts", "mad"), ("mad-cw", "mad"), ("mad-af", "mad"),  # what each component adds
)
RETRIEVAL_EFFECTS: tuple[tuple[str, str], ...] = (("fast_distilled", "fast"),)  # + rerank - slow

OUTCOME_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "task": pl.String, "regime": pl.String, "split": pl.String,
    "method": pl.String, "metric": pl.String, "seeds": pl.String, "item": pl.String,
    "score": pl.Float64,
}
EFFECT_SCHEMA: dict[str, Any] = {
    "effect": pl.String, "dataset": pl.String, "task": pl.String, "regime": pl.String,
    "split": pl.String, "metric": pl.String, "difference": pl.Float64, "ci_low": pl.Float64,
    "ci_high": pl.Float64, "n": pl.Int64, "seeds": pl.Int64, "excludes_zero": pl.Boolean,
}
CELL: tuple[str, ...] = ("dataset", "task", "regime", "split", "metric")
TASK_ORDER: tuple[str, ...] = (*METRICS, "retrieval")
METRIC_ORDER: dict[str, tuple[str, ...]] = {**METRICS,
                                            "retrieval": tuple(f"t2i_R@{k}" for k in KS)}


@dataclass(frozen=True)
class BootstrapConfig:
    """The config's ``effects`` section (its defaults live in the schema)."""

    resamples: int
    level: float
    seed: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BootstrapConfig:
        cfg = read_section(cls, d, "effects")
        if cfg.resamples < 1 or not 0 < cfg.level < 1:
            raise ValueError(f"effects needs resamples >= 1 and 0 < level < 1, got {cfg}")
        return cfg


@dataclass(frozen=True)
class Effect:
    difference: float
    ci_low: float
    ci_high: float
    n: int  # items
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(differences: np.ndarray, cfg: BootstrapConfig) -> Effect:
    """The mean of ``differences`` ([seeds, items], or [items] for one seed: A - B per item)
    and its percentile bootstrap interval, resampling seeds, then items (shared by the seeds)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[None, :] if d.ndim == 1 else d
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"differences must be a non-empty [seeds, items] array, got {d.shape}")
    n_seeds, n_items = d.shape
    rng = np.random.default_rng(cfg.seed)
    estimates = np.empty(cfg.resamples)
    chunk = max(1, (1 << 22) // n_items)  # bounds the [chunk, items] draw counts in memory
    for start in range(0, cfg.resamples, chunk):
        size = min(chunk, cfg.resamples - start)
        # how often each item / seed is drawn: a resample's mean is counts-weighted, so the
        # draws stay a matrix product however many items there are
        items = _draw_counts(rng, size, n_items)
        seeds = _draw_counts(rng, size, n_seeds)
        per_seed = (d @ items.T).T / n_items  # [size, seeds]: each seed on the drawn items
        estimates[start:start + size] = (seeds * per_seed).sum(axis=1) / n_seeds
    tail = (1 - cfg.level) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return Effect(float(d.mean()), float(low), float(high), n_items, n_seeds)


def _draw_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """[size, n]: how often each of n things is drawn in each of ``size`` draws of n with
    replacement."""
    draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)


def paired_differences(a: pl.DataFrame, b: pl.DataFrame, what: str = "A - B") -> np.ndarray:
    """A's score minus B's, [seeds, items], from two (unit, item, score) frames; ``unit`` names
    the seeds a row was run with. Fails unless both hold the same seeds, each seed the same items
    as every other, and no (unit, item) twice."""
    for name, frame in (("A", a), ("B", b)):
        if frame.is_empty():
            raise ValueError(f"{what}: {name} has no items")
        if not frame.select("unit", "item").is_unique().all():
            raise ValueError(f"{what}: {name} scores an item twice under the same seeds")
    units_a, units_b = set(a["unit"]), set(b["unit"])
    if units_a != units_b:
        raise ValueError(f"{what}: the two were run on different seeds: only A "
                         f"{sorted(units_a - units_b)}, only B {sorted(units_b - units_a)}")
    joined = a.join(b, on=["unit", "item"], how="inner", suffix="_b")
    if len(joined) != len(a) or len(joined) != len(b):
        only_a = a.join(b, on=["unit", "item"], how="anti")["item"].unique().sort()
        only_b = b.join(a, on=["unit", "item"], how="anti")["item"].unique().sort()
        raise ValueError(f"{what}: the two were scored on different items: {len(only_a)} only "
                         f"in A (e.g. {only_a.head(3).to_list()}), {len(only_b)} only in B "
                         f"(e.g. {only_b.head(3).to_list()})")
    units = sorted(units_a)
    items = sorted(set(joined["item"]))
    if len(joined) != len(units) * len(items):
        raise ValueError(f"{what}: the seeds were scored on different items; a paired bootstrap "
                         "over seeds needs the same items under every seed")
    ordered = joined.sort(["unit", "item"])
    return (ordered["score"] - ordered["score_b"]).to_numpy().reshape(len(units), len(items))


def seed_units(seeds: pl.Series) -> pl.Series:
    """Each run's seeds (JSON objects) restricted to the stages every run in ``seeds`` has: the
    unit on which two methods' runs are paired."""
    parsed = [json.loads(s) for s in seeds.to_list()]
    shared = set.intersection(*(set(p) for p in parsed)) if parsed else set()
    return pl.Series("unit", [json.dumps({k: p[k] for k in sorted(shared)}) for p in parsed])


def compare(outcomes: pl.DataFrame, a: str, b: str, cfg: BootstrapConfig) -> list[dict[str, Any]]:
    """The effect ``a - b`` in every cell (dataset, task, regime, split, metric) with both."""
    rows = []
    both = outcomes.filter(pl.col("method").is_in([a, b]))
    for cell, group in both.group_by(list(CELL), maintain_order=True):
        if set(group["method"]) != {a, b}:
            continue
        group = group.with_columns(seed_units(group["seeds"]))
        runs = group.select("method", "unit", "seeds").unique()
        if runs.select("method", "unit").is_duplicated().any():
            raise ValueError(f"{a} - {b} {cell}: several runs of one method share the seeds "
                             f"{runs['unit'][0]}; the pairing is ambiguous")
        key = dict(zip(CELL, cell, strict=True))
        side = {m: group.filter(pl.col("method") == m).select("unit", "item", "score")
                for m in (a, b)}
        differences = paired_differences(side[a], side[b], f"{a} - {b} {key}")
        effect = paired_bootstrap(differences, cfg)
        rows.append({"effect": f"{a} - {b}", **key, "difference": effect.difference,
                     "ci_low": effect.ci_low, "ci_high": effect.ci_high, "n": effect.n,
                     "seeds": effect.seeds, "excludes_zero": effect.excludes_zero})
    return rows


def _seeds(record: dict[str, Any], path: str | Path) -> str:
    if "seeds" not in record:
        raise ValueError(f"{path}: no seeds record; re-run the job that wrote it")
    return json.dumps(record["seeds"], sort_keys=True)


def finetune_outcomes(runs: Iterable[tuple[str | Path, str | Path]],
                      dataset: str) -> pl.DataFrame:
    """Per-item scores of fine-tuning jobs, from (metrics.json, item_scores.parquet) pairs."""
    frames = []
    for metrics_path, scores_path in runs:
        metrics = json.loads(Path(metrics_path).read_text())
        items = pl.read_parquet(scores_path)
        frames.append(items.select(
            pl.lit(dataset).alias("dataset"), pl.lit(metrics["task"]).alias("task"),
            pl.lit(metrics["regime"]).alias("regime"), "split",
            pl.lit(metrics["method"]).alias("method"), "metric",
            pl.lit(_seeds(metrics, metrics_path)).alias("seeds"), "item", "score"))
    return _outcomes(frames)


def retrieval_outcomes(runs: Iterable[tuple[str | Path, str | Path]], dataset: str,
                       split: str, ks: Sequence[int] = KS) -> pl.DataFrame:
    """Per-query text -> image hits of retrieval models, from (result JSON, ranks.parquet)
    pairs: 100 x P(the gold image ranks <= K) over the random order of ties (100 or 0 without
    one), so a model's mean over queries is its R@K in percent."""
    frames = []
    for result_path, ranks_path in runs:
        result = json.loads(Path(result_path).read_text())
        queries, ranks = read_query_ranks(ranks_path)
        base = {"dataset": dataset, "task": "retrieval", "regime": "full", "split": split,
                "method": result["model"], "seeds": _seeds(result, result_path)}
        for k in ks:
            frames.append(pl.DataFrame({**{c: [v] * len(queries) for c, v in base.items()},
                                        "metric": [f"t2i_R@{k}"] * len(queries),
                                        "item": queries,
                                        "score": (100 * ranks.within(k)).tolist()}))
    return _outcomes(frames)


def _outcomes(frames: list[pl.DataFrame]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    return pl.concat([f.select(list(OUTCOME_SCHEMA)).cast(OUTCOME_SCHEMA) for f in frames])


def comparisons(outcomes: pl.DataFrame) -> list[tuple[str, str]]:
    """Every (A, B) pair to report: the fine-tuning effects, Fast distillation, and each
    re-ranker against Slow (by K)."""
    rerankers = sorted({m for m in outcomes["method"] if rerank_k(m) is not None}, key=rerank_k)
    return [*FINETUNE_EFFECTS, *RETRIEVAL_EFFECTS, *((m, "slow") for m in rerankers)]


def compute_effects(outcomes: pl.DataFrame, cfg: BootstrapConfig) -> pl.DataFrame:
    """Every reportable effect in every cell where both methods ran, in reading order."""
    rows = [row for a, b in comparisons(outcomes) for row in compare(outcomes, a, b, cfg)]
    table = pl.DataFrame(rows, schema=EFFECT_SCHEMA)
    effect_order = {f"{a} - {b}": i for i, (a, b) in enumerate(comparisons(outcomes))}

    def order(r: dict[str, Any]) -> tuple:
        return (r["dataset"], TASK_ORDER.index(r["task"]), effect_order[r["effect"]],
                regime_order(r["regime"]), r["split"], METRIC_ORDER[r["task"]].index(r["metric"]))

    return pl.DataFrame(sorted(table.iter_rows(named=True), key=order), schema=EFFECT_SCHEMA)


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def markdown(effects: pl.DataFrame, cfg: BootstrapConfig) -> str:
    """A table per dataset and task: difference, interval, n, seeds and whether it excludes 0."""
    level = f"{100 * cfg.level:g} %"
    out = ["# Effects", "",
           f"Paired differences A - B on the same test items and seeds, with percentile "
           f"bootstrap {level} intervals ({cfg.resamples} resamples of seeds, then items; "
           f"generator seed {cfg.seed}). Fine-tuning metrics are fractions; retrieval recalls "
           "are percentage points. n is the number of items (queries) paired per seed.", ""]
    if effects.is_empty():
        return "\n".join([*out, "No effect to report: no two methods to compare were run.", ""])
    for (dataset, task), part in effects.group_by(["dataset", "task"], maintain_order=True):
        digits = 1 if task == "retrieval" else 3
        out += [f"## {dataset}: {task}", "",
                f"| effect | regime | split | metric | difference | {level} CI | n | seeds "
                "| CI excludes 0 |", "|---|---|---|---|---:|---:|---:|---:|---|"]
        for r in part.iter_rows(named=True):
            out.append(f"| {r['effect']} | {r['regime']} | {r['split']} | {r['metric']} | "
                       f"{_signed(r['difference'], digits)} | [{_signed(r['ci_low'], digits)}, "
                       f"{_signed(r['ci_high'], digits)}] | {r['n']} | {r['seeds']} | "
                       f"{'yes' if r['excludes_zero'] else 'no'} |")
        out.append("")
    return "\n".join(out)


def summary_lines(effects: pl.DataFrame) -> list[str]:
    """The results table's short Effects section: per effect, how many intervals exclude 0."""
    out = ["## Effects", ""]
    if effects.is_empty():
        return [*out, "No paired effects: no two methods to compare were run.", ""]
    out += ["Paired differences with bootstrap intervals, each with its n, in "
            "[effects.md](effects.md) (all rows in effects.csv):", ""]
    for (effect,), part in effects.group_by(["effect"], maintain_order=True):
        out.append(f"- {effect}: {int(part['excludes_zero'].sum())} of {len(part)} intervals "
                   "exclude 0")
    return [*out, ""]


def read_effects(path: str | Path) -> pl.DataFrame:
    """results/effects.csv with its column types."""
    return pl.read_csv(path, schema=EFFECT_SCHEMA)


def write_effects(*, finetune_runs: Iterable[tuple[str | Path, str | Path]],
                  retrieval_runs: Iterable[tuple[str | Path, str | Path]], dataset: str,
                  retrieval_split: str, config: dict[str, Any], csv_path: str | Path,
                  markdown_path: str | Path) -> pl.DataFrame:
    """Read every run's per-item outcomes, compute the effects, write the CSV and Markdown."""
    cfg = BootstrapConfig.from_dict(config)
    outcomes = pl.concat([finetune_outcomes(finetune_runs, dataset),
                          retrieval_outcomes(retrieval_runs, dataset, retrieval_split)])
    effects = compute_effects(outcomes, cfg)
    with atomic_output(csv_path) as tmp:
        effects.write_csv(tmp)
    with atomic_output(markdown_path) as tmp:
        Path(tmp).write_text(markdown(effects, cfg))
    return effects
