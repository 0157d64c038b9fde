"""Does a vision tower carry which colour-shape pairs a scene holds? A probe of 6 learned queries
cross-attending to the tower's tokens (all pyramid levels), one logit per source-domain pair,
trained with BCE on the train split's scenes; per-pair accuracy on val.

Usage: PYTHONPATH=src python benchmarks/presence_probe.py STEPS (CKPT | -) [--freeze]
``-``: a freshly initialised student of config.yaml's size. ``--freeze``: train the probe only.
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from vldistill.data.manifest import manifest_path, read_manifest
from vldistill.data.pixels import open_visual_bank
from vldistill.models.config import StudentConfig
from vldistill.models.factory import load_checkpoint
from vldistill.models.student import Student
from vldistill.synthetic.scenes import domain_combos

parser = argparse.ArgumentParser()
parser.add_argument("steps", type=int)
parser.add_argument("checkpoint")
parser.add_argument("--freeze", action="store_true")
parser.add_argument("--root", default="data/synthetic")
args = parser.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
pairs = {pair: i for i, pair in enumerate(domain_combos("source"))}


def present(split: str) -> tuple[list[str], torch.Tensor]:
    images = read_manifest(manifest_path(args.root, split, "images"), "images")
    labels = torch.zeros(len(images), len(pairs))
    for i, scene in enumerate(images["scene"]):
        for obj in json.loads(scene)["objects"]:
            labels[i, pairs[(obj["color"], obj["shape"])]] = 1
    return images["image_id"].to_list(), labels


cfg = yaml.safe_load(Path("config.yaml").read_text())
if args.checkpoint == "-":
    model = Student(StudentConfig.from_dict(cfg["student"]))
else:
    model = load_checkpoint(args.checkpoint)[0].train()
vision, width = model.vision, model.cfg.width
bank = open_visual_bank(args.root, ["train", "val"], model.cfg.image_size)
train_ids, train_y = present("train")
val_ids, val_y = present("val")
train_rows, val_rows = bank.rows(train_ids), bank.rows(val_ids)
queries = nn.Parameter(torch.randn(len(pairs), width) * 0.02)
attention = nn.MultiheadAttention(width, 4, batch_first=True)
readout = nn.Linear(width, 1)
params = [queries, *attention.parameters(), *readout.parameters()]
if not args.freeze:
    params += list(vision.parameters())
optimizer = torch.optim.AdamW(params, lr=2e-3)


def logits(rows: torch.Tensor) -> torch.Tensor:
    tokens = torch.cat(vision(bank.at(rows, "cpu")).levels, dim=1)
    states, _ = attention(queries.expand(len(rows), -1, -1), tokens, tokens)
    return readout(states).squeeze(-1)


start = time.time()
for step in range(args.steps):
    batch = torch.randint(0, len(train_rows), (64,))
    loss = F.binary_cross_entropy_with_logits(logits(train_rows[batch]), train_y[batch])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if (step + 1) % max(1, args.steps // 4) == 0:
        with torch.no_grad():
            right = (logits(val_rows) > 0) == val_y.bool()
        print(json.dumps({"step": step + 1, "loss": round(loss.item(), 3),
                          "val_per_pair": round(right.float().mean().item(), 3),
                          "val_all_pairs_right": round(right.all(dim=1).float().mean().item(), 3),
                          "seconds": round(time.time() - start)}), flush=True)
