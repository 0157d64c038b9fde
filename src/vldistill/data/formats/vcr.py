"""VCR in its official jsonl files (``train.jsonl``, ``val.jsonl``; test labels are hidden).

Read: ``img_fn`` (the image, relative to the ``vcr1images`` folder), ``objects`` (class names of
the detected boxes), ``question``, ``answer_choices`` and ``rationale_choices`` (token lists),
``answer_label``, ``rationale_label`` and ``annot_id`` (the item id). Image ids are
``vcr-<img_fn without extension>``; paths are ``<image_dir>/<img_fn>``.

Object references. A token that is a list of ints points at boxes by their index in
``objects``; it is rendered as the class name followed by the 1-based *box* index, so
``[2]`` with objects ``["person", "person", "horse"]`` reads ``horse3`` and ``[0, 1]`` reads
``person1 and person2`` (three or more: ``a, b and c``). The box index, not a per-class count,
keeps every tag unambiguous and reversible to its box (``objects[i]`` and the boxes in
``metadata_fn``), and the same box reads the same in the question, answers and rationales.

VCR's test labels are not public, so by default train trains and val is cut by image into val
and test halves (``by_image``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl

from vldistill.data.formats.annotations import field, read_jsonl, rel_path
from vldistill.data.formats.dataset import Tables, finish
from vldistill.data.formats.splits import FormatError, SplitRule, assign_splits, by_image
from vldistill.data.manifest import SCHEMAS

VCR_SPLITS: dict[str, SplitRule] = {"train": "train", "val": by_image(seed=0)}

# Tokens are space-joined; these attach to the word before them (punctuation, English clitics).
_NO_SPACE_BEFORE = re.compile(r" (?=[.,!?;:)\]]|'s\b|'re\b|'m\b|'ll\b|'ve\b|'d\b|n't\b)")
_NO_SPACE_AFTER = re.compile(r"(?<=[(\[]) ")


def object_tag(objects: list[str], index: int) -> str:
    return f"{objects[index]}{index + 1}"


def render(tokens: list[Any], objects: list[str], where: str) -> str:
    """A VCR token list as text, object references as tags (see the module docstring)."""
    words = []
    for token in tokens:
        if isinstance(token, list):
            if not token or any(not isinstance(i, int) or not 0 <= i < len(objects)
                                for i in token):
                raise FormatError(f"{where}: object reference {token} is not a list of "
                                  f"indices into the {len(objects)} objects")
            tags = [object_tag(objects, i) for i in token]
            words.append(tags[0] if len(tags) == 1
                         else ", ".join(tags[:-1]) + " and " + tags[-1])
        else:
            words.append(str(token))
    return _NO_SPACE_AFTER.sub("", _NO_SPACE_BEFORE.sub("", " ".join(words)))


def _rows(path: Path, image_dir: str | Path) -> list[dict]:
    rows = []
    for k, record in enumerate(read_jsonl(path)):
        where = f"{path} record {k}"
        for label in ("answer_label", "rationale_label"):
            if label not in record:
                raise FormatError(f"{where} has no {label!r}; VCR's test labels are hidden, so "
                                  "only train and val files can be loaded")
        objects = [str(o) for o in field(record, "objects", where)]
        img_fn = str(field(record, "img_fn", where))
        rows.append({
            "image_id": f"vcr-{PurePosixPath(img_fn).with_suffix('')}",
            "image_path": rel_path(image_dir, img_fn),
            "item_id": str(field(record, "annot_id", where)),
            "question": render(field(record, "question", where), objects, f"{where} question"),
            "answers": [render(c, objects, f"{where} answer_choices[{j}]")
                        for j, c in enumerate(field(record, "answer_choices", where))],
            "rationales": [render(c, objects, f"{where} rationale_choices[{j}]")
                           for j, c in enumerate(field(record, "rationale_choices", where))],
            "answer_label": record["answer_label"],
            "rationale_label": record["rationale_label"],
        })
    return rows


def load_vcr(files: Mapping[str, str | Path], root: str | Path, image_dir: str | Path, *,
             splits: Mapping[str, SplitRule] = VCR_SPLITS) -> Tables:
    """Items and images per split.

    ``files`` maps an official split (``train``, ``val``) to its jsonl; ``image_dir`` (relative
    to ``root``) is the ``vcr1images`` folder the ``img_fn`` paths are relative to.
    """
    tasks = {official: {"vcr": pl.DataFrame(_rows(Path(p), image_dir), schema=SCHEMAS["vcr"])}
             for official, p in files.items()}
    return finish(root, assign_splits(tasks, splits, "VCR"))
