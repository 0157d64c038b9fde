"""A retrieval model's per-query outcome on disk (ranks.parquet): each text query's caption_id,
its gold image's ``Ranks`` counts (ties kept, so a hit at K is as exact as the R@K it adds up
to), and optionally its top few gallery images with their scores, which the retrieval panels
show without running any model again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from vldistill.eval.retrieval import Ranks
from vldistill.io import atomic_output

RANKS_SCHEMA: dict[str, Any] = {"query": pl.String, "higher": pl.Int64, "tied": pl.Int64,
                                "gold_tied": pl.Int64}
TOP_SCHEMA: dict[str, Any] = {"top": pl.List(pl.String), "top_scores": pl.List(pl.Float64)}
TOP_IMAGES = 5  # kept per query: what a panel row shows


@dataclass(frozen=True)
class TopImages:
    """Each query's best-scored gallery images, best first: image_ids and scores [Q][<= n]."""

    image_ids: list[list[str]]
    scores: list[list[float]]

    @classmethod
    def of(cls, scores: torch.Tensor, gallery_ids: Sequence[str],
           rows: torch.Tensor | None = None, n: int = TOP_IMAGES) -> TopImages:
        """From scores [Q, N] of gallery rows [Q, N] (default: every gallery image, N = G).
        Slots without an image (row -1, as an approximate index returns) or scored -inf are
        left out, so a query may keep fewer than ``n``."""
        if rows is None:
            rows = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
        if rows.shape != scores.shape:
            raise ValueError(f"rows {tuple(rows.shape)} and scores {tuple(scores.shape)} differ")
        best, order = scores.double().topk(min(n, scores.shape[1]), dim=1)
        picked = rows.gather(1, order)
        image_ids, kept_scores = [], []
        for query_rows, query_scores in zip(picked.tolist(), best.tolist(), strict=True):
            kept = [(r, s) for r, s in zip(query_rows, query_scores, strict=True)
                    if r >= 0 and s != float("-inf")]
            image_ids.append([gallery_ids[r] for r, _ in kept])
            kept_scores.append([s for _, s in kept])
        return cls(image_ids, kept_scores)


def write_query_ranks(query_ids: Sequence[str], ranks: Ranks, path: str | Path,
                      top: TopImages | None = None) -> None:
    """ranks.parquet: one row per query, in ``query_ids`` order."""
    if len(query_ids) != len(ranks):
        raise ValueError(f"{len(query_ids)} query ids but {len(ranks)} ranks")
    columns: dict[str, Any] = {"query": list(query_ids), "higher": ranks.higher.tolist(),
                               "tied": ranks.tied.tolist(), "gold_tied": ranks.gold_tied.tolist()}
    schema = dict(RANKS_SCHEMA)
    if top is not None:
        if len(top.image_ids) != len(query_ids):
            raise ValueError(f"{len(query_ids)} query ids but top images of {len(top.image_ids)}")
        columns |= {"top": top.image_ids, "top_scores": top.scores}
        schema |= TOP_SCHEMA
    with atomic_output(path) as tmp:
        pl.DataFrame(columns, schema=schema).write_parquet(tmp, statistics=False)


def read_query_ranks(path: str | Path) -> tuple[list[str], Ranks]:
    """The query ids and ``Ranks`` that ``write_query_ranks`` wrote."""
    table = pl.read_parquet(path).cast(RANKS_SCHEMA)
    return table["query"].to_list(), ranks_of(table)


def ranks_of(table: pl.DataFrame) -> Ranks:
    """The ``Ranks`` of a ranks table's rows (host tensors: read from a file, for reports)."""
    return Ranks(*(torch.tensor(table[c].to_list(), dtype=torch.long)
                   for c in ("higher", "tied", "gold_tied")))


def read_top_images(path: str | Path) -> pl.DataFrame:
    """The queries with their ranks and top images; fails, naming the file, where the
    evaluation that wrote it kept no top images."""
    table = pl.read_parquet(path)
    if missing := [c for c in TOP_SCHEMA if c not in table.columns]:
        raise ValueError(f"{path} has no {missing} columns: re-run the retrieval evaluation "
                         "that wrote it (it keeps each query's top images since they were added)")
    return table.cast(RANKS_SCHEMA | TOP_SCHEMA)
