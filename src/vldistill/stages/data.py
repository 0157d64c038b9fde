"""The data stage: produce a dataset's manifests (and images), and its text corpus."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from vldistill.data.formats import (
    DEFAULT_SPLITS,
    LOADERS,
    SplitRule,
    Tables,
    by_image,
    combine,
    images_in_several_splits,
    write_dataset,
)
from vldistill.data.formats.vatex import require_clips
from vldistill.data.image_roots import link_image_roots, resolve
from vldistill.data.manifest import (
    SPLITS,
    TASKS,
    TEACHER_TEXT_COLUMNS,
    collect_texts,
    manifest_path,
    read_manifest,
)
from vldistill.data.validate import validate_dataset
from vldistill.data.video import write_clip
from vldistill.io import atomic_output, write_json
from vldistill.synthetic.images import SyntheticConfig, generate
from vldistill.synthetic.video import SyntheticVideoConfig, generate_video

log = logging.getLogger(__name__)


def make_synthetic(params: dict, seed: int, root: str | Path, summary_path: str | Path) -> dict:
    """Generate the synthetic scenes benchmark under ``root`` and write a JSON summary."""
    summary = generate(SyntheticConfig.from_dict(params), root, seed=seed)
    write_json(summary, summary_path)
    return summary


def make_synthetic_video(params: dict, seed: int, root: str | Path,
                         summary_path: str | Path) -> dict:
    """Generate the synthetic video scenes under ``root`` (lossless clips) and a JSON summary."""
    summary = generate_video(SyntheticVideoConfig.from_dict(params), root, seed=seed,
                             write_clip=write_clip)
    write_json(summary, summary_path)
    return summary


def split_rules(splits: dict[str, Any] | None, fmt: str, seed: int) -> dict[str, SplitRule]:
    """A source's ``splits`` from config: official split -> our split, null (dropped) or
    {split: fraction} (cut by image, seeded); without it the format's default mapping."""
    if splits is None:
        return DEFAULT_SPLITS[fmt]
    return {official: by_image(seed, rule) if isinstance(rule, dict) else rule
            for official, rule in splits.items()}


def load_source(source: dict[str, Any], root: Path, seed: int) -> Tables:
    """One configured source (format, annotations, images, splits) read by its loader."""
    fmt, annotations = source["format"], source["annotations"]
    image_dir = Path("images") / source["images"]
    rules = split_rules(source.get("splits"), fmt, seed)
    if fmt == "karpathy":
        if not isinstance(annotations, str):
            raise ValueError("sources[].annotations: a karpathy source takes one json file")
        return LOADERS[fmt](resolve(root, annotations), root, image_dir, splits=rules)
    if not isinstance(annotations, dict):
        raise ValueError(f"sources[].annotations: a {fmt} source takes {{official split: file}}")
    files = {official: (tuple(resolve(root, p) for p in path) if isinstance(path, list)
                        else resolve(root, path))
             for official, path in annotations.items()}
    tables = LOADERS[fmt](files, root, image_dir, splits=rules)
    if fmt == "vatex":  # YouTube clips are placed by hand: say exactly which are missing
        require_clips(root, tables)
    return tables


def require_training_rows(counts: dict[str, dict[str, int]], needs: Sequence[str],
                          root: str | Path) -> None:
    """Fail naming the stage when a table the configured stages train on has no train rows
    (e.g. a source's splits mapped nothing to train): now, not minutes into pre-training."""
    stage = {"captions": "pre-training (and retrieval)", "vqa": "the vqa task",
             "ve": "the ve task", "vcr": "the vcr task"}
    empty = [table for table in needs if not counts.get("train", {}).get(table)]
    if empty:
        have = "; ".join(f"{split}: " + ", ".join(f"{t} {n}" for t, n in tables.items())
                         for split, tables in counts.items())
        lacking = "; ".join(f"{stage.get(t, t)} needs {t} in the train split" for t in empty)
        raise ValueError(
            f"{root}: {lacking}, but the manifests hold none ({have}). Map an official split to "
            "train in sources[].splits, add a source with training data, or drop the stage "
            "(finetune.tasks, the retrieval section)")


def make_from_sources(sources: Sequence[dict[str, Any]], image_roots: dict[str, list[str]],
                      seed: int, root: str | Path, summary_path: str | Path,
                      needs: Sequence[str] = ()) -> dict:
    """A real dataset: link its image folders, read every source in its official format and
    write the manifests; the summary records counts and images shared between splits.
    ``needs``: the tables the configured stages train on, each checked to have train rows."""
    start = time.perf_counter()
    root = Path(root)
    unknown = sorted({s["images"] for s in sources} - set(image_roots))
    if unknown:
        raise ValueError(f"sources[].images names {unknown}, which image_roots does not define")
    linked = link_image_roots(root, image_roots)
    tables = combine(*(load_source(source, root, seed) for source in sources))
    counts = write_dataset(root, tables)
    require_training_rows(counts, needs, root)
    shared = images_in_several_splits(tables)
    if shared:
        # e.g. a Karpathy train image whose VQA v2 questions fell into test: reported, as papers do
        log.warning("%d image(s) appear in more than one split, e.g. %s", len(shared),
                    dict(list(shared.items())[:3]))
    summary = {"seed": seed, "sources": [s["format"] for s in sources], "image_roots": linked,
               "counts": counts, "images_in_several_splits": len(shared),
               "seconds": round(time.perf_counter() - start, 3)}
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

