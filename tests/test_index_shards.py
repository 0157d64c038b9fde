import numpy as np
import pytest

from vldistill.retrieval.index import build_index, search
from vldistill.retrieval.shards import empty_index, merge_shards, shard_index


def gallery(n=300, dim=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_shards_merged_search_like_one_index_over_the_whole_gallery(factory):
    x, queries = gallery(), gallery(20, seed=1)
    template = empty_index(x.shape[1], factory, sample=x)
    merged = merge_shards([shard_index(template, part) for part in np.array_split(x, 3)])
    assert merged.ntotal == len(x)
    whole = shard_index(template, x)  # the same trained quantizer, all rows at once
    if factory == "Flat":
        whole = build_index(x, factory)
    for index in (merged, whole):
        if hasattr(index, "nprobe"):
            index.nprobe = 8  # every list: exact, so both must agree
    scores, ids = search(merged, queries, 5)
    want_scores, want_ids = search(whole, queries, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)


def test_an_untrained_factory_needs_a_sample():
    with pytest.raises(ValueError, match="needs training"):
        empty_index(16, "IVF8,Flat")
