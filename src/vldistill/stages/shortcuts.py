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

from vldistill.data.manifest import manifest_path, read_manifest
from vldistill.data.regimes import select_regime
from vldistill.eval import majority_answer_baseline
from vldistill.io import write_json
from vldistill.seeds import add_seed, dataset_seeds
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
