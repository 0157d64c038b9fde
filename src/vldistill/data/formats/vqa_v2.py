"""VQA v2 in its official question and annotation json files.

Read: questions ``{"data_subtype", "questions": [{"image_id", "question", "question_id"}]}`` and
annotations ``{"annotations": [{"question_id", "image_id", "question_type", "answer_type",
"multiple_choice_answer", "answers": [{"answer", ...}] x 10}]}``. Image ids are
``coco-<image_id>`` (the same as the COCO Karpathy loader's); paths are
``<image_dir>/<subtype>/COCO_<subtype>_<12-digit id>.jpg``. Question ids stay the official
integers (as strings), so predictions map back to the official evaluation.

The test2015 answers are not public, so the usual practice is followed: train2014 trains and
val2014 is cut by image into val and test halves (``by_image``); pass another seed or mapping
to change it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from vldistill.data.formats.annotations import field, read_json, rel_path
from vldistill.data.formats.dataset import Tables, finish
from vldistill.data.formats.splits import FormatError, SplitRule, assign_splits, by_image
from vldistill.data.manifest import SCHEMAS
from vldistill.eval.vqa import official_normalize_answer

VQA_V2_SPLITS: dict[str, SplitRule] = {"train2014": "train", "val2014": by_image(seed=0)}


def coco_image_path(image_dir: str | Path, subtype: str, image_id: int) -> str:
    """Where the COCO release puts an image: ``<subtype>/COCO_<subtype>_<12-digit id>.jpg``."""
    return rel_path(image_dir, subtype, f"COCO_{subtype}_{image_id:012d}.jpg")


def _majority(answers: list[str]) -> str:
    # Only for files without multiple_choice_answer: the most common normalised answer, ties
    # broken alphabetically so the choice does not depend on annotator order.
    counts = Counter(official_normalize_answer(a) for a in answers)
    return min(counts, key=lambda a: (-counts[a], a)) if counts else ""


def _rows(questions_path: Path, annotations_path: Path, image_dir: str | Path,
          official: str) -> list[dict]:
    questions = read_json(questions_path)
    annotations = read_json(annotations_path)
    for path, data, key in ((questions_path, questions, "questions"),
                            (annotations_path, annotations, "annotations")):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise FormatError(f"{path}: expected an object with a {key!r} list (VQA v2 format)")
    subtype = questions.get("data_subtype") or official
    by_question = {}
    for k, annotation in enumerate(annotations["annotations"]):
        by_question[field(annotation, "question_id", f"{annotations_path} annotations[{k}]")] = (
            annotation)
    rows = []
    for k, question in enumerate(questions["questions"]):
        where = f"{questions_path} questions[{k}]"
        question_id = field(question, "question_id", where)
        image_id = int(field(question, "image_id", where))
        annotation = by_question.get(question_id)
        if annotation is None:
            raise FormatError(f"{where}: question_id {question_id} has no annotation in "
                              f"{annotations_path}; are the two files of the same split?")
        a_where = f"{annotations_path} question_id {question_id}"
        if int(field(annotation, "image_id", a_where)) != image_id:
            raise FormatError(f"{a_where}: image_id {annotation['image_id']} differs from the "
                              f"question's {image_id} in {questions_path}")
        answers = [str(field(a, "answer", a_where)) for a in field(annotation, "answers", a_where)]
        rows.append({
            "image_id": f"coco-{image_id}",
            "image_path": coco_image_path(image_dir, subtype, image_id),
            "question_id": str(question_id),
            "question": field(question, "question", where),
            "question_type": annotation.get("question_type"),
            "answer_type": annotation.get("answer_type"),
            "answers": answers,
            "multiple_choice_answer": annotation.get("multiple_choice_answer")
            or _majority(answers),
        })
    return rows


def load_vqa_v2(files: Mapping[str, tuple[str | Path, str | Path]], root: str | Path,
                image_dir: str | Path, *,
                splits: Mapping[str, SplitRule] = VQA_V2_SPLITS) -> Tables:
    """Questions and images per split.

    ``files`` maps an official split name (``train2014``, ``val2014``) to its (questions json,
    annotations json); ``splits`` maps the same names to a split rule. ``image_dir`` (relative to
    ``root``) holds the ``<subtype>/`` image folders of the COCO release.
    """
    tasks = {
        official: {"vqa": pl.DataFrame(_rows(Path(q), Path(a), image_dir, official),
                                       schema=SCHEMAS["vqa"])}
        for official, (q, a) in files.items()
    }
    return finish(root, assign_splits(tasks, splits, "VQA v2"))
