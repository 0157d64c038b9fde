"""Check every example of a dataset before anything trains on it; fail naming it, or drop it.

The data stage of every source (the synthetic generator, real-format loaders, a user's own
manifests) ends here, so later stages can trust the manifests: each image decodes, each text is
non-empty, each question has answers, each label is one the task knows. Structural problems (an
unreadable manifest, a missing column, a wrong type) always fail. Per-example problems fail with
the file, row and reason of each, or, with ``skip_bad_examples: true``, the bad rows are dropped
(a bad image takes every task row that uses it), counted per split, table and reason, and the
manifests are rewritten without them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from vldistill.data.images import decode_rgb
from vldistill.data.manifest import (
    SPLITS,
    TABLES,
    TASKS,
    VE_LABELS,
    BadExampleError,
    manifest_path,
    read_manifest,
    write_manifest,
)
from vldistill.data.video import is_clip, read_clip

log = logging.getLogger(__name__)

VCR_CANDIDATES = 4
MAX_LISTED = 10  # problems spelled out in an error; the rest are counted


@dataclass(frozen=True)
class Problem:
    split: str
    table: str
    row: int  # 0-based row of the manifest
    key: str  # the row's id (image_id, question_id, ...)
    file: str  # the manifest the row is in (an image problem names its file in the reason)
    reason: str  # "<kind>: <specifics>" or just "<kind>"

    @property
    def kind(self) -> str:
        """The reason without its specifics ("unknown label", ...), for counting."""
        return self.reason.split(":")[0]

    def __str__(self) -> str:
        return f"{self.file} row {self.row} ({self.key}): {self.reason}"


def _blank(value: Any) -> bool:
    return value is None or not str(value).strip()


def _text_problems(column: str) -> Callable[[dict[str, Any]], str | None]:
    def check(row: dict[str, Any]) -> str | None:
        return f"empty {column}" if _blank(row[column]) else None
    return check


def _vqa_problem(row: dict[str, Any]) -> str | None:
    if _blank(row["question"]):
        return "empty question"
    answers = [a for a in (row["answers"] or []) if not _blank(a)]
    if not answers:
        return "question with no answers"
    if _blank(row["multiple_choice_answer"]):
        return "no multiple_choice_answer"
    return None


def _ve_problem(row: dict[str, Any]) -> str | None:
    if _blank(row["hypothesis"]):
        return "empty hypothesis"
    if row["label"] not in VE_LABELS:
        return f"unknown label: {row['label']!r} is not one of {list(VE_LABELS)}"
    return None


def _vcr_problem(row: dict[str, Any]) -> str | None:
    if _blank(row["question"]):
        return "empty question"
    for column, label in (("answers", "answer_label"), ("rationales", "rationale_label")):
        candidates = row[column] or []
        if len(candidates) != VCR_CANDIDATES or any(_blank(c) for c in candidates):
            return f"bad {column}: need {VCR_CANDIDATES} non-empty texts, got {candidates!r}"
        if row[label] is None or not 0 <= row[label] < VCR_CANDIDATES:
            return f"bad {label}: {row[label]!r} is not in 0..{VCR_CANDIDATES - 1}"
    return None


ROW_CHECKS: dict[str, tuple[str, Callable[[dict[str, Any]], str | None]]] = {
    "captions": ("caption_id", _text_problems("caption")),
    "vqa": ("question_id", _vqa_problem),
    "ve": ("pair_id", _ve_problem),
    "vcr": ("item_id", _vcr_problem),
}


def image_problems(root: Path, split: str, images: pl.DataFrame, file: str) -> list[Problem]:
    """Images whose id repeats, or whose file is missing, empty or does not decode (a video
    clip, by its suffix, is decoded as a clip)."""
    problems = []
    seen: set[str] = set()
    for row, (image_id, rel_path) in enumerate(
            zip(images["image_id"], images["image_path"], strict=True)):
        reason = None
        if _blank(image_id):
            reason = "empty image_id"
        elif image_id in seen:
            reason = f"duplicate image_id: {image_id!r}"
        elif _blank(rel_path):
            reason = "empty image_path"
        elif is_clip(rel_path):
            try:
                read_clip(root / rel_path, 1, 8)  # opens, counts and decodes the middle frame
            except BadExampleError as exc:
                reason = f"clip does not decode: {exc}"
        else:
            try:
                pixels = np.asarray(decode_rgb(root / rel_path))
                if pixels.size == 0:
                    reason = f"image has no pixels: {root / rel_path}"
            except BadExampleError as exc:
                reason = f"image does not decode: {exc}"
        seen.add(image_id)
        if reason:
            problems.append(Problem(split, "images", row, str(image_id), file, reason))
    return problems


def task_problems(split: str, table: str, df: pl.DataFrame, good_images: set[str],
                  file: str) -> list[Problem]:
    """Rows of a task table that are malformed or refer to an unusable image."""
    key, check = ROW_CHECKS[table]
    problems = []
    for row, record in enumerate(df.iter_rows(named=True)):
        reason = None
        if record["image_id"] not in good_images:
            reason = f"unusable image: {record['image_id']!r}"
        else:
            reason = check(record)
        if reason is None and _blank(record[key]):
            reason = f"empty {key}"
        if reason:
            problems.append(Problem(split, table, row, str(record[key]), file, reason))
    return problems


def split_problems(root: str | Path, split: str,
                   tables: Sequence[str] = TABLES) -> tuple[dict[str, pl.DataFrame], list[Problem]]:
    """The split's manifests (structural errors raise ManifestError) and every bad example."""
    root = Path(root)
    frames = {t: read_manifest(manifest_path(root, split, t), t) for t in tables}
    file = {t: str(manifest_path(root, split, t)) for t in tables}
    problems = image_problems(root, split, frames["images"], file["images"])
    bad_rows = {p.row for p in problems}
    good = {image_id for row, image_id in enumerate(frames["images"]["image_id"])
            if row not in bad_rows}
    for table in tables:
        if table in TASKS:
            problems += task_problems(split, table, frames[table], good, file[table])
    return frames, problems


def validate_dataset(root: str | Path, skip_bad_examples: bool,
                     splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """Check every split; raise BadExampleError, or drop the bad rows and rewrite the manifests.

    Returns {"checked": {split: {table: rows}}, "skipped": {split: {table: rows}},
    "reasons": {reason: rows}}, written by the data rule next to the manifests.
    """
    report: dict[str, Any] = {"checked": {}, "skipped": {}, "reasons": {}}
    everything: list[Problem] = []
    for split in splits:
        frames, problems = split_problems(root, split)
        report["checked"][split] = {t: df.height for t, df in frames.items()}
        report["skipped"][split] = {t: 0 for t in frames}
        everything += problems
        if not problems or not skip_bad_examples:
            continue
        for table, df in frames.items():
            bad = {p.row for p in problems if p.table == table}
            if bad:
                kept = df.with_row_index("_row").filter(~pl.col("_row").is_in(sorted(bad)))
                write_manifest(kept.drop("_row"), manifest_path(root, split, table), table)
                report["skipped"][split][table] = len(bad)
    report["reasons"] = dict(Counter(p.kind for p in everything).most_common())
    if everything and not skip_bad_examples:
        listed = "\n".join(f"  - {p}" for p in everything[:MAX_LISTED])
        more = len(everything) - MAX_LISTED
        raise BadExampleError(
            f"{len(everything)} bad example(s) in {root}:\n{listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nFix them, or set skip_bad_examples: true to drop them (counted in "
              "validation.json and in the results table)."
        )
    for problem in everything:
        log.warning("skipped %s", problem)
    if everything:
        log.warning("skipped %d bad example(s): %s", len(everything), report["reasons"])
    return report

