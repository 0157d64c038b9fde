"""The data stage: produce a dataset's manifests (and images), and its text corpus."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from vldistill.data.manifest import (
    SPLITS,
    TASKS,
    TEACHER_TEXT_COLUMNS,
    collect_texts,
    manifest_path,
    read_manifest,
)
from vldistill.data.synthetic import SyntheticConfig, generate
from vldistill.data.validate import validate_dataset
from vldistill.io import atomic_output, write_json


def make_synthetic(params: dict, seed: int, root: str | Path, summary_path: str | Path) -> dict:
    """Generate the synthetic scenes benchmark under ``root`` and write a JSON summary."""
    summary = generate(SyntheticConfig.from_dict(params), root, seed=seed)
    write_json(summary, summary_path)
    return summary


def check_examples(root: str | Path, skip_bad_examples: bool,
                   report_path: str | Path) -> dict:
    """Check every example of the dataset (see data/validate.py); write what was checked and
    skipped to ``report_path``."""
    report = validate_dataset(root, skip_bad_examples)
    write_json(report, report_path)
    return report


def make_text_corpus(root: str | Path, out_path: str | Path,
                     splits: Sequence[str] = SPLITS) -> pl.DataFrame:
    """The distinct texts of ``splits`` that a teacher target or probe feature is read for
    (captions, questions, hypotheses, VCR answers and rationales; not hard negatives)."""
    frames: dict[str, list[pl.DataFrame]] = {task: [] for task in TASKS}
    for split in splits:
        for task in TASKS:
            frames[task].append(read_manifest(manifest_path(root, split, task), task))
    corpus = collect_texts({task: pl.concat(parts) for task, parts in frames.items()},
                           columns=TEACHER_TEXT_COLUMNS)
    with atomic_output(out_path) as tmp:
        corpus.write_parquet(tmp, statistics=False)
    return corpus

