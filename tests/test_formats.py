"""Real-data loaders on tiny fixtures written here in each official format: split mapping, ids,
image paths and sizes, rendered texts, and manifests that pass validation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from vldistill.data.formats import (
    FormatError,
    load_karpathy,
    write_dataset,
)
from vldistill.data.manifest import SCHEMAS, SPLITS, TABLES
from vldistill.data.validate import validate_dataset


def jpeg(path: Path, size: tuple[int, int] = (24, 16), colour: tuple[int, int, int] = (200, 30, 30)
         ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def assert_conforms(tables: dict[str, dict[str, pl.DataFrame]]) -> None:
    for split, frames in tables.items():
        assert split in SPLITS
        for table, df in frames.items():
            assert df.schema == pl.Schema(SCHEMAS[table]), (split, table)


def karpathy_entry(cocoid: int, subtype: str, split: str, captions: list[str], imgid: int,
                   ) -> dict:
    sentences = [{"tokens": c.lower().rstrip(".").split(), "raw": c, "imgid": imgid,
                  "sentid": 10 * imgid + k} for k, c in enumerate(captions)]
    return {"filepath": subtype, "sentids": [s["sentid"] for s in sentences],
            "filename": f"COCO_{subtype}_{cocoid:012d}.jpg", "imgid": imgid, "split": split,
            "sentences": sentences, "cocoid": cocoid}


@pytest.fixture()
def coco(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "coco"
    images = [(391895, "val2014", "test"), (522418, "val2014", "restval"),
              (184613, "train2014", "train"), (318219, "val2014", "val")]
    entries = []
    for k, (cocoid, subtype, split) in enumerate(images):
        jpeg(root / "images" / subtype / f"COCO_{subtype}_{cocoid:012d}.jpg", (20 + k, 10 + k))
        entries.append(karpathy_entry(cocoid, subtype, split,
                                      [f"A man rides bike {k}.", f"A person on a bike {k}."], k))
    path = write_json(tmp_path / "dataset_coco.json", {"images": entries, "dataset": "coco"})
    return root, path


def test_karpathy_coco_splits_ids_paths_sizes(coco) -> None:
    root, path = coco
    tables = load_karpathy(path, root, "images")
    assert_conforms(tables)
    assert sorted(tables) == ["test", "train", "val"]
    # restval joins train by default
    assert tables["train"]["images"]["image_id"].to_list() == ["coco-184613", "coco-522418"]
    assert tables["test"]["images"]["image_id"].to_list() == ["coco-391895"]
    test_images = tables["test"]["images"].row(0, named=True)
    assert test_images["image_path"] == "images/val2014/COCO_val2014_000000391895.jpg"
    assert (test_images["width"], test_images["height"]) == (20, 10)
    assert test_images["domain"] == "source" and test_images["scene"] is None
    captions = tables["test"]["captions"]
    assert captions["caption_id"].to_list() == ["coco-391895-c0", "coco-391895-c1"]
    assert captions["caption"].to_list() == ["A man rides bike 0.", "A person on a bike 0."]
    assert captions["hard_negative"].null_count() == 2
    assert set(captions["image_path"]) == {test_images["image_path"]}


def test_karpathy_split_mapping_is_configurable(coco) -> None:
    root, path = coco
    tables = load_karpathy(path, root, "images",
                           splits={"train": "train", "restval": None, "val": "val", "test": "val"})
    assert sorted(tables) == ["train", "val"]
    assert tables["train"]["images"]["image_id"].to_list() == ["coco-184613"]
    assert tables["val"]["images"]["image_id"].to_list() == ["coco-318219", "coco-391895"]
    with pytest.raises(FormatError, match="'restval' has no mapping"):
        load_karpathy(path, root, "images", splits={"train": "train", "val": "val",
                                                    "test": "test"})


def test_karpathy_user_images(tmp_path: Path) -> None:
    """A user's own photos described in the Karpathy format load and validate like COCO."""
    root = tmp_path / "mine"
    entries = []
    for k, (name, split) in enumerate([("beach.jpg", "train"), ("dog.png", "train"),
                                       ("cat.jpg", "val"), ("boat.jpg", "test")]):
        image_path = root / "photos" / "2024" / name
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30, 20), (k * 40, 90, 90)).save(image_path)
        entries.append({"filepath": "2024", "filename": name, "imgid": k, "split": split,
                        "sentences": [{"raw": f"my photo number {k}", "tokens": []}]})
    path = write_json(tmp_path / "captions.json", {"images": entries, "dataset": "mine"})
    tables = load_karpathy(path, root, "photos")
    assert_conforms(tables)
    assert tables["train"]["images"]["image_id"].to_list() == ["mine-2024/beach", "mine-2024/dog"]
    assert tables["train"]["images"]["image_path"].to_list() == ["photos/2024/beach.jpg",
                                                                 "photos/2024/dog.png"]
    write_dataset(root, tables)
    report = validate_dataset(root, skip_bad_examples=False)
    assert report["checked"]["train"]["captions"] == 2
    assert report["checked"]["test_shifted"] == {t: 0 for t in TABLES}
