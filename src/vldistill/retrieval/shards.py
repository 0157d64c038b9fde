"""A gallery index built shard by shard (one cluster job each) and merged into one.

Every shard adds its embeddings to a copy of the same empty index: for IVF/PQ factories that
template is trained once, on a sample, so all shards share one quantizer and their inverted
lists can be concatenated. Ids run on across shards in shard order, i.e. the gallery's row order.
Flat and IVF factories merge; graph indexes (HNSW) do not (faiss has no merge for them).
"""

from __future__ import annotations

import faiss
import numpy as np


def empty_index(dim: int, factory: str = "Flat", sample: np.ndarray | None = None) -> faiss.Index:
    """The shared template: an empty index, trained on ``sample`` when the factory needs it."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        if sample is None:
            raise ValueError(f"{factory!r} needs training: pass a sample of the gallery")
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def shard_index(template: faiss.Index, embeddings: np.ndarray) -> faiss.Index:
    """One shard's index: the template plus this shard's (L2-normalised) embeddings."""
    index = faiss.clone_index(template)
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def merge_shards(shards: list[faiss.Index]) -> faiss.Index:
    """One index with every shard's vectors, ids offset so they follow the shard order."""
    if not shards:
        raise ValueError("no shard indexes to merge")
    merged = faiss.clone_index(shards[0])
    # IVF lists store ids, so each shard's are offset; flat codes are numbered by position
    ivf = faiss.try_extract_index_ivf(merged) is not None
    for shard in shards[1:]:
        merged.merge_from(shard, merged.ntotal if ivf else 0)
    return merged
