"""The seeded synthetic scenes benchmark: configuration and the generator that writes it.

``generate(cfg, root, seed)`` writes ``root/images/{split}/{image_id}.png`` and, for every split,
the five manifests of ``vldistill.data.manifest``. Each image draws from its own random streams,
seeded by (seed, split, index, stream), so an image and its texts never depend on generation order
or on how many items of another task are asked for; the same (cfg, seed) gives identical bytes.
Scenes come from ``scenes.py``, the language from ``language.py``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image
from tqdm import tqdm

from vldistill.config import read_section
from vldistill.data.manifest import SCHEMAS, SPLITS, VE_LABELS
from vldistill.data.truth import claim_to_json
from vldistill.synthetic import language
from vldistill.synthetic.common import (
    check_counts,
    check_image_size,
    check_int,
    check_object_range,
    check_seed,
    item_rng,
    tally,
    write_split,
)
from vldistill.synthetic.scenes import GRID, Geometry, Scene, geometry, render, sample_scene

SPLIT_DOMAINS: dict[str, str] = {
    "train": "source",
    "val": "source",
    "test": "source",
    "test_shifted": "shifted",
}
# independent random streams per image, so changing one task's item count leaves the rest alone
_STREAMS: dict[str, int] = {"scene": 0, "captions": 1, "vqa": 2, "ve": 3, "vcr": 4}


def _default_counts() -> dict[str, int]:
    return {"train": 2000, "val": 300, "test": 500, "test_shifted": 500}


_OWNER = "synthetic"  # the config section


@dataclass(frozen=True)
class SyntheticConfig:
    image_size: int = 64
    counts: dict[str, int] = field(default_factory=_default_counts)
    min_objects: int = 1
    max_objects: int = 4
    captions_per_image: int = 5
    vqa_per_image: int = 3
    ve_per_image: int = 3
    vcr_per_image: int = 1
    answers_per_question: int = 10
    annotator_noise: float = 0.1

    def __post_init__(self) -> None:
        # a private copy, so mutating the caller's dict cannot change a frozen config
        object.__setattr__(self, "counts", dict(self.counts))
        check_image_size(_OWNER, self.image_size)
        check_counts(_OWNER, self.counts)
        check_object_range(_OWNER, self.min_objects, self.max_objects, GRID * GRID,
                           " (grid cells)")
        for name in ("captions_per_image", "vqa_per_image", "ve_per_image", "vcr_per_image"):
            check_int(_OWNER, name, getattr(self, name), 0)
        if self.ve_per_image % len(VE_LABELS):
            raise ValueError(
                f"synthetic.ve_per_image: must be a multiple of {len(VE_LABELS)} "
                f"(balanced labels per image), got {self.ve_per_image}"
            )
        check_int(_OWNER, "answers_per_question", self.answers_per_question, 1)
        noise = self.annotator_noise
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise <= 1:
            raise ValueError(f"synthetic.annotator_noise: must be in [0, 1], got {noise!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SyntheticConfig:
        return read_section(cls, d, "synthetic")


def image_rng(seed: int, split: str, index: int, stream: str) -> np.random.Generator:
    """The random stream of one image and one purpose; independent of every other image."""
    return item_rng(seed, split, index, _STREAMS[stream])


def _image_rows(
    cfg: SyntheticConfig, geo: Geometry, seed: int, split: str, index: int
) -> tuple[Scene, dict[str, list[dict[str, Any]]]]:
    """The scene of one image and its rows for every manifest table."""
    image_id = f"{split}-{index:06d}"
    key = {"image_id": image_id, "image_path": f"images/{split}/{image_id}.png"}

    def rng(stream: str) -> np.random.Generator:
        return image_rng(seed, split, index, stream)

    scene = sample_scene(
        rng("scene"), SPLIT_DOMAINS[split], cfg.min_objects, cfg.max_objects, geo
    )
    rows: dict[str, list[dict[str, Any]]] = {
        "images": [
            {
                **key,
                "domain": scene.domain,
                "width": cfg.image_size,
                "height": cfg.image_size,
                "scene": scene.to_json(),
            }
        ]
    }
    rows["captions"] = [
        {**key, "caption_id": f"{image_id}-c{k}", "caption": c.text,
         "hard_negative": c.hard_negative, "claim": claim_to_json(c.claim, c.background)}
        for k, c in enumerate(
            language.make_captions(scene, rng("captions"), cfg.captions_per_image)
        )
    ]
    vqa = language.make_vqa(
        scene, rng("vqa"), cfg.vqa_per_image, cfg.answers_per_question, cfg.annotator_noise
    )
    rows["vqa"] = [
        {
            **key,
            "question_id": f"{image_id}-q{k}",
            "question": item.question,
            "question_type": item.question_type,
            "answer_type": item.answer_type,
            "answers": list(item.answers),
            "multiple_choice_answer": item.multiple_choice_answer,
        }
        for k, item in enumerate(vqa)
    ]
    rows["ve"] = [
        {**key, "pair_id": f"{image_id}-e{k}", "hypothesis": hypothesis, "label": label}
        for k, (hypothesis, label) in enumerate(
            language.make_ve(scene, rng("ve"), cfg.ve_per_image)
        )
    ]
    rows["vcr"] = [
        {
            **key,
            "item_id": f"{image_id}-r{k}",
            "question": item.question,
            "answers": list(item.answers),
            "rationales": list(item.rationales),
            "answer_label": item.answer_label,
            "rationale_label": item.rationale_label,
        }
        for k, item in enumerate(language.make_vcr(scene, rng("vcr"), cfg.vcr_per_image))
    ]
    return scene, rows


def _split_summary(frames: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """Row counts and label distributions of one split, JSON-friendly."""
    vqa = frames["vqa"]
    yes_no = vqa.filter(pl.col("answer_type") == "yes/no")
    return {
        "rows": {table: df.height for table, df in frames.items()},
        "domain": tally(frames["images"]["domain"].to_list()),
        "objects_per_image": tally(
            [len(json.loads(scene)["objects"]) for scene in frames["images"]["scene"].to_list()]
        ),
        "ve_label": tally(frames["ve"]["label"].to_list()),
        "vqa_question_type": tally(vqa["question_type"].to_list()),
        "vqa_yes_no": {
            qtype: tally(group["multiple_choice_answer"].to_list())
            for qtype in ("exist", "relation")
            if (group := yes_no.filter(pl.col("question_type") == qtype)).height
        },
        "vcr_answer_label": tally(frames["vcr"]["answer_label"].to_list()),
        "vcr_rationale_label": tally(frames["vcr"]["rationale_label"].to_list()),
    }


def generate(
    cfg: SyntheticConfig, root: str | Path, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Write the benchmark under ``root`` and return a summary (counts, label tallies, seconds)."""
    seed = check_seed(seed)
    start = time.perf_counter()
    root = Path(root)
    geo = geometry(cfg.image_size)
    summary: dict[str, Any] = {"seed": seed, "image_size": cfg.image_size, "splits": {}}
    total = sum(cfg.counts.values())
    with tqdm(
        total=total, desc="synthetic scenes", unit="img", file=sys.stderr, disable=not progress
    ) as bar:
        for split in SPLITS:
            image_dir = root / "images" / split
            image_dir.mkdir(parents=True, exist_ok=True)
            rows: dict[str, list[dict[str, Any]]] = {table: [] for table in SCHEMAS}
            for index in range(cfg.counts[split]):
                scene, image_rows = _image_rows(cfg, geo, seed, split, index)
                pixels = render(scene, cfg.image_size)
                image_path = root / image_rows["images"][0]["image_path"]
                Image.fromarray(pixels).save(image_path, format="PNG")
                for table, table_rows in image_rows.items():
                    rows[table].extend(table_rows)
                bar.update(1)
            summary["splits"][split] = _split_summary(write_split(root, split, rows))
    summary["counts"] = {split: s["rows"] for split, s in summary["splits"].items()}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
