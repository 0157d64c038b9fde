"""Models trained by another run, made this run's: the students (``pretrain.reuse``: trained
once, fine-tuned on many datasets) and the Slow and Fast retrieval models (``retrieval.reuse``:
trained once, indexing and searching any gallery).

An import keeps the weights and training summary and adds a provenance record (source path,
sha256, dataset, stage, seeds, student config) that every downstream model and metrics file
carries. The source's student config must be this run's ``student`` section, so that what the
config says is what the run evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from safetensors import safe_open

from vldistill.io import file_sha256, write_json
from vldistill.models.config import StudentConfig
from vldistill.models.factory import (
    FAST_FORMAT,
    load_checkpoint,
    load_fast,
    save_checkpoint,
    save_fast,
)

log = logging.getLogger(__name__)


def config_differences(source: StudentConfig, wanted: StudentConfig) -> list[str]:
    return [f"student.{f.name}: source {getattr(source, f.name)!r}, this run "
            f"{getattr(wanted, f.name)!r}" for f in dataclasses.fields(source)
            if getattr(source, f.name) != getattr(wanted, f.name)]


def import_model(*, source: str | Path, source_metrics: str | Path, student: dict,
                 setting: str, out_path: str | Path, metrics_path: str | Path) -> dict:
    """Copy a student or Fast checkpoint (and its summary) from another run with a provenance
    record; ``setting`` is the config key that asked for it, for messages."""
    with safe_open(str(source), framework="pt") as f:
        fast = (f.metadata() or {}).get("format") == FAST_FORMAT
    if fast:
        model, extra = load_fast(source)
        cfg = model.cfg
    else:
        model, cfg, extra = load_checkpoint(source)
    differences = config_differences(cfg, StudentConfig.from_dict(student))
    if differences:
        raise ValueError(f"{setting}: {source} was trained with another student config "
                         f"({'; '.join(differences)}). Set this run's student section to the "
                         f"source run's, or set {setting} to null to train here")
    source = Path(source).resolve()
    # written before models recorded their dataset: models/<dataset>/<stage>/seed-<s>/<file>
    dataset = extra.get("dataset") or (source.parents[2].name
                                       if source.parents[1].name in ("student", "retrieval")
                                       else None)
    record = {"path": str(source), "sha256": file_sha256(source),
              "dataset": dataset, "stage": extra.get("stage"),
              "variant": extra.get("variant"), "seeds": extra.get("seeds", {}),
              "student_config": cfg.to_dict()}
    provenance = [*extra.get("provenance", []), record]
    # the source's generator seed is another dataset's: kept apart from this run's data seed
    seeds = {("source_data" if k == "data" else k): v for k, v in extra.get("seeds", {}).items()}
    extra = {**extra, "seeds": seeds, "provenance": provenance}
    if fast:
        save_fast(out_path, model, extra)
    else:
        save_checkpoint(out_path, model, extra=extra)
    summary = {**json.loads(Path(source_metrics).read_text()), "provenance": provenance}
    write_json(summary, metrics_path)
    log.info("imported %s (%s, dataset %s, seeds %s)", source, extra.get("stage"), dataset,
             extra.get("seeds"))
    return summary
