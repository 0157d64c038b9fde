"""Slow scoring throughput: pairs per second of the all-pairs h_slow matrix (Slow-only retrieval
evaluation; the distilled Fast model's in-batch targets) for a student of the default config
and one of the real configs' size, with random weights (speed does not depend on them).

    PYTHONPATH=src python benchmarks/slow_scoring.py [--threads 2]

Prints one JSON line per size: images, captions, pairs, seconds, pairs/s (best of --repeats).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from vldistill.models.config import StudentConfig
from vldistill.models.factory import create_student
from vldistill.models.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # config file, images, captions, output vocabulary (None: the captions' own tokens)
    "default": ("config.yaml", 32, 64, None),
    # COCO's captions use about 10k distinct BPE tokens: the Slow model's closed vocabulary
    "real (coco.yaml)": ("configs/coco.yaml", 4, 16, 10_000),
}
CAPTIONS = ["two red circles left of a blue square on a light grey background",
            "a small green triangle", "three shapes", "one yellow star above a purple circle"]


def measure(config_file: str, n_images: int, n_captions: int, vocabulary: int | None,
            repeats: int) -> dict:
    student = yaml.safe_load((ROOT / config_file).read_text())["student"]
    cfg = StudentConfig.from_dict(student)
    torch.manual_seed(0)
    model = create_student(cfg).eval()
    images = torch.rand(n_images, 3, cfg.image_size, cfg.image_size) * 2 - 1
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(n_captions)]
    ids, mask = Tokenizer(cfg.context_length)(texts)
    # as the trained Slow model does (caption_vocabulary): a closed output vocabulary
    closed = sorted(set(ids[mask].tolist()) | set(range(1, (vocabulary or 0) + 1)))
    model.decoder.set_output_vocabulary(closed)
    with torch.no_grad():
        levels = model.encode_image(images).levels  # the gallery is encoded once either way
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model.decoder.pairwise_scores(levels, ids, mask, max_pairs=256)
            best = min(best, time.perf_counter() - start)
    pairs = n_images * n_captions
    return {"size": config_file, "width": cfg.width, "image_size": cfg.image_size,
            "output_vocabulary": len(closed), "images": n_images, "captions": n_captions,
            "pairs": pairs,
            "seconds": round(best, 3), "pairs_per_s": round(pairs / best, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for config_file, n_images, n_captions, vocabulary in SIZES.values():
        print(json.dumps(measure(config_file, n_images, n_captions, vocabulary, args.repeats)),
              flush=True)


if __name__ == "__main__":
    main()
