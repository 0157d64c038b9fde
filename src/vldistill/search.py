"""Search an image collection by text: a run's Fast model and faiss index, re-ranked by its Slow
model if asked.

    python -m vldistill.search "a red circle left of a blue square" --dataset default -k 10
    python -m vldistill.search "two cats" --dataset coco --rerank 50 --json
    python -m vldistill.search "a dog" --images ~/photos --fast models/coco/.../fast.safetensors

A run's collection is the retrieval split the workflow indexed (``indexes/<dataset>/seed-<s>/
<model>.faiss``, rows in the split's images-manifest order); ``--images`` embeds and indexes a
folder instead (``--save-index`` keeps that index for the next search). Re-ranking scores the
Fast top ``--rerank`` with h_slow + beta * h_fast, as the workflow's rerank rule does, decoding
only those candidates. Latency is per stage, in milliseconds, for this one query.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import torch

from vldistill.data.images import decode_resized, image_table, normalise
from vldistill.data.manifest import SPLITS, BadExampleError, manifest_path
from vldistill.data.video import VIDEO_SUFFIXES, read_clip
from vldistill.models.factory import load_fast, load_slow
from vldistill.models.fast import FastDualEncoder
from vldistill.models.student import Student
from vldistill.models.tokenizer import Tokenizer, trim_padding
from vldistill.retrieval.index import (
    MAX_SEARCH_K,
    build_index_from_batches,
    load_index,
    save_index,
    search,
)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif",
                                   ".tiff")
FAST_MODELS: tuple[str, ...] = ("fast_distilled", "fast")
BATCH = 64


@dataclass(frozen=True)
class Collection:
    """What an index's rows are: ``table`` (image_id, image_path) in row order, paths under
    ``root`` (or absolute)."""

    root: Path
    table: pl.DataFrame
    index: faiss.Index

    def path(self, row: int) -> Path:
        return self.root / self.table["image_path"][row]


@dataclass(frozen=True)
class Hit:
    rank: int
    image_id: str
    path: str
    score: float  # what the order is by: h_fast, or h_slow + beta * h_fast when re-ranked
    fast_score: float
    slow_score: float | None = None


@dataclass(frozen=True)
class RunFiles:
    fast: Path
    index: Path
    slow: Path
    data: Path


def run_files(run: str | Path, dataset: str, seed: int, model: str) -> RunFiles:
    """Where a workflow run keeps a dataset's retrieval models, index and data."""
    if model not in FAST_MODELS:
        raise ValueError(f"--model must be one of {FAST_MODELS}, got {model!r}")
    run = Path(run)
    models = run / "models" / dataset / "retrieval" / f"seed-{seed}"
    return RunFiles(fast=models / f"{model}.safetensors",
                    index=run / "indexes" / dataset / f"seed-{seed}" / f"{model}.faiss",
                    slow=models / "slow.safetensors", data=run / "data" / dataset)


def require(path: Path, what: str, target: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}: build it first with "
                                f"`snakemake --cores all {target}` (or pass the right --run, "
                                "--dataset, --seed)")
    return path


def index_split(index_path: Path) -> str:
    """The split an index was built on, as its rule recorded it beside the index."""
    info = index_path.with_suffix(".json")
    split = json.loads(info.read_text()).get("split") if info.exists() else None
    if split is None:
        raise ValueError(f"{info} does not say which split {index_path} holds: pass --split")
    return split


def run_collection(files: RunFiles, split: str | None = None) -> Collection:
    """The split the run's index was built on (by default the one its rule recorded), checked
    against the index's size."""
    split = split or index_split(require(files.index, "index", str(files.index)))
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {split!r}")
    index = load_index(require(files.index, "index", str(files.index)))
    manifest = require(manifest_path(files.data, split, "images"), f"{split} images manifest",
                       str(files.index))
    table = image_table([manifest])
    if len(table) != index.ntotal:
        raise ValueError(f"{files.index} holds {index.ntotal} images but the {split} split of "
                         f"{files.data} has {len(table)}: pass the split the index was built "
                         "on (config retrieval.split) with --split, or rebuild the index")
    return Collection(files.data, table, index)


def folder_table(folder: str | Path, frames: int) -> pl.DataFrame:
    """Every image (clips, for a model of ``frames`` > 1) below ``folder``, by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"--images {folder}: not a folder")
    suffixes = IMAGE_SUFFIXES if frames == 1 else VIDEO_SUFFIXES
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in suffixes)
    if not paths:
        raise ValueError(f"--images {folder}: no files ending in {', '.join(suffixes)}")
    return pl.DataFrame({"image_id": paths, "image_path": paths})


def decode_rows(root: Path, table: pl.DataFrame, size: int, frames: int) -> torch.Tensor:
    """The model's input for these rows: normalised [B, 3, S, S], or [B, T, 3, S, S] clips."""
    arrays = []
    for image_id, rel_path in zip(table["image_id"], table["image_path"], strict=True):
        if frames == 1:
            arrays.append(decode_resized(root, rel_path, image_id, size))
            continue
        try:
            arrays.append(read_clip(root / rel_path, frames, size))
        except BadExampleError as exc:
            raise BadExampleError(f"{exc} (image_id {image_id})") from exc
    pixels = torch.from_numpy(np.stack(arrays))
    return normalise(pixels.movedim(-1, -3).contiguous())  # channels before height and width


@torch.no_grad()
def folder_collection(folder: str | Path, fast: FastDualEncoder, factory: str = "Flat",
                      batch_size: int = BATCH) -> Collection:
    """A folder's images embedded by the Fast image tower into a new index (one batch of
    decoded images in memory at a time)."""
    root, cfg = Path(folder), fast.cfg
    table = folder_table(root, cfg.frames)
    batches = (fast.encode_image(decode_rows(root, table[i:i + batch_size], cfg.image_size,
                                             cfg.frames).to(fast.device)).cpu().numpy()
               for i in range(0, len(table), batch_size))
    return Collection(root, table, build_index_from_batches(batches, factory))


def _ms(start: float) -> float:
    return 1000 * (time.perf_counter() - start)


@torch.no_grad()
def search_collection(query: str, fast: FastDualEncoder, collection: Collection, k: int,
                      slow: tuple[Student, Sequence[str]] | None = None, rerank: int = 0,
                      beta: float = 1.0) -> tuple[list[Hit], dict[str, float]]:
    """The top ``k`` images for ``query`` and the milliseconds each stage took. With ``slow``
    and ``rerank`` = K >= k, the Fast top K are re-ordered by h_slow + beta * h_fast."""
    if not query.strip():
        raise ValueError("the query is empty")
    if k < 1:
        raise ValueError(f"-k must be >= 1, got {k}")
    if rerank and (slow is None or rerank < k):
        raise ValueError(f"--rerank {rerank} needs the Slow model and must be >= -k {k}")
    wanted = max(k, rerank)
    if wanted > MAX_SEARCH_K:
        raise ValueError(f"faiss searches at most the top {MAX_SEARCH_K}; lower -k / --rerank")
    latency: dict[str, float] = {}
    tokenizer = Tokenizer(fast.cfg.context_length)  # loaded once in a deployed system: untimed
    start = time.perf_counter()
    ids, mask = tokenizer(query)
    embedding = fast.encode_text(*trim_padding(ids, mask, fast.device))
    latency["encode"] = _ms(start)
    start = time.perf_counter()
    fast_scores, rows = search(collection.index, embedding.float().cpu().numpy(), wanted)
    latency["search"] = _ms(start)
    found = rows[0] >= 0  # a non-exhaustive index may return fewer
    rows, fast_scores = rows[0][found], fast_scores[0][found]
    slow_scores = None
    if rerank:
        start = time.perf_counter()
        slow_scores = slow_candidate_scores(slow, collection, rows, ids, mask)
        combined = slow_scores + beta * fast_scores
        order = np.argsort(-combined, kind="stable")  # ties keep the Fast order
        latency["rerank"] = _ms(start)
    else:
        combined, order = fast_scores, np.arange(len(rows))
    latency["total"] = sum(latency.values())
    hits = [Hit(rank=place + 1, image_id=collection.table["image_id"][int(rows[i])],
                path=str(collection.path(int(rows[i]))), score=float(combined[i]),
                fast_score=float(fast_scores[i]),
                slow_score=None if slow_scores is None else float(slow_scores[i]))
            for place, i in enumerate(order[:k])]
    return hits, latency


def slow_candidate_scores(slow: tuple[Student, Sequence[str]], collection: Collection,
                          rows: np.ndarray, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """h_slow of the query with each candidate image: only the candidates are decoded and
    their pyramids built."""
    model, directions = slow
    device = next(model.parameters()).device
    pixels = decode_rows(collection.root, collection.table[rows.tolist()], model.cfg.image_size,
                         model.cfg.frames)
    levels = model.encode_image(pixels.to(device)).levels
    scores = model.decoder.pairwise_scores(levels, ids.to(device), mask.to(device),
                                           directions=directions)
    return scores[:, 0].float().cpu().numpy()


def format_hits(query: str, hits: Sequence[Hit], latency: dict[str, float]) -> str:
    lines = [f"query: {query}"]
    reranked = any(hit.slow_score is not None for hit in hits)
    lines.append(f"{'rank':>4}  {'score':>8}  {'fast':>8}  " + (f"{'slow':>9}  " if reranked
                                                                else "") + "path")
    for hit in hits:
        slow = f"{hit.slow_score:9.3f}  " if hit.slow_score is not None else ""
        lines.append(f"{hit.rank:>4}  {hit.score:8.4f}  {hit.fast_score:8.4f}  {slow}{hit.path}")
    lines.append("latency: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in latency.items()))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vldistill.search", description=(
        "Search images by text with a run's Fast model and index (re-ranked by its Slow model "
        "with --rerank), or with a Fast model over a folder of images (--images)."))
    parser.add_argument("query", help="the text to search for")
    parser.add_argument("-k", type=int, default=10, help="how many images to list (10)")
    parser.add_argument("--run", default=".", help="the workflow directory (.)")
    parser.add_argument("--dataset", help="dataset name (config dataset.name); needed unless "
                        "the run has exactly one dataset with retrieval models")
    parser.add_argument("--seed", type=int, default=0, help="retrieval seed (0)")
    parser.add_argument("--model", default="fast_distilled", choices=FAST_MODELS)
    parser.add_argument("--split", help="the split the index holds (default: the one its "
                        "rule recorded, config retrieval.split)")
    parser.add_argument("--rerank", type=int, default=0, metavar="K",
                        help="re-rank the Fast top K with the Slow model (0: no re-ranking)")
    parser.add_argument("--beta", type=float, default=1.0,
                        help="weight of h_fast in the re-ranking score (config "
                        "retrieval.rerank.beta; 1.0)")
    parser.add_argument("--images", help="search this folder instead of the run's index")
    parser.add_argument("--fast", help="Fast checkpoint (default: the run's --model)")
    parser.add_argument("--slow", help="Slow checkpoint (default: the run's)")
    parser.add_argument("--factory", default="Flat", help="faiss index for --images (Flat)")
    parser.add_argument("--save-index", help="with --images: write the index here")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def only_dataset(run: Path) -> str:
    found = sorted(p.parent.name for p in (run / "models").glob("*/retrieval"))
    if len(found) != 1:
        raise ValueError(f"pass --dataset: {run / 'models'} holds retrieval models of "
                         f"{found or 'no dataset'}")
    return found[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dataset = args.dataset
        if dataset is None and not (args.images and args.fast and (args.slow or not args.rerank)):
            dataset = only_dataset(Path(args.run))
        files = run_files(args.run, dataset or "", args.seed, args.model)
        fast_path = Path(args.fast) if args.fast else require(files.fast, "Fast model",
                                                               str(files.fast))
        fast, _ = load_fast(fast_path)
        fast.to(args.device)
        slow = None
        if args.rerank:
            slow_path = Path(args.slow) if args.slow else require(files.slow, "Slow model",
                                                                  str(files.slow))
            model, directions = load_slow(slow_path)
            slow = (model.to(args.device), directions)
        if args.images:
            collection = folder_collection(args.images, fast, args.factory)
            if args.save_index:
                save_index(collection.index, args.save_index)
        else:
            collection = run_collection(files, args.split)
        hits, latency = search_collection(args.query, fast, collection, args.k, slow,
                                          args.rerank, args.beta)
    except (ValueError, FileNotFoundError, NotADirectoryError, BadExampleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"query": args.query, "k": args.k, "rerank": args.rerank,
                          "gallery": collection.index.ntotal,
                          "hits": [asdict(hit) for hit in hits], "latency_ms": latency},
                         indent=2))
    else:
        print(format_hits(args.query, hits, latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
