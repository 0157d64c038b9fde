"""A Fast model trained from a run's MAD student, without distillation, and its text -> image
recall on the val and test galleries (each image's most specific caption as its query).

Usage, in a run's folder (after the default run's student_task_agnostic jobs):
    PYTHONPATH=<repo>/src python <repo>/benchmarks/fast_budget.py NAME STEPS
"""
import json
import sys
from pathlib import Path

import torch
import yaml

from vldistill.eval.retrieval import retrieval_metrics
from vldistill.models.factory import load_fast
from vldistill.retrieval.gallery import embed_gallery, embed_queries, retrieval_set
from vldistill.stages.retrieval import train_fast

torch.set_num_threads(1)
name, steps = sys.argv[1], int(sys.argv[2])
cfg = yaml.safe_load(Path("config.yaml").read_text())
fast = cfg["retrieval"]["fast"]
out = Path("/tmp") / f"fast-{name}.safetensors"
train_fast(root="data/synthetic", init="mad",
           start="models/synthetic/student/seed-0/agnostic-mad.safetensors",
           student=cfg["student"], embed_dim=fast["embed_dim"], temperature=fast["temperature"],
           training={**fast["training"], "steps": steps, "checkpoint_every": steps}, seed=0,
           distill=None, slow_path=None, out_path=out, metrics_path=out.with_suffix(".json"))
model, _ = load_fast(out)
model.eval()
for split in ("val", "test"):
    data = retrieval_set("data/synthetic", split, 1, model.cfg)
    scores = embed_queries(model, data.ids, data.mask) @ embed_gallery(model, data.bank).T
    metrics = retrieval_metrics(scores, data.gold)
    print(json.dumps({"name": name, "split": split,
                      **{k: round(v, 1) for k, v in metrics.items() if isinstance(v, float)}}))
