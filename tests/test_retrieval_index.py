import numpy as np
import pytest

from vldistill.retrieval.index import build_index, load_index, save_index, search


def normalised(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top_k(gallery, queries, k):
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_flat_index_equals_exact_search_and_survives_a_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    gallery, queries = normalised(rng, 500, 32), normalised(rng, 40, 32)
    index = build_index(gallery, "Flat")
    save_index(index, tmp_path / "gallery.faiss")
    scores, rows = search(load_index(tmp_path / "gallery.faiss"), queries, 10)
    ref_scores, ref_rows = exact_top_k(gallery, queries, 10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert (rows == ref_rows).mean() > 0.99  # only exact float ties may swap


def test_ivf_visiting_every_list_is_exact():
    rng = np.random.default_rng(1)
    gallery, queries = normalised(rng, 400, 16), normalised(rng, 20, 16)
    scores, rows = search(build_index(gallery, "IVF8,Flat", nprobe=8), queries, 5)
    ref_scores, ref_rows = exact_top_k(gallery, queries, 5)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_k_is_capped_at_the_gallery_size_and_bad_factories_are_named():
    rng = np.random.default_rng(2)
    index = build_index(normalised(rng, 3, 8))
    _, rows = search(index, normalised(rng, 2, 8), 50)
    assert rows.shape == (2, 3) and sorted(rows[0].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="NotAnIndex"):
        build_index(normalised(rng, 3, 8), "NotAnIndex")
