"""Held-out ITM of VL pre-training at a given budget on the default synthetic data.

Usage (data from the default config's data rule, e.g. data/synthetic after `make results`):
    PYTHONPATH=src python benchmarks/pretrain_grounding.py STEPS BATCH LR NAME [THREADS] [ROOT]
Prints the val curve (val_itm_vs_random, val_itm_vs_hard) and the final training scalars.
"""
import sys
import time

import torch
import yaml

from vldistill.stages.student import pretrain_student

with open("config.yaml") as f:
    cfg = yaml.safe_load(f)
steps, bs, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
root = sys.argv[6] if len(sys.argv) > 6 else "data/synthetic"
t = time.time()
summary = pretrain_student(
    root=root, student=cfg["student"],
    training={"steps": steps, "batch_size": bs, "lr": lr, "warmup_steps": max(1, steps // 10),
              "checkpoint_every": steps},
    objective={}, validation={"every": max(1, steps // 4), "captions": 256}, seed=0,
    out_path=f"/tmp/{sys.argv[4]}.safetensors", metrics_path=f"/tmp/{sys.argv[4]}.json")
print(sys.argv[1:], round(time.time() - t), "s")
for v in summary["validation"]:
    print(v)
print({k: round(v, 3) for k, v in summary["final"].items()})
