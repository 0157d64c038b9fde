"""Training and scoring throughput of the student's stages at a config's model size, with random
weights and random batches (speed does not depend on them): examples/s, GFLOPs per example
(counted on the step), achieved TFLOP/s and MFU, plus Slow pairs/s. A few minutes on a GPU.

    PYTHONPATH=src python benchmarks/gpu_bench.py [--config configs/coco.yaml] [--device cuda]
        [--precision bf16] [--batch 64] [--steps 20] [--peak-tflops 989]

Prints one JSON line per stage. On a CPU (``--device cpu``) MFU is left out (no known peak).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.factory import create_fast, create_student
from vldistill.retrieval.losses import info_nce
from vldistill.train.compute import Compute
from vldistill.train.throughput import measure, peak_flops

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser()
parser.add_argument("--config", default=str(ROOT / "configs/coco.yaml"))
parser.add_argument("--device", default="cuda")
parser.add_argument("--precision", default="bf16")
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--peak-tflops", type=float, default=None)
args = parser.parse_args()

config = yaml.safe_load((ROOT / "config.yaml").read_text())
overlay = yaml.safe_load(Path(args.config).read_text())
cfg = StudentConfig.from_dict({**config["student"], **overlay.get("student", {})})
compute = Compute(device=args.device, precision=args.precision)
device = compute.torch_device()
peak = peak_flops(device, args.peak_tflops)
torch.manual_seed(0)
b, length = args.batch, cfg.context_length
images = torch.rand(b, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1
ids = torch.randint(1, 10_000, (b, length), device=device)
mask = torch.ones(b, length, dtype=torch.bool, device=device)
# one student for every stage; its VQA head (VQA v2's 3,000 answers) serves fine-tuning
student = create_student(cfg, HeadsConfig(vqa_answers=3_000)).to(device)
student.decoder.set_output_vocabulary(list(range(10_000)))
optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)


def student_step() -> None:
    """Pre-training's shape of step (train/pretrain.py): both encoders, captioning both ways,
    and four fusion passes for ITM (the positive pairs, two ITC-mined negatives, the hard
    negatives, whose text is encoded too). Which pairs are fused does not change the FLOPs."""
    vision = student.encode_image(images)
    text = student.encode_text(ids, mask)
    negative_text = student.encode_text(ids, mask)
    itm = sum(student.heads("itm", student.fuse(vision, t, mask).pooled).float().mean()
              for t in (text, text, text, negative_text))
    loss = student.caption_loss_from_levels(vision.levels, ids, mask) + itm
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def slow_step() -> None:
    """The Slow model's training step (retrieval_slow): the image pyramid and the
    bidirectional captioning loss over it."""
    vision = student.encode_image(images)
    loss = student.caption_loss_from_levels(vision.levels, ids, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


fast = create_fast(cfg, 256, None).to(device)
fast_optimizer = torch.optim.AdamW(fast.parameters(), lr=1e-4)


def fast_step() -> None:
    similarity = fast.encode_image(images) @ fast.encode_text(ids, mask).T
    loss = info_nce(similarity.float(), 0.07)
    fast_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    fast_optimizer.step()


answers = torch.rand(b, 3_000, device=device)


def finetune_step() -> None:
    """Fine-tuning's shape of step: both encoders, fusion, a task head (VQA's soft BCE)."""
    logits = student.forward_task("vqa", images, ids, mask)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), answers)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# Slow scoring as a gallery evaluation does it: the images' pyramids computed once, offline
# (gallery_levels), then every (image, caption) pair scored with each image's cross-attention
# keys and values shared by its captions
n_images = min(8, b)
with torch.no_grad(), compute.autocast(device):
    levels = student.encode_image(images[:n_images]).levels


@torch.no_grad()
def slow_scoring() -> None:
    student.decoder.pairwise_scores(levels, ids, mask, max_pairs=256)


runs = {"student (pre-training shape)": (student_step, b),
        "student (fine-tuning shape, VQA head)": (finetune_step, b),
        "slow captioner training": (slow_step, b),
        "fast dual encoder": (fast_step, b),
        "slow scoring (pairs, pyramids precomputed)": (slow_scoring, n_images * b)}
for name, (step, examples) in runs.items():
    result = measure(step, examples, device, compute, steps=args.steps, peak=peak)
    print(json.dumps({"stage": name, "config": Path(args.config).name, "device": str(device),
                      "device_name": (torch.cuda.get_device_name(device)
                                      if device.type == "cuda" else "cpu"),
                      "precision": args.precision, "batch": b, **result.as_dict()}))
