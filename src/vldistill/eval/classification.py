"""Visual entailment accuracy, VCR metrics and the chance level of each."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["accuracy", "chance_level", "vcr_scores"]

_DEFAULT_CHOICES = {"ve": 3, "vcr": 4}


def _labels(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """A 1-D integer array; floats and strings are rejected rather than silently compared."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _paired(pred: Sequence[int] | np.ndarray, gold: Sequence[int] | np.ndarray, what: str):
    p, g = _labels(pred, f"{what} predictions"), _labels(gold, f"{what} gold labels")
    if p.shape != g.shape:
        raise ValueError(f"{len(p)} {what} predictions but {len(g)} gold labels")
    if p.size == 0:
        raise ValueError(f"no {what} items to score")
    return p, g


def accuracy(
    pred: Sequence[int] | np.ndarray,
    gold: Sequence[int] | np.ndarray,
    labels: Sequence[str] | None = None,
) -> dict[str, float | int]:
    """Fraction of items whose predicted class index equals the gold one, and ``n``.

    With ``labels`` (the name of each class index, e.g. ``VE_LABELS``) it adds, for each class,
    ``accuracy/<name>`` over the items whose gold class it is (that class's recall) and
    ``n/<name>``; a class absent from ``gold`` gets n 0 and accuracy NaN.
    """
    p, g = _paired(pred, gold, "classification")
    correct = p == g
    result: dict[str, float | int] = {"accuracy": float(correct.mean()), "n": int(p.size)}
    if labels is None:
        return result
    if len(set(labels)) != len(labels):
        raise ValueError(f"label names must be distinct, got {list(labels)}")
    for name, values in (("gold", g), ("predicted", p)):
        bad = values[(values < 0) | (values >= len(labels))]
        if bad.size:
            raise ValueError(f"{name} class {int(bad[0])} has no name in {len(labels)} labels")
    for k, name in enumerate(labels):
        of_class = g == k
        count = int(of_class.sum())
        result[f"accuracy/{name}"] = float(correct[of_class].mean()) if count else float("nan")
        result[f"n/{name}"] = count
    return result


def vcr_scores(
    answer_pred: Sequence[int] | np.ndarray,
    answer_gold: Sequence[int] | np.ndarray,
    rationale_pred: Sequence[int] | np.ndarray,
    rationale_gold: Sequence[int] | np.ndarray,
) -> dict[str, float | int]:
    """VCR's three accuracies over the same items.

    ``q2a``: answer chosen correctly. ``qa2r``: rationale chosen correctly, where the rationale
    predictions must come from a model given the question and the *gold* answer, as VCR's QA->R
    protocol does. ``q2ar``: both right on the same item (the official VCR definition), which is
    not q2a * qa2r unless the two errors are independent.
    """
    a_pred, a_gold = _paired(answer_pred, answer_gold, "answer")
    r_pred, r_gold = _paired(rationale_pred, rationale_gold, "rationale")
    if a_pred.shape != r_pred.shape:
        raise ValueError(f"{len(a_pred)} answer items but {len(r_pred)} rationale items")
    answer_right, rationale_right = a_pred == a_gold, r_pred == r_gold
    return {
        "q2a": float(answer_right.mean()),
        "qa2r": float(rationale_right.mean()),
        "q2ar": float((answer_right & rationale_right).mean()),
        "n": int(a_pred.size),
    }


def chance_level(task: str, num_choices: int | None = None) -> dict[str, float]:
    """Expected score of a uniform random guess, keyed like the task's metrics.

    ``ve``: {"accuracy": 1/k}, k = 3 classes by default. ``vcr``: {"q2a": 1/k, "qa2r": 1/k,
    "q2ar": 1/k**2}, k = 4 choices by default. VQA is open-ended, so it has no chance formula;
    use ``vldistill.eval.vqa.majority_answer_baseline`` for its floor.
    """
    task = task.lower()
    if task == "vqa":
        raise ValueError("VQA has no chance level formula; use majority_answer_baseline")
    if task not in _DEFAULT_CHOICES:
        raise ValueError(f"unknown task {task!r}; expected one of ve, vcr")
    k = _DEFAULT_CHOICES[task] if num_choices is None else num_choices
    if k < 2:
        raise ValueError(f"num_choices must be >= 2, got {k}")
    if task == "ve":
        return {"accuracy": 1 / k}
    return {"q2a": 1 / k, "qa2r": 1 / k, "q2ar": 1 / k**2}
