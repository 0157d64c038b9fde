"""Slow and Fast training on a few generated scenes: the stages run, write what they claim,
and the Fast towers start from the student's."""

import pytest
import torch
from safetensors.torch import load_file

from vldistill.models.config import StudentConfig
from vldistill.models.factory import (
    create_fast,
    create_student,
    load_fast,
    load_slow,
    save_checkpoint,
)
from vldistill.stages.retrieval import train_fast, train_slow
from vldistill.synthetic.images import SyntheticConfig, generate

STUDENT = {"image_size": 64, "width": 32, "pyramid_channels": [8, 16, 32], "heads": 2,
           "text_layers": 1, "fusion_layers": 1, "decoder_layers": 3, "context_length": 32}
TRAINING = {"steps": 2, "batch_size": 6, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 1}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes")
    generate(SyntheticConfig(counts={"train": 6, "val": 2, "test": 4, "test_shifted": 2}), path,
             seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student") / "mad.safetensors"
    save_checkpoint(path, create_student(StudentConfig.from_dict(STUDENT)))
    return path


def test_slow_trains_forward_only_single_scale_and_remembers_it(root, student_checkpoint,
                                                                 tmp_path):
    summary = train_slow(root=root, init="mad", start=student_checkpoint, student=STUDENT,
                         progressive=False, directions=["forward"], training=TRAINING, seed=0,
                         out_path=tmp_path / "slow.safetensors",
                         metrics_path=tmp_path / "slow.json")
    assert summary["steps"] == 2 and summary["directions"] == ["forward"]
    slow, directions = load_slow(tmp_path / "slow.safetensors")
    assert directions == ("forward",)
    assert slow.decoder.level_for_layer == (0, 0, 0)
    assert not list(tmp_path.glob(".slow.state-*"))  # resumable state removed on success


def test_fast_towers_start_from_the_student_and_distillation_runs(root, student_checkpoint,
                                                                   tmp_path):
    fast = create_fast(StudentConfig.from_dict(STUDENT), 16, student_checkpoint)
    student = load_file(str(student_checkpoint))
    assert torch.equal(fast.state_dict()["vision.stem.0.conv.weight"],
                       student["vision.stem.0.conv.weight"])
    train_slow(root=root, init="scratch", start=None, student=STUDENT, progressive=True,
               directions=["forward", "backward"], training=TRAINING, seed=0,
               out_path=tmp_path / "slow.safetensors", metrics_path=tmp_path / "slow.json")
    summary = train_fast(root=root, init="mad", start=student_checkpoint, student=STUDENT,
                         embed_dim=16, temperature=0.1, training=TRAINING, seed=0,
                         distill={"alpha": 1.0, "tau_slow": 0.5, "slow_batch": 3},
                         slow_path=tmp_path / "slow.safetensors",
                         out_path=tmp_path / "fast.safetensors",
                         metrics_path=tmp_path / "fast.json")
    assert {"nce", "kl"} <= set(summary["final"])
    model, extra = load_fast(tmp_path / "fast.safetensors")
    assert extra["distilled"] and model.embed_dim == 16
    with torch.no_grad():
        emb = model.encode_image(torch.zeros(2, 3, 64, 64))
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_the_distilled_fast_model_needs_the_slow_checkpoint(root, student_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="Slow checkpoint"):
        train_fast(root=root, init="mad", start=student_checkpoint, student=STUDENT,
                   embed_dim=16, temperature=0.1, training=TRAINING, seed=0,
                   distill={"alpha": 1.0, "tau_slow": 0.5}, slow_path=None,
                   out_path=tmp_path / "f.safetensors", metrics_path=tmp_path / "f.json")


def test_index_fast_slow_and_rerank_evaluate_one_gallery(root, student_checkpoint, tmp_path):
    from vldistill.stages.index import build_gallery_index
    from vldistill.stages.retrieval import evaluate_fast, evaluate_rerank, evaluate_slow

    train_slow(root=root, init="mad", start=student_checkpoint, student=STUDENT,
               progressive=True, directions=["forward", "backward"], training=TRAINING, seed=0,
               out_path=tmp_path / "slow.safetensors", metrics_path=tmp_path / "slow.json")
    train_fast(root=root, init="mad", start=student_checkpoint, student=STUDENT, embed_dim=16,
               temperature=0.1, training=TRAINING, seed=0, distill=None, slow_path=None,
               out_path=tmp_path / "fast.safetensors", metrics_path=tmp_path / "fast.json")
    info = build_gallery_index(root=root, fast_path=tmp_path / "fast.safetensors", split="test",
                               factory="Flat", nprobe=None, out_path=tmp_path / "fast.faiss")
    assert info["gallery"] == 4
    common = {"root": root, "split": "test", "captions_per_image": 2}
    fast = evaluate_fast(fast_path=tmp_path / "fast.safetensors",
                         index_path=tmp_path / "fast.faiss",
                         ranks_path=tmp_path / "fast.ranks.parquet", **common)
    slow = evaluate_slow(slow_path=tmp_path / "slow.safetensors",
                         ranks_path=tmp_path / "slow.ranks.parquet", **common)
    assert fast["queries"] == slow["queries"] == 8 and fast["t2i"]["n"] == 8
    assert slow["slow_calls_per_query"] == 4 and slow["latency_ms_per_query"]["slow"] > 0
    assert 0 < slow["t2i_ceiling"]["R@1"] <= 100 and slow["t2i_ceiling"]["n"] == 8
    assert fast["i2t"]["n"] == 4
    whole = evaluate_rerank(fast_path=tmp_path / "fast.safetensors",
                            index_path=tmp_path / "fast.faiss",
                            slow_path=tmp_path / "slow.safetensors", k=4, beta=0.0,
                            ranks_path=tmp_path / "rerank.ranks.parquet", **common)
    check_query_ranks(root, tmp_path, {"fast": fast, "slow": slow, "rerank": whole})
    # beta = 0 over the whole gallery ranks as Slow alone does
    assert whole["k"] == 4 and whole["t2i"]["R@1"] == slow["t2i"]["R@1"]
    with pytest.raises(ValueError, match="top 5 needs at least 5 gallery images.*holds 4"):
        evaluate_rerank(fast_path=tmp_path / "fast.safetensors",
                        index_path=tmp_path / "fast.faiss",
                        slow_path=tmp_path / "slow.safetensors", k=5, beta=0.0, **common)
    check_hard_negatives(root, tmp_path, fast, slow)
    top1 = evaluate_rerank(fast_path=tmp_path / "fast.safetensors",
                           index_path=tmp_path / "fast.faiss",
                           slow_path=tmp_path / "slow.safetensors", k=1, beta=0.5, **common)
    # re-ranking one candidate cannot change the order: R@K equals Fast's
    assert top1["t2i"]["R@1"] == fast["t2i"]["R@1"] and top1["slow_calls_per_query"] == 1
    # in bf16 (autocast, on the CPU here as on a GPU) the same evaluations run and rank alike
    bf16 = {"compute": {"device": "cpu", "precision": "bf16"}, **common}
    slow16 = evaluate_slow(slow_path=tmp_path / "slow.safetensors", **bf16)
    whole16 = evaluate_rerank(fast_path=tmp_path / "fast.safetensors",
                              index_path=tmp_path / "fast.faiss",
                              slow_path=tmp_path / "slow.safetensors", k=4, beta=0.0, **bf16)
    fast16 = evaluate_fast(fast_path=tmp_path / "fast.safetensors",
                           index_path=tmp_path / "fast.faiss", **bf16)
    assert whole16["t2i"]["R@1"] == slow16["t2i"]["R@1"]
    for full, half in ((slow, slow16), (fast, fast16)):
        assert abs(half["t2i"]["median_rank"] - full["t2i"]["median_rank"]) <= 1



def check_query_ranks(root, tmp_path, results: dict) -> None:
    """Each model's per-query gold ranks name the queries (their caption ids, the same for every
    model) and give back its R@K and median rank, ties included."""
    import polars as pl

    from vldistill.eval.retrieval import ranks_metrics
    from vldistill.results.ranks import read_query_ranks

    captions = pl.read_parquet(root / "manifest/test/captions.parquet")
    queries = None
    for name, result in results.items():
        ids, ranks = read_query_ranks(tmp_path / f"{name}.ranks.parquet")
        assert len(ids) == result["t2i"]["n"] and set(ids) <= set(captions["caption_id"])
        queries = ids if queries is None else queries
        assert ids == queries
        assert ranks_metrics(ranks) == pytest.approx(result["t2i"])


def check_hard_negatives(root, tmp_path, fast: dict, slow: dict) -> None:
    """Each model's hard-negative accuracy, recomputed pair by pair from the manifests: the
    query's own image with the caption against the caption's hard negative."""
    from vldistill.data.manifest import manifest_path, read_manifest
    from vldistill.models.tokenizer import Tokenizer
    from vldistill.retrieval.gallery import retrieval_set

    captions = read_manifest(manifest_path(root, "test", "captions"), "captions")
    fast_model, _ = load_fast(tmp_path / "fast.safetensors")
    slow_model, directions = load_slow(tmp_path / "slow.safetensors")
    data = retrieval_set(root, "test", 2, fast_model.cfg)
    # the evaluation's own queries (each image's most specific captions), in its order
    by_id = {row["caption_id"]: row for row in captions.iter_rows(named=True)}
    queries = [by_id[caption_id] for caption_id in data.query_ids]
    assert all(row["hard_negative"] is not None for row in queries)
    tokenize = Tokenizer(fast_model.cfg.context_length)
    wins = {"fast": 0.0, "slow": 0.0}
    for q, row in enumerate(queries):
        assert data.bank.ids[int(data.gold[q])] == row["image_id"]
        image = data.bank.at(data.gold[q:q + 1])
        ids, mask = tokenize([row["caption"], row["hard_negative"]])
        with torch.no_grad():
            fast_scores = fast_model.encode_text(ids, mask) @ fast_model.encode_image(image)[0]
            slow_scores = slow_model.slow_score_matrix(image, ids, mask,
                                                       directions=directions)[0]
        for name, (pos, neg) in (("fast", fast_scores), ("slow", slow_scores)):
            wins[name] += 1.0 if pos > neg else 0.5 if pos == neg else 0.0
    for name, result in (("fast", fast), ("slow", slow)):
        assert result["hard_negative"]["n"] == len(queries)
        assert result["hard_negative"]["accuracy"] == pytest.approx(
            100 * wins[name] / len(queries), abs=1e-9), name

SMALL = StudentConfig(image_size=64, context_length=32)


def test_a_query_subset_is_fixed_and_image_to_text_ranks_only_queried_images(root):
    from vldistill.retrieval.gallery import retrieval_set

    whole = retrieval_set(root, "test", 2, SMALL)
    first = retrieval_set(root, "test", 2, SMALL, max_queries=5)
    again = retrieval_set(root, "test", 2, SMALL, max_queries=5)
    assert len(whole.gold) == 8 and len(first.gold) == 5
    assert torch.equal(first.ids, again.ids) and torch.equal(first.gold, again.gold)
    # each subset query is one of the whole set's, in the original order
    positions = [next(i for i in range(8) if torch.equal(whole.ids[i], q)) for q in first.ids]
    assert positions == sorted(positions)
    gold = first.image_to_text_gold
    assert gold.shape == (len(first.queried_images), 5) and bool(gold.any(dim=1).all())
    assert len(retrieval_set(root, "test", 2, SMALL, max_queries=100).gold) == 8


def test_a_hard_negative_true_of_another_image_is_not_counted_against_it():
    from vldistill.stages.retrieval import negative_true_of
    from vldistill.train.pretrain import CaptionCorpus

    # image 0: caption A, negative B; image 1 (its twin): caption B, negative A; image 2: C, none
    ids = torch.tensor([[1, 2, 0], [3, 4, 0], [5, 0, 0]])
    mask = ids > 0
    negative_ids = torch.tensor([[3, 4, 0], [1, 2, 0], [5, 0, 0]])
    corpus = CaptionCorpus(torch.tensor([0, 1, 2]), ids, mask, negative_ids, negative_ids > 0,
                           torch.tensor([True, True, False]))
    assert negative_true_of(corpus) == {0: frozenset({1}), 1: frozenset({0})}


def test_fast_trains_with_hard_negatives_and_records_it(root, student_checkpoint, tmp_path):
    summary = train_fast(root=root, init="mad", start=student_checkpoint, student=STUDENT,
                         embed_dim=16, temperature=0.1, training=TRAINING, seed=0,
                         distill=None, slow_path=None, out_path=tmp_path / "fast.safetensors",
                         metrics_path=tmp_path / "fast.json", hard_negatives=True)
    plain = train_fast(root=root, init="mad", start=student_checkpoint, student=STUDENT,
                       embed_dim=16, temperature=0.1, training=TRAINING, seed=0, distill=None,
                       slow_path=None, out_path=tmp_path / "plain.safetensors",
                       metrics_path=tmp_path / "plain.json")
    assert summary["hard_negatives"] and not plain["hard_negatives"]
    # same batches and start: the extra wrong texts raise the first step's loss
    assert summary["history"][0]["loss"] > plain["history"][0]["loss"]


def test_queries_are_each_images_most_specific_captions(tmp_path):
    from vldistill.data.manifest import manifest_path, read_manifest
    from vldistill.data.truth import CaptionTruth
    from vldistill.models.config import StudentConfig
    from vldistill.retrieval.gallery import retrieval_set
    from vldistill.synthetic.images import SyntheticConfig, generate

    counts = {"train": 2, "val": 2, "test": 30, "test_shifted": 2}
    generate(SyntheticConfig(counts=counts), tmp_path, seed=0, progress=False)
    data = retrieval_set(tmp_path, "test", 1, StudentConfig(width=32, heads=2))
    captions = read_manifest(manifest_path(tmp_path, "test", "captions"), "captions")
    images = read_manifest(manifest_path(tmp_path, "test", "images"), "images")
    truth = CaptionTruth.build(captions, images)
    fits = [truth.images_true_of(c) for c in range(len(captions))]
    per_image = {}
    for c, image in enumerate(truth.own_image):
        per_image.setdefault(image, []).append(fits[c])
    assert len(data.gold) == 30
    for gold, same in zip(data.gold.tolist(), data.same_caption.tolist(), strict=True):
        assert same == min(per_image[gold])
    # the generic captions a first-caption rule would have picked fit far more images
    assert sum(min(v) for v in per_image.values()) < sum(v[0] for v in per_image.values())


def test_non_exhaustive_indexes_evaluate_with_exact_ranks(student_checkpoint, tmp_path):
    """IVF visiting 1 of its 16 lists and HNSW miss neighbours (faiss answers -1): evaluation
    and re-ranking run through, and Fast's ranks are the exact ones from the embeddings."""
    from vldistill.eval.retrieval import retrieval_metrics
    from vldistill.models.factory import save_fast
    from vldistill.retrieval.gallery import embed_gallery, embed_queries, retrieval_set
    from vldistill.stages.index import build_gallery_index
    from vldistill.stages.retrieval import evaluate_fast, evaluate_rerank, image_to_text_metrics

    root = tmp_path / "scenes"
    generate(SyntheticConfig(counts={"train": 1, "val": 1, "test": 24, "test_shifted": 1}), root,
             seed=1, progress=False)
    fast_path = tmp_path / "fast.safetensors"
    save_fast(fast_path, create_fast(StudentConfig.from_dict(STUDENT), 16, student_checkpoint),
              {"temperature": 0.1, "distilled": False, "seeds": {}})
    model, _ = load_fast(fast_path)
    data = retrieval_set(root, "test", 1, model.cfg)
    with torch.no_grad():
        scores = embed_gallery(model, data.bank) @ embed_queries(model, data.ids, data.mask).T
    exact = {"t2i": retrieval_metrics(scores.T, data.gold),
             "i2t": image_to_text_metrics(scores[data.queried_images], data.image_to_text_gold)}
    common = {"root": root, "split": "test", "captions_per_image": 1}
    for factory, nprobe in (("Flat", None), ("IVF16,Flat", 1), ("HNSW8", None)):
        index_path = tmp_path / f"{factory}.faiss"
        build_gallery_index(root=root, fast_path=fast_path, split="test", factory=factory,
                            nprobe=nprobe, out_path=index_path)
        fast = evaluate_fast(fast_path=fast_path, index_path=index_path, **common)
        assert fast["t2i"] == exact["t2i"] and fast["i2t"] == exact["i2t"], factory
        rerank = evaluate_rerank(fast_path=fast_path, index_path=index_path,
                                 slow_path=student_checkpoint, k=24, beta=0.5, **common)
        assert rerank["t2i"]["n"] == 24 and 0 <= rerank["t2i"]["R@1"] <= 100
        assert 1 <= rerank["t2i"]["median_rank"] <= 24
        if factory == "IVF16,Flat":  # one list of 16 holds far fewer than 24 images
            assert rerank["slow_calls_per_query"] < 24


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_a_gallery_index_built_in_shards_is_the_one_job_index(student_checkpoint, tmp_path,
                                                              factory):
    """retrieval.index.shards: three shard jobs (uneven slices, one of them empty) merged
    answer every search as the single-job index does, ids in gallery order."""
    import faiss
    import numpy as np

    from vldistill.models.factory import save_fast
    from vldistill.retrieval.index import load_index, search
    from vldistill.stages.index import (
        build_gallery_index,
        build_index_shard,
        build_index_template,
        merge_index_shards,
        shard_rows,
    )

    root = tmp_path / "scenes"
    generate(SyntheticConfig(counts={"train": 1, "val": 1, "test": 11, "test_shifted": 1}), root,
             seed=2, progress=False)
    fast_path = tmp_path / "fast.safetensors"
    save_fast(fast_path, create_fast(StudentConfig.from_dict(STUDENT), 16, student_checkpoint),
              {"temperature": 0.1, "distilled": False, "seeds": {}})
    common = {"root": root, "fast_path": fast_path, "split": "test"}
    build_gallery_index(**common, factory=factory, nprobe=2, out_path=tmp_path / "one.faiss")
    template = build_index_template(**common, factory=factory, out_path=tmp_path / "t.faiss")
    assert template["trained_on"] == (0 if factory == "Flat" else 11)
    shards = 12  # more shards than images: some are empty
    assert [shard_rows(11, s, shards) for s in range(shards)][:2] == [(0, 0), (0, 1)]
    paths = [tmp_path / f"{s}-of-{shards}.faiss" for s in range(shards)]
    for shard, path in enumerate(paths):
        build_index_shard(**common, template_path=tmp_path / "t.faiss", shard=shard,
                          shards=shards, out_path=path)
    info = merge_index_shards(shard_paths=paths, factory=factory, nprobe=2,
                              out_path=tmp_path / "merged.faiss")
    assert info["gallery"] == 11 and info["shards"] == shards
    one, merged = load_index(tmp_path / "one.faiss"), load_index(tmp_path / "merged.faiss")
    queries = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    faiss.normalize_L2(queries)
    (scores, rows), (one_scores, one_rows) = search(merged, queries, 11), search(one, queries, 11)
    # the same gallery rows in the same order; scores to float rounding (a shard's images are
    # embedded in other batches, and CPU matmuls round by batch shape)
    assert np.array_equal(rows, one_rows)
    np.testing.assert_allclose(scores, one_scores, atol=1e-5)
    with pytest.raises(ValueError, match="shard 12 of 12"):
        shard_rows(11, 12, 12)
