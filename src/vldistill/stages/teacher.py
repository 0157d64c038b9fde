"""The teacher stage: encode one shard of a dataset's images or texts; gather the shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image

from vldistill.data.images import decode_rgb
from vldistill.data.manifest import read_manifest
from vldistill.data.video import read_clip
from vldistill.features.cache import cache_shard, gather_index, shard_slice
from vldistill.io import atomic_output, write_json
from vldistill.teachers.factory import (
    create_text_teacher,
    create_vision_teacher,
    text_config_from_dict,
    vision_config_from_dict,
)

log = logging.getLogger(__name__)

MODALITIES = ("vision", "text")


def image_items(root: str | Path, image_manifests: list[str | Path],
                frames: int = 1) -> pl.DataFrame:
    """(key, path) of every image in the given manifests, sorted by key for stable sharding.

    For clips (``frames`` > 1) one item per sampled frame: key ``<clip id>#<t>`` (two digits,
    so keys sort in frame order), payload ``<path>#<t>``; the teacher sees still frames.
    """
    tables = [read_manifest(p, "images").select("image_id", "image_path") for p in image_manifests]
    items = pl.concat(tables).unique("image_id").select(
        pl.col("image_id").alias("key"),
        pl.col("image_path").map_elements(lambda p: str(Path(root) / p), return_dtype=pl.String)
        .alias("payload"),
    )
    if frames > 1:
        t = pl.DataFrame({"t": [f"#{i:02d}" for i in range(frames)]})
        items = items.join(t, how="cross").select(pl.col("key") + pl.col("t"),
                                                  pl.col("payload") + pl.col("t"))
    return items.sort("key")


def load_pictures(payloads: list[str], frames: int, size: int) -> list[Image.Image]:
    """Still images by path, or clip frames by ``<path>#<t>`` (each clip decoded once per call,
    its ``frames`` frames sampled as the students sample them)."""
    if frames == 1:
        return [decode_rgb(p) for p in payloads]
    clips: dict[str, Any] = {}
    out = []
    for payload in payloads:
        path, t = payload.rsplit("#", 1)
        if path not in clips:
            clips[path] = read_clip(path, frames, size)
        out.append(Image.fromarray(clips[path][int(t)]))
    return out


def text_items(corpus_path: str | Path) -> pl.DataFrame:
    corpus = pl.read_parquet(corpus_path).sort("text_id")
    return corpus.select(pl.col("text_id").alias("key"), pl.col("text").alias("payload"))


def cache_teacher_shard(
    *,
    modality: str,
    teacher: dict,
    features: dict,
    items: pl.DataFrame,
    shard: int,
    n_shards: int,
    out_path: str | Path,
    stats_path: str | Path,
    frames: int = 1,
) -> dict:
    """Encode shard ``shard`` of ``n_shards`` of ``items`` (key, payload) with the teacher.

    Timings go to ``stats_path``, not into the shard, so a shard's bytes depend on its inputs only.
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    part = items[shard_slice(len(items), shard, n_shards)]
    payload_of = dict(zip(part["key"].to_list(), part["payload"].to_list(), strict=True))
    device = features.get("device", "cpu")
    if modality == "vision":
        cfg = vision_config_from_dict(teacher)
        encode = create_vision_teacher(cfg, device=device).encode_images

        def load(keys: list[str]) -> list:
            return load_pictures([payload_of[k] for k in keys], frames, cfg.image_size)
    else:
        cfg = text_config_from_dict(teacher)
        encode = create_text_teacher(cfg, device=device).encode_texts

        def load(keys: list[str]) -> list:
            return [payload_of[k] for k in keys]
    log.info("%s teacher %s: shard %d/%d with %d of %d items", modality, teacher["name"],
             shard, n_shards, len(part), len(items))
    stats = cache_shard(
        part["key"].to_list(),
        load,
        encode,
        Path(out_path),
        batch_size=cfg.batch_size,
        chunk_size=features.get("chunk_size", 512),
        fingerprint=cfg.fingerprint(),
        modality=modality,
    )
    log.info("shard stats: %s", json.dumps(stats))
    write_json(stats, stats_path)
    return stats


def gather_teacher_index(shard_paths: list[str | Path], index_path: str | Path,
                         stats_paths: list[str | Path], benchmark_paths: list[str | Path],
                         throughput_path: str | Path) -> dict:
    """Write the index over all shards, and a throughput table that joins each shard's own
    encode timing with its Snakemake benchmark (whole-job wall time, max RSS)."""
    summary = gather_index([Path(p) for p in shard_paths], Path(index_path))
    rows = []
    for shard_path, stats_path, bench_path in zip(
        shard_paths, stats_paths, benchmark_paths, strict=True
    ):
        stats = json.loads(Path(stats_path).read_text())
        bench = pl.read_csv(bench_path, separator="\t")
        job_seconds = float(bench["s"][0])
        rows.append({
            "shard": Path(shard_path).name,
            "n": stats["n"],
            "n_reused": stats["n_reused"],
            "encode_seconds": round(stats["encode_seconds"], 3),
            "items_per_second_encode": round(stats["items_per_second"], 1),
            "job_seconds": job_seconds,
            "items_per_second_job": round(stats["n"] / job_seconds, 1) if job_seconds else 0.0,
            "max_rss_mb": float(bench["max_rss"][0]),
        })
    with atomic_output(throughput_path) as tmp:
        pl.DataFrame(rows).write_csv(tmp, separator="\t")
    return summary
