"""Which captions query a retrieval gallery: the same ones for every model and seed."""

from __future__ import annotations

import polars as pl
import torch

from vldistill.data.truth import CaptionTruth
from vldistill.seeds import add_seed

QUERY_SUBSET_SEED = 0  # one fixed subset, so every model and seed answers the same queries


def select_queries(captions: pl.DataFrame, images: pl.DataFrame, captions_per_image: int,
                   max_queries: int | None = None) -> pl.DataFrame:
    """Each image's ``captions_per_image`` most specific captions (true of the fewest gallery
    ``images``; manifest order among equals), or a fixed random ``max_queries`` of them, in
    manifest order, with column ``images``: how many gallery images each is true of."""
    truth = CaptionTruth.build(captions, images)
    captions = captions.with_columns(
        pl.Series("images", [truth.images_true_of(c) for c in range(len(captions))]),
        pl.int_range(pl.len()).alias("order"))
    queries = (captions.sort(["images", "order"])
               .filter(pl.int_range(pl.len()).over("image_id") < captions_per_image)
               .sort("order"))
    if max_queries is not None and max_queries < len(queries):
        generator = torch.Generator().manual_seed(QUERY_SUBSET_SEED)
        keep = torch.randperm(len(queries), generator=generator)[:max_queries].sort().values
        queries = queries[keep.tolist()]
    return queries.drop("order")


def query_seeds(model_seeds: dict[str, int], max_queries: int | None) -> dict[str, int]:
    """The evaluated models' seeds, plus the query subset's when there is one."""
    return model_seeds if max_queries is None else add_seed(model_seeds, "queries",
                                                            QUERY_SUBSET_SEED)
