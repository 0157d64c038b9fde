"""The downstream tasks (VQA, visual entailment, VCR) as tensors, their losses and evaluation.

``build_task_data`` tokenises a task manifest once; ``task_logits`` scores a batch of its rows
with the student; ``task_loss`` is the fine-tuning objective; ``gold_cross_entropy`` is the loss
form the teacher probe is scored in (AF compares the two); ``evaluate`` reports each task's
official metric, ``evaluate_items`` also each item's score. VCR items become two examples each,
a Q->A one (question + answer_k) and a QA->R one (question + *gold* answer + rationale_k), as
VCR's QA->R protocol gives the model the right answer; ``evaluate`` pairs them back by item id
for the joint Q->AR score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F

from vldistill.data.images import ImageBank
from vldistill.data.manifest import VE_LABELS, conform
from vldistill.eval import (
    accuracy,
    chance_level,
    official_normalize_answer,
    soft_targets,
    vcr_scores,
    vocab_index,
    vqa_accuracy,
    vqa_score,
)
from vldistill.models.heads import vcr_choice_logits
from vldistill.models.student import Student
from vldistill.models.tokenizer import Tokenizer, trim_padding
from vldistill.models.vision import VisionOutput

TASK_NAMES: tuple[str, ...] = ("vqa", "ve", "vcr")
VCR_CHOICES = 4
VCR_STAGES: tuple[str, ...] = ("q2a", "qa2r")


@dataclass
class TaskData:
    task: str  # "vqa" | "ve" | "vcr"
    image_ids: list[str]  # per example
    image_rows: torch.Tensor  # [N] rows in the ImageBank
    ids: torch.Tensor  # vqa/ve: [N, L]; vcr: [N, 4, L]
    mask: torch.Tensor  # same shape, bool
    primary_text: list[str]  # text whose teacher features MAD distils
    targets: torch.Tensor  # vqa: [N, A] soft scores; ve: [N] long; vcr: [N] long
    gold: torch.Tensor  # [N] long; vqa: vocab index of the top answer or -1
    answers: list[list[str]] | None = None  # vqa: raw annotator answers
    answer_vocab: list[str] | None = None  # vqa: class index -> answer string
    # the manifest id of each example: question_id (vqa), pair_id (ve), item_id (vcr)
    item_ids: list[str] | None = None
    stage: list[str] | None = None  # vcr: "q2a" | "qa2r"

    def __len__(self) -> int:
        return len(self.image_rows)


def build_task_data(task: str, frame: pl.DataFrame, bank: ImageBank, tokenizer: Tokenizer,
                    answer_vocab: list[str] | None = None) -> TaskData:
    """Tokenise a vqa / ve / vcr manifest; examples follow the manifest's row order.

    ``answer_vocab`` (VQA only, required there) is the classifier's answer list, built by the
    caller from the training split with ``eval.answer_vocabulary`` so every split shares it.
    """
    _check_task(task)
    if frame.is_empty():
        raise ValueError(f"the {task} manifest has no rows to build task data from")
    frame = conform(frame, task)  # names any missing column
    if task == "vqa":
        if not answer_vocab:
            raise ValueError("VQA task data needs a non-empty answer_vocab (answer_vocabulary "
                             "of the training split)")
        return _build_vqa(frame, bank, tokenizer, answer_vocab)
    if answer_vocab is not None:
        raise ValueError(f"answer_vocab is for VQA only, not {task}")
    if task == "ve":
        return _build_ve(frame, bank, tokenizer)
    return _build_vcr(frame, bank, tokenizer)


def _check_task(task: str) -> None:
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")


def _top_answer(answers: Sequence[str]) -> str:
    """Most common normalised answer; ties go alphabetically, as in answer_vocabulary."""
    counts = Counter(official_normalize_answer(a) for a in answers)
    counts.pop("", None)
    if not counts:
        return ""
    return min(counts, key=lambda a: (-counts[a], a))


def _build_vqa(frame: pl.DataFrame, bank: ImageBank, tokenizer: Tokenizer,
               vocab: list[str]) -> TaskData:
    index = vocab_index(vocab)
    questions = frame["question"].to_list()
    answers = [list(a) for a in frame["answers"].to_list()]
    targets = torch.zeros(len(frame), len(vocab))
    for i, given in enumerate(answers):
        for k, score in soft_targets(given, index):
            targets[i, k] = score
    gold = torch.tensor([index.get(_top_answer(a), -1) for a in answers], dtype=torch.long)
    ids, mask = tokenizer(questions)
    image_ids = frame["image_id"].to_list()
    return TaskData("vqa", image_ids, bank.rows(image_ids), ids, mask, questions, targets, gold,
                    answers=answers, answer_vocab=list(vocab),
                    item_ids=frame["question_id"].to_list())


def _build_ve(frame: pl.DataFrame, bank: ImageBank, tokenizer: Tokenizer) -> TaskData:
    label_index = {label: i for i, label in enumerate(VE_LABELS)}
    labels = []
    for pair_id, label in zip(frame["pair_id"], frame["label"], strict=True):
        if label not in label_index:
            raise ValueError(f"VE pair {pair_id}: unknown label {label!r}; expected one of "
                             f"{VE_LABELS}")
        labels.append(label_index[label])
    hypotheses = frame["hypothesis"].to_list()
    ids, mask = tokenizer(hypotheses)
    gold = torch.tensor(labels, dtype=torch.long)
    image_ids = frame["image_id"].to_list()
    return TaskData("ve", image_ids, bank.rows(image_ids), ids, mask, hypotheses, gold,
                    gold.clone(), item_ids=frame["pair_id"].to_list())


def _check_vcr_item(item_id: str, answers: list[str], rationales: list[str], answer_label: int,
                    rationale_label: int) -> None:
    for name, candidates, label in (("answers", answers, answer_label),
                                    ("rationales", rationales, rationale_label)):
        if len(candidates) != VCR_CHOICES:
            raise ValueError(f"VCR item {item_id}: {len(candidates)} {name}, expected "
                             f"{VCR_CHOICES}")
        if not 0 <= label < VCR_CHOICES:
            raise ValueError(f"VCR item {item_id}: {name} label {label} is out of range")


def _build_vcr(frame: pl.DataFrame, bank: ImageBank, tokenizer: Tokenizer) -> TaskData:
    items = frame["item_id"].to_list()
    duplicates = sorted(i for i, c in Counter(items).items() if c > 1)
    if duplicates:
        raise ValueError(f"duplicate VCR item ids, e.g. {duplicates[:3]}")
    q2a_texts: list[str] = []
    qa2r_texts: list[str] = []
    rows = zip(items, frame["question"], frame["answers"], frame["rationales"],
               frame["answer_label"], frame["rationale_label"], strict=True)
    for item_id, question, answers, rationales, a_label, r_label in rows:
        answers, rationales = list(answers), list(rationales)
        _check_vcr_item(item_id, answers, rationales, a_label, r_label)
        q2a_texts += [f"{question} {a}" for a in answers]
        qa2r_texts += [f"{question} {answers[a_label]} {r}" for r in rationales]
    n = len(frame)
    ids, mask = tokenizer(q2a_texts + qa2r_texts)
    ids, mask = ids.view(2 * n, VCR_CHOICES, -1), mask.view(2 * n, VCR_CHOICES, -1)
    # Q->A examples first, then QA->R examples, both in manifest order
    gold = torch.tensor(frame["answer_label"].to_list() + frame["rationale_label"].to_list(),
                        dtype=torch.long)
    image_ids = frame["image_id"].to_list() * 2
    return TaskData("vcr", image_ids, bank.rows(image_ids), ids, mask,
                    frame["question"].to_list() * 2, gold, gold.clone(), item_ids=items * 2,
                    stage=[VCR_STAGES[0]] * n + [VCR_STAGES[1]] * n)


def repeat_vision(vision: VisionOutput, repeats: int) -> VisionOutput:
    """Each image's outputs ``repeats`` times in a row (image i -> rows i*r .. i*r + r - 1)."""
    return VisionOutput(
        levels=[level.repeat_interleave(repeats, dim=0) for level in vision.levels],
        grids=list(vision.grids),
        pooled=vision.pooled.repeat_interleave(repeats, dim=0),
    )


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def task_logits(model: Student, data: TaskData, rows: torch.Tensor,
                images: ImageBank | torch.Tensor | None = None,
                vision: VisionOutput | None = None) -> torch.Tensor:
    """Logits of examples ``rows``: vqa [B, A], ve [B, 3], vcr [B, 4].

    The image side comes from ``vision`` (already encoded, e.g. shared with distillation
    losses) if given, else from ``images``: an ImageBank to read the rows' pixels from, or float
    images [B, 3, S, S] already normalised to [-1, 1].
    """
    device = _device(model)
    rows = rows.to("cpu", torch.long)
    if vision is None:
        if images is None:
            raise ValueError("task_logits needs the ImageBank, the batch images or their vision "
                             "outputs")
        if isinstance(images, ImageBank):
            images = images.at(data.image_rows[rows], device)
        vision = model.encode_image(images.to(device))
    if len(vision.pooled) != len(rows):
        raise ValueError(f"vision outputs for {len(vision.pooled)} images but {len(rows)} rows")
    ids, mask = trim_padding(data.ids[rows], data.mask[rows], device)  # on the host, then moved
    if data.task != "vcr":
        fused = model.fuse(vision, model.encode_text(ids, mask), mask)
        return model.heads(data.task, fused.pooled)
    # every candidate of an example sees the same image: encode it once, fuse all B * 4 pairs
    flat_ids, flat_mask = ids.flatten(0, 1), mask.flatten(0, 1)
    fused = model.fuse(repeat_vision(vision, VCR_CHOICES), model.encode_text(flat_ids, flat_mask),
                       flat_mask)
    return vcr_choice_logits(model.heads("vcr", fused.pooled), VCR_CHOICES)


def init_head_from_prior(model: Student, data: TaskData) -> None:
    """Set the task head's output bias to the training labels' prior, so the first steps learn
    from the image and question instead of spending themselves on the answer frequencies.

    VQA (per-answer BCE): bias_k = logit(mean soft score of answer k). VE (softmax): bias_c =
    log(frequency of class c). VCR scores candidates with one shared logit: nothing to set.
    """
    if data.task == "vcr":
        return
    head = model.heads.vqa if data.task == "vqa" else model.heads.ve
    if data.task == "vqa":
        prior = data.targets.float().mean(dim=0)
        bias = torch.logit(prior.clamp(1e-4, 1 - 1e-4))
    else:
        counts = torch.bincount(data.gold.long(), minlength=head.out.out_features).float()
        bias = torch.log((counts + 1) / (counts.sum() + len(counts)))
    with torch.no_grad():
        head.out.bias.copy_(bias.to(head.out.bias))


def task_loss(logits: torch.Tensor, data: TaskData, rows: torch.Tensor) -> torch.Tensor:
    """The fine-tuning loss of a batch.

    VQA: binary cross-entropy of each answer's logit against its soft score min(1, count / 3),
    summed over the answer vocabulary and averaged over questions (the soft-label VQA classifier
    recipe of BUTD and its successors; a mean over answers would shrink the gradient by 1 / A).
    VE: cross-entropy over the three labels. VCR: cross-entropy over the four candidates.
    """
    targets = data.targets[rows.to("cpu", torch.long)].to(logits.device)
    if data.task == "vqa":
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return bce.sum(dim=1).mean()
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def gold_cross_entropy(model: Student, data: TaskData, bank: ImageBank, rows: torch.Tensor,
                       batch_size: int = 128) -> tuple[float, int]:
    """Mean softmax cross-entropy of the gold class over ``rows``, and how many counted.

    The loss form of the teacher probe's out-of-fold CE (distill/probe.py): VE the gold label,
    VCR the gold candidate, VQA the most common gold answer under a softmax over the answer
    vocabulary (questions whose answer is outside it are skipped, as the probe skips them), not
    the per-answer BCE VQA trains with. Evaluated in eval mode; the mode is restored.
    """
    rows = rows[data.gold[rows] >= 0]
    if len(rows) == 0:
        return float("nan"), 0
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            logits = task_logits(model, data, chunk, bank).float()
            gold = data.gold[chunk].to(logits.device)
            total += float(F.cross_entropy(logits, gold, reduction="sum"))
    finally:
        model.train(was_training)
    return total / len(rows), len(rows)


@torch.no_grad()
def _predictions(model: Student, data: TaskData, bank: ImageBank, batch_size: int) -> torch.Tensor:
    """Argmax class (vqa: vocab index; ve: label; vcr: candidate) of every example, in order."""
    preds = []
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        preds.append(task_logits(model, data, rows, bank).argmax(dim=-1).cpu())
    return torch.cat(preds)


def _vcr_pairs(data: TaskData, preds: torch.Tensor) -> tuple[list[str], list[list[int]]]:
    """Pair each item's Q->A and QA->R examples by item id: the items in order and, for each,
    [answer prediction, answer gold, rationale prediction, rationale gold]."""
    if data.item_ids is None or data.stage is None:
        raise ValueError("VCR task data lacks item_ids / stage; build it with build_task_data")
    by_stage: dict[str, dict[str, tuple[int, int]]] = {s: {} for s in VCR_STAGES}
    for item, stage, p, g in zip(data.item_ids, data.stage, preds.tolist(), data.gold.tolist(),
                                 strict=True):
        by_stage[stage][item] = (p, g)
    q2a, qa2r = by_stage["q2a"], by_stage["qa2r"]
    if set(q2a) != set(qa2r):
        raise ValueError("every VCR item needs both a q2a and a qa2r example")
    items = sorted(q2a)
    return items, [[*q2a[i], *qa2r[i]] for i in items]


ITEM_SCHEMA: dict[str, Any] = {"item": pl.String, "metric": pl.String, "score": pl.Float64}


def evaluate(model: Student, data: TaskData, bank: ImageBank,
             batch_size: int = 128) -> dict[str, Any]:
    """The task's official metric over all of ``data``, as plain JSON-ready numbers.

    vqa: {"accuracy", "n"}, the official VQA v2 accuracy of the argmax answer (annotator answers
    normalised as the release did). ve: {"accuracy", "n", "chance"}. vcr: {"q2a", "qa2r",
    "q2ar", "n" (items), "chance"}. The model's train/eval mode is restored afterwards.
    """
    return evaluate_items(model, data, bank, batch_size)[0]


def evaluate_items(model: Student, data: TaskData, bank: ImageBank,
                   batch_size: int = 128) -> tuple[dict[str, Any], pl.DataFrame]:
    """``evaluate``'s metrics and, from the same predictions, every item's score (item, metric,
    score): its VQA accuracy, or 1.0 / 0.0 for a right / wrong VE label or VCR choice (q2a,
    qa2r, q2ar). A metric is the mean of its items' scores; paired comparisons between methods
    (results/effects.py) resample these."""
    _check_task(data.task)
    if len(data) == 0:
        raise ValueError(f"no {data.task} examples to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if data.item_ids is None:
        raise ValueError("task data lacks item_ids; build it with build_task_data")
    was_training = model.training
    model.eval()
    try:
        preds = _predictions(model, data, bank, batch_size)
    finally:
        model.train(was_training)
    if data.task == "vqa":
        if data.answer_vocab is None or data.answers is None:
            raise ValueError("VQA task data lacks its answers; build it with build_task_data")
        answers = [data.answer_vocab[k] for k in preds.tolist()]
        scores = [vqa_accuracy(a, gts, normalize_gt=True)
                  for a, gts in zip(answers, data.answers, strict=True)]
        items = _item_frame(data.item_ids, {"accuracy": scores})
        return dict(vqa_score(answers, data.answers, normalize_gt=True)), items
    if data.task == "ve":
        result = accuracy(preds.numpy(), data.gold.numpy())
        right = (preds == data.gold).double().tolist()
        items = _item_frame(data.item_ids, {"accuracy": right})
    else:
        ids, pairs = _vcr_pairs(data, preds)
        result = vcr_scores(*zip(*pairs, strict=True))
        q2a = [float(a == ag) for a, ag, _, _ in pairs]
        qa2r = [float(r == rg) for _, _, r, rg in pairs]
        items = _item_frame(ids, {"q2a": q2a, "qa2r": qa2r,
                                  "q2ar": [a * r for a, r in zip(q2a, qa2r, strict=True)]})
    return {**result, "chance": chance_level(data.task)}, items


def _item_frame(items: list[str], scores: dict[str, list[float]]) -> pl.DataFrame:
    if len(set(items)) != len(items):
        raise ValueError("item ids must be unique to score items one by one")
    return pl.DataFrame(
        [{"item": i, "metric": metric, "score": float(v)}
         for metric, values in scores.items() for i, v in zip(items, values, strict=True)],
        schema=ITEM_SCHEMA)
