"""The retrieval stages: train the Slow captioner, train the Fast dual encoder (plain or
distilled from Slow), and evaluate Fast, Slow and Fast-then-Slow re-ranking.

Training uses the train split's captions; evaluation uses the test split: its images are the
gallery, and the first ``captions_per_image`` captions of each image are the text queries. Each
evaluation can also write every text query's gold rank (``ranks_path``), for paired comparisons
of two models on the same queries.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vldistill.eval.retrieval import (
    KS,
    chance_metrics,
    hard_negative_accuracy,
    ranks_from_scores,
    ranks_metrics,
    retrieval_metrics,
)
from vldistill.models.config import StudentConfig
from vldistill.models.factory import (
    create_fast,
    create_student,
    load_checkpoint,
    load_fast,
    load_slow,
    save_fast,
)
from vldistill.models.fast import FastDualEncoder
from vldistill.models.fusion import CAPTION_DIRECTIONS
from vldistill.models.student import Student
from vldistill.results.ranks import TopImages, write_query_ranks
from vldistill.retrieval.gallery import (
    RetrievalSet,
    embed_gallery,
    embed_queries,
    gallery_levels,
    middle_frame,
    retrieval_set,
)
from vldistill.retrieval.index import (
    MAX_SEARCH_K,
    load_index,
    search,
)
from vldistill.retrieval.losses import KL_DIRECTIONS, info_nce, slow_to_fast_kl
from vldistill.retrieval.queries import query_seeds
from vldistill.retrieval.rerank import candidate_slow_scores, ranks_after_rerank, rerank_top_k
from vldistill.seeds import (
    add_seed,
    checkpoint_provenance,
    checkpoint_seeds,
    dataset_seeds,
    merge_provenance,
    merge_seeds,
)
from vldistill.train.checkpoints import (
    clear_states,
    finish_student,
    load_backbone,
    state_path,
    write_training_summary,
)
from vldistill.train.compute import Compute, evaluating
from vldistill.train.distributed import is_main
from vldistill.train.loop import Batch, TrainConfig, train
from vldistill.train.pretrain import (
    CaptionCorpus,
    caption_batch,
    caption_data,
    caption_vocabulary,
)

log = logging.getLogger(__name__)

INITS: tuple[str, ...] = ("mad", "pretrained", "scratch")


def train_slow(*, root: str | Path, init: str, start: str | Path | None, student: dict,
               progressive: bool, directions: Sequence[str], training: dict, seed: int,
               out_path: str | Path, metrics_path: str | Path,
               compute: dict | None = None) -> dict[str, Any]:
    """The Slow model: the student's captioning decoder trained with the (bi)directional
    captioning loss, from the MAD student, the pre-trained student or scratch."""
    where = Compute.from_dict(compute)
    directions = tuple(directions)
    if not directions or set(directions) - set(CAPTION_DIRECTIONS):
        raise ValueError(f"directions must be a non-empty subset of {CAPTION_DIRECTIONS}, got "
                         f"{directions}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "scratch":
        cfg = StudentConfig.from_dict(student)
    else:
        if start is None:
            raise ValueError(f"init {init!r} needs the student checkpoint")
        _, cfg, _ = load_checkpoint(start)
    cfg = dataclasses.replace(cfg, progressive=progressive)
    bank, corpus, _ = caption_data(root, "train", cfg)
    torch.manual_seed(seed)
    model = create_student(cfg)
    if init != "scratch":
        load_backbone(model, start)
    model.to(where.torch_device())
    model.decoder.set_output_vocabulary(caption_vocabulary(corpus))

    def loss_fn(m: Student, batch: Batch) -> dict[str, torch.Tensor]:
        ids, mask = caption_batch(corpus, batch.rows, device=m.device)
        return {"loss": m.caption_loss(batch.images(m.device), ids, mask, directions)}

    train_cfg = TrainConfig.from_dict({**training, "seed": seed})
    state = state_path(out_path, {"init": init, "start": str(start), "progressive": progressive,
                                  "directions": directions, "training": training, "seed": seed})
    history = train(model, loss_fn, len(corpus), train_cfg, state, compute=where,
                    images=(bank, corpus.image_rows))
    # load_slow reads the directions h_slow sums back from the checkpoint's metadata
    seeds = add_seed(upstream_seeds(root, init, start), "retrieval", seed)
    return finish_student(model, history, out_path, metrics_path,
                          {"stage": "slow", "dataset": Path(root).name, "init": init,
                           "progressive": progressive,
                           "directions": list(directions), "seeds": seeds,
                           "provenance": checkpoint_provenance(start)})


def train_fast(*, root: str | Path, init: str, start: str | Path | None, student: dict,
               embed_dim: int, temperature: float, training: dict, seed: int,
               distill: dict | None, slow_path: str | Path | None,
               out_path: str | Path, metrics_path: str | Path,
               hard_negatives: bool = False, compute: dict | None = None) -> dict[str, Any]:
    """The Fast dual encoder: InfoNCE, plus alpha * KL from the Slow model's in-batch score
    distribution when ``distill`` ({alpha, tau_slow}) is given. ``hard_negatives``: the batch
    captions' hard negatives are extra wrong texts in the image -> text softmax."""
    where = Compute.from_dict(compute)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    cfg = StudentConfig.from_dict(student) if init == "scratch" else load_checkpoint(start)[1]
    bank, corpus, _ = caption_data(root, "train", cfg)
    true_of = negative_true_of(corpus) if hard_negatives else {}
    torch.manual_seed(seed)
    device = where.torch_device()
    model = create_fast(cfg, embed_dim, None if init == "scratch" else start).to(device)
    slow, directions = (None, CAPTION_DIRECTIONS)
    if distill is not None:
        if slow_path is None:
            raise ValueError("the distilled Fast model needs the Slow checkpoint")
        slow, directions = load_slow(slow_path)
        slow.to(device)
        for p in slow.parameters():
            p.requires_grad_(False)

    def loss_fn(m: FastDualEncoder, batch: Batch) -> dict[str, torch.Tensor]:
        keep = _one_caption_per_image(corpus, batch.rows)
        rows = batch.rows[keep]
        images = Batch(batch.step, rows, batch.pixels[keep]).images(m.device)
        ids, mask = caption_batch(corpus, rows, device=m.device)
        image_embeddings = m.encode_image(images)
        similarity = image_embeddings @ m.encode_text(ids, mask).T
        negatives = (hard_negative_scores(m, corpus, rows, image_embeddings, true_of)
                     if hard_negatives else None)
        # another image's caption may be true of this image too: a positive, not a negative
        positives = corpus.true_of(rows, corpus.image_rows[rows]).T.to(similarity.device)
        nce = info_nce(similarity, temperature, negatives, positives)
        if slow is None:
            return {"loss": nce}
        kl = slow_distillation_kl(slow, directions, distill, images, ids, mask, similarity,
                                  temperature)
        return {"loss": nce + distill["alpha"] * kl, "nce": nce.detach(), "kl": kl.detach()}

    train_cfg = TrainConfig.from_dict({**training, "seed": seed})
    state = state_path(out_path, {"init": init, "start": str(start), "embed_dim": embed_dim,
                                  "temperature": temperature, "distill": distill,
                                  "hard_negatives": hard_negatives,
                                  "slow": str(slow_path), "training": training, "seed": seed})
    history = train(model, loss_fn, len(corpus), train_cfg, state, compute=where,
                    images=(bank, corpus.image_rows))
    if not is_main():  # under torchrun rank 0 writes the outputs
        return {}
    seeds = add_seed(upstream_seeds(root, init, start), "retrieval", seed)
    provenance = checkpoint_provenance(start)
    save_fast(out_path, model, {"stage": "fast", "dataset": Path(root).name,
                                "temperature": temperature, "distilled": distill is not None,
                                "seeds": seeds, "provenance": provenance})
    clear_states(out_path)
    return write_training_summary(history, metrics_path, {"stage": "fast",
                                                          "dataset": Path(root).name,
                                                          "init": init,
                                                          "distill": distill,
                                                          "hard_negatives": hard_negatives,
                                                          "seeds": seeds,
                                                          "provenance": provenance})


def hard_negative_scores(model: FastDualEncoder, corpus: CaptionCorpus, rows: torch.Tensor,
                         image_embeddings: torch.Tensor, true_of: dict[int, frozenset[int]]
                         ) -> torch.Tensor | None:
    """[B, N] scores of the batch's images against the hard negatives of the N batch captions
    that have one, -inf where the negative is true of that image; None when none has one."""
    with_negative = rows[corpus.has_negative[rows]]
    if not len(with_negative):
        return None
    texts = model.encode_text(*caption_batch(corpus, with_negative, negatives=True,
                                             device=model.device))
    true = torch.tensor([[image in true_of[r] for r in with_negative.tolist()]
                         for image in corpus.image_rows[rows].tolist()]).to(model.device)
    return (image_embeddings @ texts.T).masked_fill(true, float("-inf"))


def slow_distillation_kl(slow: Student, directions: Sequence[str], distill: dict,
                         images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                         similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL from the Slow model's in-batch score distribution to the Fast one's. Slow scores
    d x d pairs per step, the cost of distillation: it distils over the batch's first d items
    (a random subset: batches are shuffled) while InfoNCE uses all of them."""
    d = min(distill.get("slow_batch") or len(images), len(images))
    with torch.no_grad():
        slow_scores = slow.slow_score_matrix(images[:d], ids[:d], mask[:d],
                                             directions=directions)
    return slow_to_fast_kl(similarity[:d, :d], slow_scores, temperature, distill["tau_slow"],
                           tuple(distill.get("directions", KL_DIRECTIONS)))


def negative_true_of(corpus: CaptionCorpus) -> dict[int, frozenset[int]]:
    """Caption row -> the images its hard negative is a caption of. A negative is false of its
    own image but may be true of another in the batch (with dual pairs, the negative of a clip's
    caption is a caption of the clip's twin), and must not count against that one."""
    def text(ids: torch.Tensor, mask: torch.Tensor) -> tuple[int, ...]:
        return tuple(ids[mask].tolist())

    images_of: dict[tuple[int, ...], set[int]] = {}
    for row in range(len(corpus)):
        images_of.setdefault(text(corpus.ids[row], corpus.mask[row]), set()).add(
            int(corpus.image_rows[row]))
    return {row: frozenset(images_of.get(
                text(corpus.negative_ids[row], corpus.negative_mask[row]), ()))
            for row in corpus.has_negative.nonzero().flatten().tolist()}


def upstream_seeds(root: str | Path, init: str, start: str | Path | None) -> dict[str, int]:
    """Seeds of what a retrieval model starts from: the data and its student checkpoint (which,
    imported from another run, has a data seed of its own: ``source_data``)."""
    if init == "scratch" or start is None:
        return dataset_seeds(root)
    return merge_seeds(dataset_seeds(root), checkpoint_seeds(start))


def evaluation_seeds(root: str | Path, model_seeds: dict[str, int], max_queries: int | None
                     ) -> dict[str, int]:
    """Seeds of an evaluation: its models', the gallery data's (a model imported from another
    run was trained on another dataset) and the query subset's."""
    return query_seeds(merge_seeds(dataset_seeds(root), model_seeds), max_queries)


def _one_caption_per_image(corpus: CaptionCorpus, rows: torch.Tensor) -> torch.Tensor:
    """Positions in ``rows`` to keep: a row whose image already appears earlier in the batch is
    dropped, since two captions of one image would be each other's false negatives in the
    in-batch softmax."""
    seen: set[int] = set()
    keep = []
    for i, image in enumerate(corpus.image_rows[rows].tolist()):
        if image not in seen:
            seen.add(image)
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``fn``'s result and its wall seconds, the GPU's queued work included."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # kernels run asynchronously: wait for them before the clock
    return out, time.perf_counter() - start


# --- evaluation -------------------------------------------------------------------------------

def evaluate_fast(*, root: str | Path, fast_path: str | Path, index_path: str | Path,
                  split: str, captions_per_image: int, max_queries: int | None = None,
                  ranks_path: str | Path | None = None,
                  compute: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fast retrieval, timed per query as a deployed system answers it (encode the text, search
    the index for the top max(KS)). The ranks are exact: every query's gold image against
    every gallery image by exact dot products, not read off the search result, which an
    approximate index truncates (-1 rows) and which never reaches beyond the top k."""
    model, extra = load_fast(fast_path)
    data = retrieval_set(root, split, captions_per_image, model.cfg, max_queries)
    index = load_index(index_path)
    n_gallery, n_queries = index.ntotal, len(data.gold)
    with evaluating(compute, model):
        queries, encode_s = timed(lambda: embed_queries(model, data.ids, data.mask).cpu())
        _, search_s = timed(search, index, queries.numpy(), max(KS))
        gallery = embed_gallery(model, data.bank).cpu()
        if len(gallery) != n_gallery:
            raise ValueError(f"{index_path} holds {n_gallery} images, the {split} gallery "
                             f"{len(gallery)}: rebuild the index")
        hard = fast_hard_negatives(model, data, gallery, queries)
    scores = gallery @ queries.T  # [G, Q]
    fast_ms = 1000 * (encode_s + search_s) / n_queries
    if ranks_path is not None:
        write_query_ranks(data.query_ids, ranks_from_scores(scores.T, data.gold), ranks_path,
                          TopImages.of(scores.T, data.bank.ids))
    return {
        "model": "fast_distilled" if extra.get("distilled") else "fast",
        "t2i": retrieval_metrics(scores.T, data.gold),
        "i2t": image_to_text_metrics(scores[data.queried_images], data.image_to_text_gold),
        **hard,
        "latency_ms_per_query": {"fast": fast_ms, "slow": 0.0, "total": fast_ms},
        "slow_calls_per_query": 0, "gallery": n_gallery, "queries": n_queries,
        "seeds": evaluation_seeds(root, extra.get("seeds", {}), max_queries),
        "provenance": extra.get("provenance", []),
    }


def image_to_text_metrics(scores: torch.Tensor, gold: torch.Tensor) -> dict[str, Any]:
    """Image -> text R@K and median rank, with their chance levels under ``chance``: an image
    has several correct captions, so chance is not K / queries."""
    return {**retrieval_metrics(scores, gold), "chance": chance_metrics(gold)}


def fast_hard_negatives(model: FastDualEncoder, data: RetrievalSet, gallery: torch.Tensor,
                        queries: torch.Tensor) -> dict[str, Any]:
    """``{"hard_negative": accuracy}`` of the Fast model: each queried image's embedding with
    its caption against the caption's hard negative; empty where no query has one. The
    embeddings given are on the host."""
    rows = data.negative_queries
    if len(rows) == 0:
        return {}
    images = gallery[data.gold[rows]]
    negatives = embed_queries(model, data.negative_ids[rows], data.negative_mask[rows]).cpu()
    return {"hard_negative": hard_negative_accuracy((images * queries[rows]).sum(dim=1),
                                                    (images * negatives).sum(dim=1))}


def slow_hard_negatives(slow: Student, data: RetrievalSet, levels: list[torch.Tensor],
                        matrix: torch.Tensor, max_pairs: int,
                        directions: Sequence[str]) -> dict[str, Any]:
    """The same for the Slow model: h_slow(image, caption) (already in ``matrix`` [G, Q])
    against h_slow(image, hard negative); ``matrix`` is on the host."""
    rows = data.negative_queries
    if len(rows) == 0:
        return {}
    images = data.gold[rows]
    negative = slow.decoder.pair_scores(levels, data.negative_ids, data.negative_mask, images,
                                        rows, max_pairs, directions).float().cpu()
    return {"hard_negative": hard_negative_accuracy(matrix[images, rows], negative)}


def evaluate_single_frame(*, root: str | Path, model_path: str | Path, kind: str, split: str,
                          captions_per_image: int, max_queries: int | None = None,
                          max_pairs: int = 512, compute: dict[str, Any] | None = None
                          ) -> dict[str, Any]:
    """A video model (``kind`` fast or slow) shown only each clip's middle frame: the same
    weights and queries as its full evaluation, so the gap is what the other frames add.
    Fast scores are exact dot products here (no index: it holds all-frame embeddings)."""
    if kind == "slow":
        slow, directions = load_slow(model_path)
        data = middle_frame(retrieval_set(root, split, captions_per_image, slow.cfg,
                                          max_queries))
        with evaluating(compute, slow):
            levels = gallery_levels(slow, data.bank)
            matrix = slow.decoder.pairwise_scores(levels, data.ids, data.mask, max_pairs,
                                                  directions).float().cpu()
            hard = slow_hard_negatives(slow, data, levels, matrix, max_pairs, directions)
        seeds = checkpoint_seeds(model_path)
    elif kind == "fast":
        fast, extra = load_fast(model_path)
        data = middle_frame(retrieval_set(root, split, captions_per_image, fast.cfg,
                                          max_queries))
        with evaluating(compute, fast):
            gallery = embed_gallery(fast, data.bank).cpu()
            queries = embed_queries(fast, data.ids, data.mask).cpu()
            hard = fast_hard_negatives(fast, data, gallery, queries)
        matrix = gallery @ queries.T
        seeds = extra.get("seeds", {})
    else:
        raise ValueError(f"kind must be 'fast' or 'slow', got {kind!r}")
    n_gallery, n_queries = matrix.shape
    return {
        "model": f"{kind}_1frame",
        "t2i": retrieval_metrics(matrix.T, data.gold),
        "i2t": image_to_text_metrics(matrix[data.queried_images], data.image_to_text_gold),
        **hard,
        "slow_calls_per_query": n_gallery if kind == "slow" else 0,
        "gallery": n_gallery, "queries": n_queries,
        "seeds": evaluation_seeds(root, seeds, max_queries),
        "provenance": checkpoint_provenance(model_path),
    }


def evaluate_slow(*, root: str | Path, slow_path: str | Path, split: str,
                  captions_per_image: int, max_queries: int | None = None,
                  max_pairs: int = 512, ranks_path: str | Path | None = None,
                  compute: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Slow model scoring every (gallery image, query) pair: the reference for re-ranking."""
    slow, directions = load_slow(slow_path)
    data = retrieval_set(root, split, captions_per_image, slow.cfg, max_queries)
    with evaluating(compute, slow):
        levels = gallery_levels(slow, data.bank)  # image side computed offline, like an index
        matrix, seconds = timed(lambda: slow.decoder.pairwise_scores(
            levels, data.ids, data.mask, max_pairs, directions).float().cpu())
        hard = slow_hard_negatives(slow, data, levels, matrix, max_pairs, directions)
    n_gallery, n_queries = matrix.shape
    slow_ms = 1000 * seconds / n_queries
    if ranks_path is not None:
        write_query_ranks(data.query_ids, ranks_from_scores(matrix.T, data.gold), ranks_path,
                          TopImages.of(matrix.T, data.bank.ids))
    return {
        "model": "slow",
        "t2i": retrieval_metrics(matrix.T, data.gold),
        "i2t": image_to_text_metrics(matrix[data.queried_images], data.image_to_text_gold),
        **hard,
        "latency_ms_per_query": {"fast": 0.0, "slow": slow_ms, "total": slow_ms},
        "slow_calls_per_query": n_gallery, "gallery": n_gallery, "queries": n_queries,
        "seeds": evaluation_seeds(root, checkpoint_seeds(slow_path), max_queries),
        "provenance": checkpoint_provenance(slow_path),
        "t2i_ceiling": caption_ceiling(data.same_caption),
    }


def caption_ceiling(same_caption: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
                    ) -> dict[str, float]:
    """The expected text -> image R@K of a perfect model that still cannot tell apart the m
    gallery images the query is true of (ties in random order): the mean over queries of
    min(K, m)/m. Where a caption fits several scenes no model can do better: the ceiling."""
    m = same_caption.double()
    return {**{f"R@{k}": 100.0 * float((m.clamp(max=k) / m).mean()) for k in ks},
            "n": len(m)}


def evaluate_rerank(*, root: str | Path, fast_path: str | Path, index_path: str | Path,
                    slow_path: str | Path, split: str, captions_per_image: int, k: int,
                    beta: float, max_queries: int | None = None,
                    max_pairs: int = 512, ranks_path: str | Path | None = None,
                    compute: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fast top-K from the index, re-scored by h_slow + beta * h_fast; timed per query."""
    fast, _ = load_fast(fast_path)
    slow, directions = load_slow(slow_path)
    data = retrieval_set(root, split, captions_per_image, fast.cfg, max_queries)
    index = load_index(index_path)
    if k > index.ntotal:
        # silently capping would label a Slow-over-everything run "rerank@K"
        raise ValueError(f"re-ranking the top {k} needs at least {k} gallery images; the index "
                         f"{index_path} holds {index.ntotal}: lower retrieval.rerank.ks")
    if k > MAX_SEARCH_K:
        raise ValueError(f"re-ranking the top {k}: faiss searches at most the top "
                         f"{MAX_SEARCH_K}; lower retrieval.rerank.ks")
    n_queries = len(data.gold)
    with evaluating(compute, fast, slow):
        gallery = embed_gallery(fast, data.bank).cpu()  # exact Fast scores order the tail
        queries, encode_s = timed(lambda: embed_queries(fast, data.ids, data.mask).cpu())
        (fast_scores, candidates), search_s = timed(search, index, queries.numpy(), k)
        candidates = torch.from_numpy(candidates).long()
        fast_scores = torch.from_numpy(fast_scores)
        # an approximate index may return fewer than k (-1 slots): only the found are scored,
        # and only their images' pyramids are built
        slow_scores, slow_s = candidate_slow_scores(
            lambda levels, image_rows, query_rows: slow.decoder.pair_scores(
                levels, data.ids, data.mask, image_rows, query_rows, max_pairs, directions),
            lambda rows: slow.encode_image(data.bank.at(rows, slow.device)).levels,
            candidates)
    found = candidates >= 0
    reranked, combined = rerank_top_k(candidates, fast_scores, slow_scores, beta)
    ranks = ranks_after_rerank(reranked, combined, queries @ gallery.T, data.gold)
    fast_ms, slow_ms = 1000 * (encode_s + search_s) / n_queries, 1000 * slow_s / n_queries
    if ranks_path is not None:
        write_query_ranks(data.query_ids, ranks, ranks_path,
                          TopImages.of(combined, data.bank.ids, rows=reranked))
    return {
        "model": f"rerank_k{k}", "k": k, "beta": beta,
        "t2i": ranks_metrics(ranks, KS),
        "latency_ms_per_query": {"fast": fast_ms, "slow": slow_ms, "total": fast_ms + slow_ms},
        "slow_calls_per_query": float(found.sum()) / n_queries, "gallery": index.ntotal,
        "queries": n_queries,
        "seeds": evaluation_seeds(root, merge_seeds(checkpoint_seeds(fast_path),
                                                    checkpoint_seeds(slow_path)), max_queries),
        "provenance": merge_provenance(checkpoint_provenance(fast_path),
                                       checkpoint_provenance(slow_path)),
    }
