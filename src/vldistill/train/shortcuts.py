"""Shortcut detectors: how far each task's text alone goes, without the image.

A method's number means something only by its distance from these rows (docs/design.md, Grounding):

* VE: a classifier over the hypothesis alone;
* VQA: a question-only prior, the stronger on val of the most frequent training answer per
  question type and a classifier over the question's words;
* VCR: an answer-only model that scores each candidate answer (Q->A) and each candidate
  rationale (QA->R) by its own words, seeing neither the image nor the question.

Each is a linear model over a bag of words and word pairs (binary counts) fitted by full-batch
L-BFGS, deterministic and a matter of seconds on a CPU. Each is trained on the regime's training
rows, as the real methods are; its L2 weight (and for VQA the prior's kind) is chosen on val.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F

from vldistill.data.manifest import VE_LABELS
from vldistill.eval import (
    accuracy,
    answer_vocabulary,
    chance_level,
    official_normalize_answer,
    vcr_scores,
    vqa_score,
)

METHOD = "text_only"
L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_L2 = 1e-2  # where a dataset has no val rows to choose on
_WORD = re.compile(r"[a-z0-9]+")


class BagOfWords:
    """Binary counts of the words and adjacent word pairs seen in the training texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        grams = sorted({g for text in texts for g in self.grams(text)})
        self.index = {g: i for i, g in enumerate(grams)}

    @staticmethod
    def grams(text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        x = torch.zeros(len(texts), len(self.index))
        for row, text in enumerate(texts):
            cols = [self.index[g] for g in self.grams(text) if g in self.index]
            x[row, cols] = 1.0
        return x


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int | None, l2: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression by full-batch L-BFGS: logits = x @ W + b over ``n_classes``, or, with
    ``n_classes`` None, a choice among x's candidates ([N, K, V] -> one shared score per
    candidate, whose bias cancels in the softmax). Returns (W, b)."""
    out = 1 if n_classes is None else n_classes
    w = torch.zeros(x.shape[-1], out, requires_grad=True)
    b = torch.zeros(out, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(linear_logits(x, w, b), y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach(), b.detach()


def linear_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:  # candidates: [N, K, V] -> [N, K]
        return (x @ w)[..., 0]
    return x @ w + b


@dataclass
class Choice:
    """What val chose among the candidates, and every candidate's val score."""

    name: str
    l2: float | None
    val: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.name, "l2": self.l2, "val": self.val}


def _choose(candidates: dict[str, tuple[str, float | None]], score) -> tuple[str, Choice]:
    """The candidate with the best val score (the first of equals: the simpler one)."""
    scores = {key: score(key) for key in candidates}
    best = max(scores, key=lambda k: (scores[k], -list(candidates).index(k)))
    name, l2 = candidates[best]
    return best, Choice(name, l2, {k: round(v, 6) for k, v in scores.items()})


def _l2_candidates(name: str) -> dict[str, tuple[str, float | None]]:
    return {f"{name}/l2={l2:g}": (name, l2) for l2 in L2_GRID}


# --- VE ---------------------------------------------------------------------------------------

def _ve_gold(frame: pl.DataFrame) -> torch.Tensor:
    index = {label: i for i, label in enumerate(VE_LABELS)}
    return torch.tensor([index[label] for label in frame["label"].to_list()])


def fit_ve(train: pl.DataFrame, val: pl.DataFrame):
    """A hypothesis-only classifier; returns (predict(frame) -> [N] labels, Choice)."""
    bow = BagOfWords(train["hypothesis"].to_list())
    x, y = bow(train["hypothesis"].to_list()), _ve_gold(train)
    fits = {l2: fit_linear(x, y, len(VE_LABELS), l2) for l2 in L2_GRID}

    def predict_with(l2: float, frame: pl.DataFrame) -> torch.Tensor:
        return linear_logits(bow(frame["hypothesis"].to_list()), *fits[l2]).argmax(-1)

    candidates = _l2_candidates("bag_of_words")
    if val.is_empty():
        choice = Choice("bag_of_words", DEFAULT_L2)
    else:
        gold = _ve_gold(val)
        _, choice = _choose(candidates, lambda k: float(
            (predict_with(candidates[k][1], val) == gold).float().mean()))
    return (lambda frame: predict_with(choice.l2, frame)), choice


def evaluate_ve(predict, frame: pl.DataFrame) -> dict[str, Any]:
    result = accuracy(predict(frame).numpy(), _ve_gold(frame).numpy())
    return {**result, "chance": chance_level("ve")}


# --- VQA --------------------------------------------------------------------------------------

def _top(answers: Sequence[Sequence[str]]) -> str:
    return answer_vocabulary(answers, top_k=1)[0]


def _type_prior(train: pl.DataFrame):
    """The most frequent training answer of each question type (the overall one for a type the
    training rows never show)."""
    by_type: dict[str, list[list[str]]] = defaultdict(list)
    for kind, answers in zip(train["question_type"], train["answers"], strict=True):
        by_type[kind].append(list(answers))
    top = {kind: _top(lists) for kind, lists in by_type.items()}
    fallback = _top([list(a) for a in train["answers"].to_list()])
    return lambda frame: [top.get(kind, fallback) for kind in frame["question_type"].to_list()]


def _question_classifier(train: pl.DataFrame, x: torch.Tensor, l2: float, bow: BagOfWords,
                         vocab: list[str]):
    index = {a: i for i, a in enumerate(vocab)}
    gold = []
    for answers in train["answers"].to_list():
        counts = Counter(official_normalize_answer(a) for a in answers)
        counts.pop("", None)
        gold.append(index[min(counts, key=lambda a: (-counts[a], a))])
    w, b = fit_linear(x, torch.tensor(gold), len(vocab), l2)
    return lambda frame: [vocab[k] for k in
                          linear_logits(bow(frame["question"].to_list()), w, b).argmax(-1).tolist()]


def fit_vqa(train: pl.DataFrame, val: pl.DataFrame):
    """A question-only prior; returns (predict(frame) -> answers, Choice)."""
    bow = BagOfWords(train["question"].to_list())
    x = bow(train["question"].to_list())
    vocab = answer_vocabulary([list(a) for a in train["answers"].to_list()])
    models = {"question_type_prior": _type_prior(train)}
    candidates: dict[str, tuple[str, float | None]] = {
        "question_type_prior": ("question_type_prior", None), **_l2_candidates("bag_of_words")}
    for key, (_, l2) in candidates.items():
        if l2 is not None:
            models[key] = _question_classifier(train, x, l2, bow, vocab)
    if val.is_empty():
        return models["question_type_prior"], Choice("question_type_prior", None)
    answers = [list(a) for a in val["answers"].to_list()]
    best, choice = _choose(candidates, lambda k: vqa_score(models[k](val), answers,
                                                           normalize_gt=True)["accuracy"])
    return models[best], choice


def evaluate_vqa(predict, frame: pl.DataFrame) -> dict[str, Any]:
    return dict(vqa_score(predict(frame), [list(a) for a in frame["answers"].to_list()],
                          normalize_gt=True))


# --- VCR --------------------------------------------------------------------------------------

VCR_PARTS: dict[str, tuple[str, str]] = {"q2a": ("answers", "answer_label"),
                                         "qa2r": ("rationales", "rationale_label")}


def _candidates(bow: BagOfWords, frame: pl.DataFrame, column: str) -> torch.Tensor:
    groups = [list(c) for c in frame[column].to_list()]
    flat = bow([c for group in groups for c in group])
    return flat.view(len(groups), len(groups[0]) if groups else 0, -1)


def fit_vcr(train: pl.DataFrame, val: pl.DataFrame):
    """An answer-only (and rationale-only) scorer; returns (predict(frame) -> {part: [N]},
    {part: Choice})."""
    parts, choices = {}, {}
    for part, (column, label) in VCR_PARTS.items():
        bow = BagOfWords([c for group in train[column].to_list() for c in group])
        y = torch.tensor(train[label].to_list())
        fits = {l2: fit_linear(_candidates(bow, train, column), y, None, l2) for l2 in L2_GRID}

        def predict_with(l2: float, frame: pl.DataFrame, bow=bow, fits=fits, column=column):
            return linear_logits(_candidates(bow, frame, column), *fits[l2]).argmax(-1)

        candidates = _l2_candidates("bag_of_words")
        if val.is_empty():
            choice = Choice("bag_of_words", DEFAULT_L2)
        else:
            gold = torch.tensor(val[label].to_list())
            _, choice = _choose(candidates, lambda k, p=predict_with, g=gold, c=candidates:
                                float((p(c[k][1], val) == g).float().mean()))
        parts[part] = (predict_with, choice.l2)
        choices[part] = choice
    return (lambda frame: {p: f(l2, frame) for p, (f, l2) in parts.items()}), choices


def evaluate_vcr(predict, frame: pl.DataFrame) -> dict[str, Any]:
    preds = predict(frame)
    result = vcr_scores(preds["q2a"].numpy(), frame["answer_label"].to_numpy(),
                        preds["qa2r"].numpy(), frame["rationale_label"].to_numpy())
    return {**result, "chance": chance_level("vcr")}


FIT = {"ve": fit_ve, "vqa": fit_vqa, "vcr": fit_vcr}
EVALUATE = {"ve": evaluate_ve, "vqa": evaluate_vqa, "vcr": evaluate_vcr}


def fit_text_only(task: str, train: pl.DataFrame, val: pl.DataFrame):
    """The task's shortcut detector fitted on ``train``, chosen on ``val``: (predict, choice)."""
    if task not in FIT:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(FIT)}")
    if train.is_empty():
        raise ValueError(f"no {task} training rows to fit a text-only model on")
    return FIT[task](train, val)


def evaluate_text_only(task: str, predict, frame: pl.DataFrame) -> dict[str, Any]:
    """The task's official metric over ``frame``, as the fine-tuned methods report it."""
    return EVALUATE[task](predict, frame)
