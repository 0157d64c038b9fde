"""Reference rows beside the real methods: shortcut detectors and what the teachers know.

* ``text_only``: the task's text-only model (train/shortcuts.py) trained on the same regime of
  the training split as the fine-tuned methods and evaluated on the same splits; its
  metrics.json has the fine-tuning jobs' format, so the reports read it like any method's.
* ``teacher_ridge``: text -> image retrieval by a closed-form ridge map between the cached
  teacher text and image embeddings of the training pairs (retrieval/ridge.py), on the Fast and
  Slow models' gallery and queries.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch

from vldistill.data.images import decode_rgb
from vldistill.data.manifest import manifest_path, read_manifest, text_id
from vldistill.data.regimes import select_regime
from vldistill.eval import majority_answer_baseline
from vldistill.eval.retrieval import chance_metrics, hard_negative_accuracy, retrieval_metrics
from vldistill.features.store import FeatureStore
from vldistill.io import write_json
from vldistill.retrieval.queries import query_seeds, select_queries
from vldistill.retrieval.ridge import choose_ridge
from vldistill.seeds import add_seed, dataset_seeds
from vldistill.teachers.factory import (
    create_text_teacher,
    create_vision_teacher,
    text_config_from_dict,
    vision_config_from_dict,
)
from vldistill.train.shortcuts import METHOD, evaluate_text_only, fit_text_only

log = logging.getLogger(__name__)

# the splits the fine-tuned methods are evaluated on (stages.finetune.EVAL_SPLITS)
EVAL_SPLITS: tuple[str, ...] = ("test", "test_shifted")


def text_only(*, task: str, regime: str, root: str | Path, seed: int,
              metrics_path: str | Path,
              eval_splits: tuple[str, ...] = EVAL_SPLITS) -> dict[str, Any]:
    """Fit the task's text-only model on the regime's training rows, choose it on val, evaluate
    it on ``eval_splits`` and write metrics.json."""
    splits = ("train", "val", *eval_splits)
    frames = {s: read_manifest(manifest_path(root, s, task), task) for s in splits}
    train_frame = select_regime(frames["train"], regime, seed)
    predict, choice = fit_text_only(task, train_frame, frames["val"])
    choice_json = ({p: c.to_json() for p, c in choice.items()} if isinstance(choice, dict)
                   else choice.to_json())
    log.info("%s / %s: %d training rows; chosen on val: %s", task, regime, len(train_frame),
             choice_json)
    results = {}
    for split in eval_splits:
        if frames[split].is_empty():  # e.g. a real dataset without a shifted test set
            log.info("%s: no %s examples; not evaluated", split, task)
            continue
        results[split] = evaluate_text_only(task, predict, frames[split])
        if task == "vqa":
            results[split]["majority_baseline"] = majority_answer_baseline(
                train_frame["answers"].to_list(), frames[split]["answers"].to_list(),
                normalize_gt=True)["accuracy"]
        log.info("%s: %s", split, results[split])
    metrics = {
        "task": task, "regime": regime, "method": METHOD, "seed": seed,
        "seeds": add_seed(dataset_seeds(root), "finetune", seed),
        "n_train": len(train_frame), "n_train_images": train_frame["image_id"].n_unique(),
        "n_val": len(frames["val"]), "model": choice_json, "results": results,
    }
    write_json(metrics, metrics_path)
    return metrics


# --- teacher ridge ----------------------------------------------------------------------------

class _Teachers:
    """The two teachers, encoding what the cache does not hold (val and the gallery split)."""

    def __init__(self, teachers: dict, device: str) -> None:
        self.vision = create_vision_teacher(vision_config_from_dict(teachers["vision"]), device)
        self.text = create_text_teacher(text_config_from_dict(teachers["text"]), device)
        self.batch = {"vision": teachers["vision"].get("batch_size", 64),
                      "text": teachers["text"].get("batch_size", 256)}

    def images(self, root: Path, paths: list[str]) -> torch.Tensor:
        step = self.batch["vision"]
        return torch.cat([self.vision.encode_images([decode_rgb(root / p) for p in
                                                     paths[i:i + step]]).global_emb
                          for i in range(0, len(paths), step)])

    def texts(self, texts: list[str]) -> torch.Tensor:
        step = self.batch["text"]
        return torch.cat([self.text.encode_texts(texts[i:i + step]).global_emb
                          for i in range(0, len(texts), step)])


def _gallery(root: Path, split: str, captions_per_image: int, max_queries: int | None
             ) -> tuple[pl.DataFrame, pl.DataFrame, torch.Tensor]:
    """A split's images (gallery order = manifest order, as the Fast and Slow models' banks),
    its queries, and each query's gallery row."""
    images = read_manifest(manifest_path(root, split, "images"), "images")
    captions = read_manifest(manifest_path(root, split, "captions"), "captions")
    queries = select_queries(captions, images, captions_per_image, max_queries)
    row = {image_id: i for i, image_id in enumerate(images["image_id"].to_list())}
    gold = torch.tensor([row[i] for i in queries["image_id"].to_list()])
    return images, queries, gold


@torch.no_grad()
def teacher_ridge(*, root: str | Path, vision_index: str | Path, text_index: str | Path,
                  teachers: dict, device: str, split: str, captions_per_image: int,
                  max_queries: int | None = None) -> dict[str, Any]:
    """Text -> image (and image -> text) retrieval on ``split``'s gallery through a ridge map
    fitted on the cached teacher embeddings of the training (caption, image) pairs; direction
    and lambda chosen on val's gallery, queried the same way. The result has the format of the
    retrieval evaluation rules' JSON (model ``teacher_ridge``)."""
    root = Path(root)
    if split == "val":
        raise ValueError("teacher_ridge chooses its lambda on val: evaluate it on another split")
    train = read_manifest(manifest_path(root, "train", "captions"), "captions")
    text_store, image_store = FeatureStore(text_index), FeatureStore(vision_index)
    train_texts = text_store.get([text_id(c) for c in train["caption"].to_list()],
                                 fields=("global",), dtype=torch.float32)["global"]
    train_images = image_store.get(train["image_id"].to_list(), fields=("global",),
                                   dtype=torch.float32)["global"]
    encode = _Teachers(teachers, device)
    val_images, val_queries, val_gold = _gallery(root, "val", captions_per_image, max_queries)
    ridge, val_table = choose_ridge(
        train_texts, train_images, encode.texts(val_queries["caption"].to_list()),
        encode.images(root, val_images["image_path"].to_list()), val_gold)
    log.info("ridge on %d training pairs; chosen on val: %s, lambda %g", len(train),
             ridge.direction, ridge.lam)

    images, queries, gold = _gallery(root, split, captions_per_image, max_queries)
    gallery = encode.images(root, images["image_path"].to_list())
    scores = ridge.scores(encode.texts(queries["caption"].to_list()), gallery)
    queried = torch.unique(gold)
    described = gold[None, :] == queried[:, None]  # [images, queries]: caption describes image
    result = {
        "model": "teacher_ridge",
        "t2i": retrieval_metrics(scores, gold),
        # an image has several correct captions: chance is the evaluation's own figure
        "i2t": {**retrieval_metrics(scores.T[queried], described),
                "chance": chance_metrics(described)},
        "slow_calls_per_query": 0, "gallery": len(images), "queries": len(queries),
        "seeds": query_seeds(dataset_seeds(root), max_queries),
        "ridge": {"direction": ridge.direction, "lambda": ridge.lam, "n_train": len(train),
                  "val": val_table},
    }
    has_negative = queries["hard_negative"].is_not_null().to_numpy()
    if has_negative.any():
        rows = torch.from_numpy(has_negative.nonzero()[0])
        negatives = encode.texts(queries["hard_negative"].drop_nulls().to_list())
        positive = scores[rows, gold[rows]]
        negative = ridge.scores(negatives, gallery)[torch.arange(len(rows)), gold[rows]]
        result["hard_negative"] = hard_negative_accuracy(positive, negative)
    return result
