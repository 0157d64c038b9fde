"""Pre-training, then fine-tuning one task from it: held-out ITM and the task's val accuracy.

Usage (data from the default config's data and pixels rules, e.g. data/synthetic):
    PYTHONPATH=src python benchmarks/grounding_budget.py OUT PRE_STEPS TASK:STEPS[:BATCH] ...
        [--mlm-weight W] [--mlm-probability P] [--caption-weight W] [--start CKPT]
``--start`` skips pre-training and fine-tunes the given student. One torch thread, seed 0; the
other settings are config.yaml's. Prints one JSON line per stage.
"""
import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from vldistill.stages.finetune import finetune
from vldistill.stages.student import pretrain_student

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("pre_steps", type=int)
parser.add_argument("tasks", nargs="*", help="TASK:STEPS[:BATCH], e.g. vqa:150 vcr:100:32")
parser.add_argument("--root", default="data/synthetic")
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--mlm-weight", type=float)
parser.add_argument("--mlm-probability", type=float)
parser.add_argument("--caption-weight", type=float)
parser.add_argument("--start", type=Path)
args = parser.parse_args()
torch.set_num_threads(1)
cfg = yaml.safe_load(Path("config.yaml").read_text())
args.out.mkdir(parents=True, exist_ok=True)
start = args.start
if start is None:
    objective = dict(cfg["pretrain"]["objective"])
    for key in ("mlm_weight", "mlm_probability", "caption_weight"):
        if getattr(args, key) is not None:
            objective[key] = getattr(args, key)
    t = time.time()
    start = args.out / "pretrained.safetensors"
    summary = pretrain_student(
        root=args.root, student=cfg["student"],
        training={"steps": args.pre_steps, "batch_size": 32, "lr": args.lr,
                  "warmup_steps": max(1, args.pre_steps // 10),
                  "checkpoint_every": args.pre_steps},
        objective=objective, validation={"every": max(1, args.pre_steps // 4), "captions": 256},
        seed=0, out_path=start, metrics_path=args.out / "pretrained.json")
    print(json.dumps({"stage": "pretrain", "objective": objective,
                      "seconds": round(time.time() - t), "validation": summary["validation"]}))
for spec in args.tasks:
    task, steps, *batch = spec.split(":")
    training = {**cfg["finetune"]["training"], **cfg["finetune"]["per_task"].get(task, {}),
                "steps": int(steps), "warmup_steps": max(1, int(steps) // 10),
                "checkpoint_every": int(steps)}
    if batch:
        training["batch_size"] = int(batch[0])
    t = time.time()
    metrics = finetune(task=task, regime="full", method="baseline", root=args.root, start=start,
                       vision_index=None, text_index=None, training=training,
                       distill=cfg["finetune"]["distill"], seed=0,
                       out_path=args.out / f"{task}-{steps}.safetensors",
                       metrics_path=args.out / f"{task}-{steps}.json")
    print(json.dumps({"stage": f"{task} fine-tuning", "start": str(start), "training": training,
                      "seconds": round(time.time() - t), "val": metrics["val"],
                      "test": metrics["results"]}))
