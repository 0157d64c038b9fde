import numpy as np
import pytest

from vldistill.retrieval.index import (
    MAX_SEARCH_K,
    build_index,
    build_index_from_batches,
    load_index,
    save_index,
    search,
)


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


def test_k_above_the_gpu_limit_is_refused_and_missing_neighbours_read_minus_one():
    rng = np.random.default_rng(4)
    index = build_index(normalised(rng, MAX_SEARCH_K + 10, 8))
    assert search(index, normalised(rng, 1, 8), MAX_SEARCH_K)[1].shape == (1, MAX_SEARCH_K)
    with pytest.raises(ValueError, match="GPU limit of 2048"):
        search(index, normalised(rng, 1, 8), MAX_SEARCH_K + 1)
    # IVF visiting 1 of 16 lists cannot fill the top 100: faiss pads with -1
    ivf = build_index(normalised(rng, 320, 8), "IVF16,Flat", nprobe=1)
    scores, rows = search(ivf, normalised(rng, 5, 8), 100)
    assert (rows < 0).any() and np.isneginf(scores[rows < 0]).all()
    assert np.isfinite(scores[rows >= 0]).all()


@pytest.mark.parametrize("factory, train_size", [("Flat", 0), ("IVF8,Flat", 150)])
def test_an_index_fed_in_batches_holds_the_same_vectors(tmp_path, factory, train_size):
    """Streaming keeps one batch in memory; a Flat index is byte-identical to the one-shot
    build, an IVF one trained on its first vectors still finds every gallery row exactly."""
    rng = np.random.default_rng(3)
    gallery, queries = normalised(rng, 400, 16), normalised(rng, 20, 16)
    batches = (gallery[i:i + 64] for i in range(0, len(gallery), 64))
    streamed = build_index_from_batches(batches, factory, nprobe=8, train_size=train_size)
    assert streamed.ntotal == len(gallery)
    scores, _ = search(streamed, queries, 5)
    np.testing.assert_allclose(scores, exact_top_k(gallery, queries, 5)[0], rtol=1e-5, atol=1e-5)
    if factory == "Flat":
        save_index(streamed, tmp_path / "a.faiss")
        save_index(build_index(gallery, factory), tmp_path / "b.faiss")
        assert (tmp_path / "a.faiss").read_bytes() == (tmp_path / "b.faiss").read_bytes()


def test_a_pixel_file_reads_the_rows_the_in_memory_bank_holds(tmp_path):
    import numpy as np
    import torch

    from vldistill.data.images import load_image_bank
    from vldistill.data.manifest import manifest_path
    from vldistill.data.pixels import open_visual_bank, pixel_path, write_pixel_file
    from vldistill.synthetic.images import SyntheticConfig, generate

    generate(SyntheticConfig(counts={"train": 3, "val": 1, "test": 7, "test_shifted": 1}),
             tmp_path, seed=0, progress=False)
    in_memory = load_image_bank(tmp_path, [manifest_path(tmp_path, s, "images")
                                           for s in ("train", "test")], 48, progress=False)
    for split in ("train", "test"):
        write_pixel_file(tmp_path, split, 48, progress=False)
    # the file is a plain .npy array, for anyone to open
    assert np.load(pixel_path(tmp_path, "test"), mmap_mode="r").shape == (7, 3, 48, 48)
    bank = open_visual_bank(tmp_path, ["train", "test"], 48)
    assert bank.ids == in_memory.ids and bank.pixels.shape == in_memory.pixels.shape
    rows = torch.tensor([9, 0, 3, 3, 2])  # across both files, repeated, out of order
    assert torch.equal(bank.at(rows), in_memory.at(rows))
    streamed = torch.cat(list(bank.batches(3, rows=(2, 10))))
    assert torch.equal(streamed, in_memory.at(torch.arange(2, 10)))
    assert streamed.is_contiguous()
    # a loader worker gets the bank by pickling (spawn) or forking: either reads the same rows
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(bank)).at(rows), in_memory.at(rows))
    with pytest.raises(ValueError, match="student.image_size"):
        open_visual_bank(tmp_path, ["test"], 64)
    with pytest.raises(IndexError):
        bank.at(torch.tensor([10]))
    # an image in two splits (COCO's VQA test and shifted test can share one) is in the bank
    # once, at its first copy, as in the in-memory bank
    shared = open_visual_bank(tmp_path, ["test", "train", "test"], 48)
    twice = load_image_bank(tmp_path, [manifest_path(tmp_path, s, "images")
                                       for s in ("test", "train", "test")], 48, progress=False)
    assert shared.ids == twice.ids and len(shared) == 10
    assert torch.equal(shared.at(torch.arange(10)), twice.at(torch.arange(10)))
    path = pixel_path(tmp_path, "test")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        open_visual_bank(tmp_path, ["test"], 48)
