"""The gallery index stage: the split's images embedded by a Fast image tower into a faiss index,
in one job, or in ``shards`` jobs whose indexes are merged (retrieval.index.shards; for a
gallery too large for one job's time). Sharded and single-job builds give the same index: the
shards add their rows in gallery order to copies of one template, trained on the same first
vectors that the single job trains on (equal up to the float rounding of embedding the images
in other batches)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from vldistill.data.images import image_table
from vldistill.data.manifest import manifest_path
from vldistill.data.pixels import open_visual_bank
from vldistill.models.factory import load_fast
from vldistill.models.fast import FastDualEncoder
from vldistill.retrieval.gallery import GALLERY_BATCH
from vldistill.retrieval.index import (
    TRAIN_SIZE,
    build_index_from_batches,
    save_index,
    set_nprobe,
)
from vldistill.retrieval.shards import empty_index, merge_shards, shard_index
from vldistill.train.compute import evaluating

log = logging.getLogger(__name__)


def gallery_size(root: str | Path, split: str) -> int:
    return len(image_table([manifest_path(root, split, "images")]))


def shard_rows(n: int, shard: int, shards: int) -> tuple[int, int]:
    """Gallery rows [start, stop) of shard ``shard`` of ``shards``: contiguous, in gallery
    order, sizes differing by at most one."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards} does not exist")
    return n * shard // shards, n * (shard + 1) // shards


@torch.no_grad()
def gallery_embeddings(model: FastDualEncoder, root: str | Path, split: str,
                       rows: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The Fast image embeddings of the split's gallery (or of its ``rows`` [start, stop)), one
    batch at a time, read from the split's pixel file and embedded on the model's device:
    memory holds one batch, whatever the gallery's size."""
    bank = open_visual_bank(root, [split], model.cfg.image_size, model.cfg.frames)
    for pixels in bank.batches(GALLERY_BATCH, rows, device=model.device):
        yield model.encode_image(pixels).float().cpu().numpy()


def build_gallery_index(*, root: str | Path, fast_path: str | Path, split: str, factory: str,
                        nprobe: int | None, out_path: str | Path,
                        compute: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed the split's images with the Fast image tower (on ``compute``'s device) into a
    faiss index on disk."""
    model, _ = load_fast(fast_path)
    start = time.perf_counter()  # streamed: one batch of images in memory, whatever the size
    with evaluating(compute, model):
        index = build_index_from_batches(gallery_embeddings(model, root, split), factory,
                                         nprobe)
    return _finish(index, factory, time.perf_counter() - start, out_path, shards=1)


def build_index_template(*, root: str | Path, fast_path: str | Path, split: str, factory: str,
                         out_path: str | Path, train_size: int = TRAIN_SIZE,
                         compute: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shards' shared empty index: trained, for a factory that needs it (IVF, PQ), on the
    gallery's first ``train_size`` embeddings, as the single-job build trains."""
    model, _ = load_fast(fast_path)
    probe = faiss.index_factory(model.embed_dim, factory, faiss.METRIC_INNER_PRODUCT)
    sample = None
    if not probe.is_trained:
        rows = (0, min(train_size, gallery_size(root, split)))
        with evaluating(compute, model):
            sample = np.concatenate(list(gallery_embeddings(model, root, split, rows)))
    template = empty_index(model.embed_dim, factory, sample)
    save_index(template, out_path)
    info = {"factory": factory, "dim": template.d, "trained_on": 0 if sample is None
            else len(sample)}
    log.info("index template: %s", info)
    return info


def build_index_shard(*, root: str | Path, fast_path: str | Path, split: str,
                      template_path: str | Path, shard: int, shards: int,
                      out_path: str | Path, compute: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """One shard's index: the template plus the embeddings of the shard's gallery rows."""
    model, _ = load_fast(fast_path)
    rows = shard_rows(gallery_size(root, split), shard, shards)
    template = faiss.read_index(str(template_path))
    with evaluating(compute, model):
        parts = list(gallery_embeddings(model, root, split, rows))
    embeddings = (np.concatenate(parts) if parts
                  else np.zeros((0, template.d), dtype=np.float32))
    save_index(shard_index(template, embeddings), out_path)
    info = {"shard": shard, "shards": shards, "rows": list(rows)}
    log.info("index shard: %s", info)
    return info


def merge_index_shards(*, shard_paths: Sequence[str | Path], factory: str, nprobe: int | None,
                       out_path: str | Path) -> dict[str, Any]:
    """The shards' indexes merged in shard order: gallery row i is index id i, as in one job."""
    start = time.perf_counter()
    index = merge_shards([faiss.read_index(str(path)) for path in shard_paths])
    if nprobe is not None:
        set_nprobe(index, nprobe)
    return _finish(index, factory, time.perf_counter() - start, out_path,
                   shards=len(shard_paths))


def _finish(index: faiss.Index, factory: str, seconds: float, out_path: str | Path,
            shards: int) -> dict[str, Any]:
    save_index(index, out_path)
    info = {"gallery": index.ntotal, "dim": index.d, "factory": factory,
            "build_seconds": seconds, "shards": shards}
    log.info("index: %s", info)
    return info
