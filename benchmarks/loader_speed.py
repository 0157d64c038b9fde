"""Pre-training steps/s on the default data, through the DataLoader path (pixel files, workers).

Usage (data from the default config's data and pixels rules, e.g. after `make results`):
    PYTHONPATH=src python benchmarks/loader_speed.py ROOT WORKERS [THREADS]
Times the default pre-training (config.yaml's student and batch) at 20 and 80 steps and
prints the steps/s of the 60 steps in between, so start-up (data, corpus, model) cancels out.
ROOT without data/<dataset>/pixels/ measures the in-memory bank instead (decoded at start-up).
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from vldistill.stages.student import pretrain_student

root, workers = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
with open("config.yaml") as f:
    cfg = yaml.safe_load(f)
training = dict(cfg["pretrain"]["training"])
seconds = {}
with tempfile.TemporaryDirectory() as out:
    for steps in (20, 80):
        start = time.perf_counter()
        pretrain_student(
            root=root, student=cfg["student"],
            training={**training, "steps": steps, "checkpoint_every": steps},
            objective=cfg["pretrain"]["objective"], validation={"every": 0, "captions": 8},
            seed=0, out_path=Path(out) / f"s{steps}.safetensors",
            metrics_path=Path(out) / f"s{steps}.json",
            # no workers key at 0, so the script also runs on code from before the loader
            compute={"device": "cpu", "precision": "fp32",
                     **({"workers": workers} if workers else {})})
        seconds[steps] = time.perf_counter() - start
print(json.dumps({"root": root, "workers": workers, "threads": torch.get_num_threads(),
                  "pixel_files": (Path(root) / "pixels").is_dir(),
                  "seconds_20": round(seconds[20], 2), "seconds_80": round(seconds[80], 2),
                  "steps_per_s": round(60 / (seconds[80] - seconds[20]), 3)}))
