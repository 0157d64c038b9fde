"""A training stage's files: its resumable state, the backbone it starts from, and the finished
model with its training summary. Shared by every stage that trains (student, fine-tuning,
retrieval), so none of them imports another stage.

Training state (model, optimiser, step) is checkpointed next to the output under a name that
hashes the stage's settings, so a killed job resumes where it stopped, a changed config starts
afresh, and the state is removed on success.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from vldistill.io import write_json
from vldistill.models.factory import matching_weights, save_checkpoint
from vldistill.models.student import Student
from vldistill.train.distributed import is_main
from vldistill.train.loop import summarise_history

log = logging.getLogger(__name__)


def state_path(out_path: str | Path, config: dict[str, Any]) -> Path:
    """Where a job keeps its resumable training state: beside its output, keyed by config."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.stem}.state-{digest}.pt")


def clear_states(out_path: str | Path) -> None:
    out_path = Path(out_path)
    for stale in out_path.parent.glob(f".{out_path.stem}.state-*.pt"):
        stale.unlink()


def load_backbone(model: Student, checkpoint: str | Path) -> list[str]:
    """Copy every weight of ``checkpoint`` whose name and shape match; return what was not set.

    A fine-tuning model adds heads (e.g. a VQA head sized to the regime's answer vocabulary) and
    MAD projections that the starting checkpoint may lack; everything else must load.
    """
    weights = load_file(str(checkpoint))
    own = model.state_dict()
    loadable = matching_weights(model, weights)
    model.load_state_dict(loadable, strict=False)
    # Tied weights (token embedding = LM head) are stored once under one of their names.
    loaded_storage = {own[k].data_ptr() for k in loadable}
    fresh = sorted(k for k in set(own) - set(loadable) if own[k].data_ptr() not in loaded_storage)
    backbone_missing = [k for k in fresh if not k.startswith(("heads.", "projections."))]
    if backbone_missing:
        raise ValueError(f"{checkpoint} lacks backbone weights {backbone_missing[:5]}; was it "
                         "written by another student config?")
    return fresh


def finish_student(model: Student, history: list[dict], out_path: str | Path,
                   metrics_path: str | Path, info: dict) -> dict:
    """Save the trained student (``info`` in its metadata), drop its resumable state, and write
    the training summary. Under torchrun only rank 0 does; the other ranks only helped train."""
    if not is_main():
        return {}
    save_checkpoint(out_path, model, extra=info)
    clear_states(out_path)
    return write_training_summary(history, metrics_path, info)


def write_training_summary(history: list[dict], metrics_path: str | Path, info: dict) -> dict:
    summary = summarise_history(history, info)
    write_json(summary, metrics_path)
    log.info("final (mean of the last 10%% of steps): %s", summary["final"])
    return summary
