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
    by_image,
    load_karpathy,
    load_vqa_v2,
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


def vqa_files(tmp_path: Path, root: Path, subtype: str, image_ids: list[int],
              questions_per_image: int = 2) -> tuple[Path, Path]:
    questions, annotations = [], []
    for image_id in image_ids:
        jpeg(root / "images" / subtype / f"COCO_{subtype}_{image_id:012d}.jpg")
        for k in range(questions_per_image):
            question_id = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": f"What color is thing {k}?",
                              "question_id": question_id})
            raw = ["Red", "red", "red", "dark red", "red", "red", "maroon", "red", "red", "red"]
            annotations.append({
                "question_type": "what color is the", "multiple_choice_answer": "red",
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                            for i, a in enumerate(raw)],
                "image_id": image_id, "answer_type": "other", "question_id": question_id})
    info = {"description": "fixture", "version": "2.0", "year": 2017}
    q = write_json(tmp_path / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
                   {"info": info, "task_type": "Open-Ended", "data_type": "mscoco",
                    "license": {}, "data_subtype": subtype, "questions": questions})
    a = write_json(tmp_path / f"v2_mscoco_{subtype}_annotations.json",
                   {"info": info, "license": {}, "data_subtype": subtype,
                    "annotations": annotations})
    return q, a


def test_vqa_v2_fields_naming_and_halves(tmp_path: Path) -> None:
    root = tmp_path / "vqa"
    val_ids = [42, 73, 74, 133, 136, 139, 164, 192]
    files = {"train2014": vqa_files(tmp_path, root, "train2014", [9, 25]),
             "val2014": vqa_files(tmp_path, root, "val2014", val_ids)}
    tables = load_vqa_v2(files, root, "images")
    assert_conforms(tables)
    train = tables["train"]["vqa"].sort("question_id")
    first = train.row(0, named=True)
    assert first["image_id"] == "coco-25" and first["question_id"] == "25000"
    assert first["image_path"] == "images/train2014/COCO_train2014_000000000025.jpg"
    assert len(first["answers"]) == 10 and first["answers"][0] == "Red"
    assert (first["question_type"], first["answer_type"]) == ("what color is the", "other")
    assert first["multiple_choice_answer"] == "red"
    # val2014 is halved by image: 4 + 4 images, each image's questions on one side only
    val, test = (set(tables[s]["images"]["image_id"]) for s in ("val", "test"))
    assert len(val) == len(test) == 4 and not val & test
    assert val | test == {f"coco-{i}" for i in val_ids}
    for split in ("val", "test"):
        assert set(tables[split]["vqa"]["image_id"]) == set(tables[split]["images"]["image_id"])
        assert tables[split]["vqa"].height == 8
    # deterministic: the same seed gives the same halves, another seed other halves
    again = load_vqa_v2(files, root, "images")
    assert set(again["val"]["images"]["image_id"]) == val
    other = load_vqa_v2(files, root, "images",
                        splits={"train2014": "train", "val2014": by_image(seed=7)})
    assert set(other["val"]["images"]["image_id"]) != val


def test_by_image_is_independent_of_order_and_exact() -> None:
    ids = [f"img{i}" for i in range(101)]
    rule = by_image(seed=3, parts={"train": 0.8, "val": 0.1, "test": 0.1})
    forward, backward = rule(ids), rule(list(reversed(ids)))
    assert forward == backward
    sizes = {s: sum(1 for v in forward.values() if v == s) for s in ("train", "val", "test")}
    assert sizes == {"train": 81, "val": 10, "test": 10}
    with pytest.raises(ValueError, match="sum to 1"):
        by_image(0, {"val": 0.5})


def test_vqa_v2_mismatched_files_fail_naming_the_question(tmp_path: Path) -> None:
    root = tmp_path / "vqa"
    q, _ = vqa_files(tmp_path, root, "val2014", [42])
    _, a = vqa_files(tmp_path / "other", root, "val2014", [73])
    with pytest.raises(FormatError, match="question_id 42000 has no annotation"):
        load_vqa_v2({"val2014": (q, a)}, root, "images")
