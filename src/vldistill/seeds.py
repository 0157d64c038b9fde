"""Which seeds and which imported models a result depends on: recorded at every stage and
carried downstream.

Each trained model stores the seeds of everything it was built from (the data generator, the
pre-training, MAD, ...) in its checkpoint metadata and adds its own; a metrics file copies the
seeds of the models it evaluates. So any result names every seed needed to reproduce it. A
student imported from another run (``pretrain.reuse``) also carries its provenance (source
file, its hash, dataset and config), passed down the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open


def dataset_seeds(root: str | Path) -> dict[str, int]:
    """The generator's seed of a synthetic dataset (its summary.json); none for real data."""
    summary = Path(root) / "summary.json"
    if not summary.is_file():
        return {}
    seed = json.loads(summary.read_text()).get("seed")
    return {} if seed is None else {"data": int(seed)}


def _extra(path: str | Path) -> dict:
    """A checkpoint's ``extra`` metadata (header only; no weights are read)."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("extra", "{}"))


def checkpoint_seeds(path: str | Path) -> dict[str, int]:
    """The seeds recorded in a checkpoint's metadata."""
    return dict(_extra(path).get("seeds", {}))


def checkpoint_provenance(path: str | Path | None) -> list[dict]:
    """The imports a checkpoint descends from, oldest first; [] for a model trained in this
    run from this run's data (or no checkpoint at all)."""
    return [] if path is None else list(_extra(path).get("provenance", []))


def merge_provenance(*parts: list[dict]) -> list[dict]:
    """The imports of several models, each once, in first-seen order."""
    merged: list[dict] = []
    for part in parts:
        merged += [record for record in part if record not in merged]
    return merged


def add_seed(upstream: dict[str, int], stage: str, seed: int) -> dict[str, int]:
    """``upstream`` plus this stage's seed."""
    return merge_seeds(upstream, {stage: int(seed)})


def merge_seeds(*parts: dict[str, int]) -> dict[str, int]:
    """The union of several models' seeds; one stage with two different seeds is an error (the
    models were not built from the same run)."""
    merged: dict[str, int] = {}
    for part in parts:
        for stage, seed in part.items():
            if merged.setdefault(stage, seed) != seed:
                raise ValueError(f"stage {stage!r} was run with seed {merged[stage]} for one "
                                 f"input and {seed} for another")
    return dict(sorted(merged.items()))
