"""The data stage: produce a dataset's manifests (and images), and its text corpus."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from vldistill.data.manifest import SPLITS, TASKS, collect_texts, manifest_path, read_manifest
from vldistill.data.synthetic import SyntheticConfig, generate
from vldistill.io import atomic_output, write_json


def make_synthetic(params: dict, seed: int, root: str | Path, summary_path: str | Path) -> dict:
    """Generate the synthetic scenes benchmark under ``root`` and write a JSON summary."""
    summary = generate(SyntheticConfig.from_dict(params), root, seed=seed)
    write_json(summary, summary_path)
    return summary


def make_text_corpus(root: str | Path, out_path: str | Path) -> pl.DataFrame:
    """Every distinct text of every task and split: what the text teacher must encode."""
    frames: dict[str, list[pl.DataFrame]] = {task: [] for task in TASKS}
    for split in SPLITS:
        for task in TASKS:
            frames[task].append(read_manifest(manifest_path(root, split, task), task))
    corpus = collect_texts({task: pl.concat(parts) for task, parts in frames.items()})
    with atomic_output(out_path) as tmp:
        corpus.write_parquet(tmp, statistics=False)
    return corpus

