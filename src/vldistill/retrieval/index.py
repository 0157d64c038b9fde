"""The gallery index: L2-normalised image embeddings in a faiss index built from a factory string.

``factory`` is any ``faiss.index_factory`` description ("Flat" exact search by default;
"IVF256,Flat", "HNSW32", "IVF1024,PQ32" for large galleries) over inner product, which equals
cosine similarity on normalised vectors. Indexes that need training are trained on the gallery
itself. With GPU faiss and a GPU the index is searched there; the file is always the CPU form.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from vldistill.io import atomic_output

log = logging.getLogger(__name__)

# Vectors an IVF/PQ index is trained on: faiss wants ~40-256 per list; 1024 lists x 64.
TRAIN_SIZE = 65_536


def build_index(embeddings: np.ndarray, factory: str = "Flat", nprobe: int | None = None
                ) -> faiss.Index:
    """A faiss index over ``embeddings`` [N, D] (float32, rows L2-normalised) with inner product."""
    return build_index_from_batches([embeddings], factory, nprobe)


def build_index_from_batches(batches: Iterable[np.ndarray], factory: str = "Flat",
                             nprobe: int | None = None, train_size: int = TRAIN_SIZE
                             ) -> faiss.Index:
    """The same index, fed batch by batch: memory holds one batch and the index itself.

    An index that needs training (IVF, PQ) is trained on the first ``train_size`` vectors (all
    of them for a smaller gallery), which are kept until then and added after training.
    """
    index, held = None, []
    for batch in batches:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"expected embeddings [N, D] with N > 0, got shape {x.shape}")
        if index is None:
            try:
                index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as error:
                raise ValueError(f"faiss cannot build index {factory!r}: {error}") from None
        if index.is_trained:
            index.add(x)
            continue
        held.append(x)
        if sum(len(h) for h in held) >= train_size:
            _train_and_add(index, held)
            held = []
    if index is None:
        raise ValueError("expected embeddings [N, D] with N > 0, got no vectors")
    if held:
        _train_and_add(index, held)
    if nprobe is not None:
        set_nprobe(index, nprobe)
    return index


def _train_and_add(index: faiss.Index, held: list[np.ndarray]) -> None:
    sample = np.concatenate(held)
    index.train(sample)
    index.add(sample)


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """How many inverted lists an IVF index visits per query (ignored by other indexes)."""
    with contextlib.suppress(RuntimeError):  # raised for an index without inverted lists
        faiss.extract_index_ivf(index).nprobe = nprobe


def save_index(index: faiss.Index, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_index(path: str | Path, gpu: bool = True) -> faiss.Index:
    """Read an index; move it to the GPU when GPU faiss and a GPU are present and ``gpu``."""
    index = faiss.read_index(str(path))
    if gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        log.info("searching %s on the GPU", path)
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


# GPU faiss selects at most 2048 neighbours per query (its k-selection kernels); CPU faiss has no
# limit, but one limit for both keeps a search's result independent of where it runs.
MAX_SEARCH_K = 2048


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores [Q, k], gallery rows [Q, k]) per query, best first.

    ``k`` is capped at the gallery size and must not exceed ``MAX_SEARCH_K``: a metric that needs
    a rank beyond the top k computes it from exact scores instead. A non-exhaustive index (IVF
    with nprobe < nlist, HNSW) may find fewer than k: the missing rows are -1, their scores -inf.
    """
    k = min(k, index.ntotal)
    if k > MAX_SEARCH_K:
        raise ValueError(f"searching the top {k} exceeds faiss's GPU limit of {MAX_SEARCH_K}; "
                         "rank beyond it from exact scores")
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    scores[rows < 0] = -np.inf  # faiss pads with -FLT_MAX for inner product
    return scores, rows
