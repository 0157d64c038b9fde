"""Real-data loaders on tiny fixtures written here in each official format: split mapping, ids,
image paths and sizes, rendered texts, and manifests that pass validation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from vldistill.data.formats import (
    DEFAULT_SPLITS,
    LOADERS,
    FormatError,
    by_image,
    combine,
    images_in_several_splits,
    load_karpathy,
    load_snli_ve,
    load_vcr,
    load_vqa_v2,
    write_dataset,
)
from vldistill.data.manifest import (
    SCHEMAS,
    SPLITS,
    TABLES,
    BadExampleError,
    manifest_path,
    read_manifest,
)
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


def snli_ve_record(photo: str, pair: str, hypothesis: str, label: str) -> dict:
    return {"Flickr30K_ID": photo, "Flikr30kID": f"{photo}.jpg", "captionID": f"{photo}.jpg#0",
            "pairID": pair, "sentence1": "Two dogs run through a field.",
            "sentence1_binary_parse": "( ... )", "sentence1_parse": "(ROOT ...)",
            "sentence2": hypothesis, "sentence2_binary_parse": "( ... )",
            "sentence2_parse": "(ROOT ...)", "annotator_labels": [label], "gold_label": label}


@pytest.fixture()
def snli_ve(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "flickr"
    for k, photo in enumerate(["2248275918", "1000092795", "3637013", "36979"]):
        jpeg(root / "flickr30k-images" / f"{photo}.jpg", (32, 24 + k))
    files = {
        "train": write_jsonl(tmp_path / "snli_ve_train.jsonl", [
            snli_ve_record("2248275918", "2248275918.jpg#0r1e", "Animals are outside.",
                           "entailment"),
            snli_ve_record("2248275918", "2248275918.jpg#0r1c", "The dogs sleep.",
                           "contradiction"),
            snli_ve_record("1000092795", "1000092795.jpg#2r1n", "They are brothers.", "neutral"),
            snli_ve_record("1000092795", "1000092795.jpg#2r2n", "Nobody agreed here.", "-"),
        ]),
        "dev": write_jsonl(tmp_path / "snli_ve_dev.jsonl", [
            snli_ve_record("3637013", "3637013.jpg#1r1e", "A person is outdoors.", "entailment"),
        ]),
        "test": write_jsonl(tmp_path / "snli_ve_test.jsonl", [
            snli_ve_record("36979", "36979.jpg#0r1n", "The girl is happy.", "neutral"),
        ]),
    }
    return root, files


def test_snli_ve_ids_paths_labels(snli_ve) -> None:
    root, files = snli_ve
    tables = load_snli_ve(files, root, "flickr30k-images")
    assert_conforms(tables)
    train = tables["train"]["ve"]
    # the '-' (no gold label) pair is left out, the rest keep their official ids and labels
    assert train["pair_id"].to_list() == ["2248275918.jpg#0r1e", "2248275918.jpg#0r1c",
                                          "1000092795.jpg#2r1n"]
    assert train["label"].to_list() == ["entailment", "contradiction", "neutral"]
    assert train["hypothesis"][0] == "Animals are outside."
    assert train["image_id"][0] == "flickr30k-2248275918"
    assert train["image_path"][0] == "flickr30k-images/2248275918.jpg"
    assert tables["train"]["images"]["image_id"].to_list() == ["flickr30k-1000092795",
                                                               "flickr30k-2248275918"]
    assert tables["val"]["ve"]["pair_id"].to_list() == ["3637013.jpg#1r1e"]  # dev -> val
    assert tables["test"]["images"].row(0, named=True)["height"] == 27


def vcr_record(annot: str, img_fn: str, answer_label: int = 1, rationale_label: int = 2) -> dict:
    objects = ["person", "person", "horse", "dog"]
    return {
        "movie": "3015_CHARLIE_ST_CLOUD", "objects": objects, "interesting_scores": [0],
        "answer_likelihood": "possible", "img_fn": img_fn,
        "metadata_fn": img_fn.replace(".jpg", ".json"), "answer_orig": "No she does not",
        "question_orig": "Does 2 feel comfortable?", "rationale_orig": "She is standing stiffly",
        "question": ["Why", "is", [0], "looking", "at", [2], "?"],
        "answer_match_iter": [3, 0, 2, 1], "answer_sources": [10, 0, 3, 4],
        "answer_choices": [
            [[0], "wants", "to", "ride", [2], "."],
            [[0, 1], "are", "worried", "about", [3], "."],
            [[1], "does", "n't", "like", "horses", "."],
            ["It", "'s", "raining", "(", "hard", ")", "."],
        ],
        "answer_label": answer_label,
        "rationale_choices": [
            [[0], "is", "smiling", "."],
            [[0, 1, 3], "stand", "still", "."],
            [[3], "is", "barking", "at", [2], "."],
            ["Horses", "are", "big", "."],
        ],
        "rationale_label": rationale_label, "rationale_sources": [1, 2, 3, 4],
        "rationale_match_iter": [0, 1, 2, 3], "img_id": annot.replace("train", "img"),
        "question_number": 1, "annot_id": annot, "match_fold": "train-0",
        "match_index": 0,
    }


@pytest.fixture()
def vcr(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "vcr"
    fns = [f"lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.5{k}.935@0.jpg"
           for k in range(6)]
    for fn in fns:
        jpeg(root / "vcr1images" / fn)
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", [vcr_record("train-0", fns[0]),
                                                        vcr_record("train-1", fns[0], 0, 3)]),
        "val": write_jsonl(tmp_path / "val.jsonl",
                           [vcr_record(f"val-{k}", fn) for k, fn in enumerate(fns[1:] * 2)]),
    }
    return root, files


def test_vcr_rendering_ids_and_halves(vcr) -> None:
    root, files = vcr
    tables = load_vcr(files, root, "vcr1images")
    assert_conforms(tables)
    item = tables["train"]["vcr"].row(0, named=True)
    assert item["item_id"] == "train-0"
    assert item["image_id"] == ("vcr-lsmdc_3015_CHARLIE_ST_CLOUD/"
                                "3015_CHARLIE_ST_CLOUD_00.23.50.935@0")
    assert item["image_path"] == ("vcr1images/lsmdc_3015_CHARLIE_ST_CLOUD/"
                                  "3015_CHARLIE_ST_CLOUD_00.23.50.935@0.jpg")
    assert item["question"] == "Why is person1 looking at horse3?"
    assert item["answers"] == ["person1 wants to ride horse3.",
                               "person1 and person2 are worried about dog4.",
                               "person2 doesn't like horses.",
                               "It's raining (hard)."]
    assert item["rationales"][1] == "person1, person2 and dog4 stand still."
    assert (item["answer_label"], item["rationale_label"]) == (1, 2)
    assert tables["train"]["vcr"]["answer_label"].to_list() == [1, 0]
    # val is halved by image: 5 images -> 2 + 3 (rounded), each image's items on one side
    val, test = (set(tables[s]["images"]["image_id"]) for s in ("val", "test"))
    assert sorted([len(val), len(test)]) == [2, 3] and not val & test
    assert set(tables["val"]["vcr"]["image_id"]) == val
    assert tables["val"]["vcr"].height + tables["test"]["vcr"].height == 10


def test_vcr_test_file_without_labels_and_bad_reference_fail(vcr, tmp_path: Path) -> None:
    root, files = vcr
    unlabelled = vcr_record("test-0", "a/b.jpg")
    del unlabelled["answer_label"], unlabelled["rationale_label"]
    test_file = write_jsonl(tmp_path / "test.jsonl", [unlabelled])
    with pytest.raises(FormatError, match="test labels are hidden"):
        load_vcr({"test": test_file}, root, "vcr1images", splits={"test": "test"})
    broken = vcr_record("train-9", "a/b.jpg")
    broken["question"] = ["Why", "is", [7], "here", "?"]
    with pytest.raises(FormatError, match=r"record 0 question: object reference \[7\]"):
        load_vcr({"train": write_jsonl(tmp_path / "bad.jsonl", [broken])}, root, "vcr1images")


def test_combined_dataset_validates_and_writes_every_file(coco, tmp_path: Path) -> None:
    root, karpathy_json = coco
    # VQA v2 questions on two of the same COCO images: shared image rows, not duplicated
    files = {"val2014": vqa_files(tmp_path, root, "val2014", [391895, 318219])}
    captions = load_karpathy(karpathy_json, root, "images")
    vqa = load_vqa_v2(files, root, "images", splits={"val2014": "test"})
    tables = combine(captions, vqa)
    assert tables["test"]["images"]["image_id"].to_list() == ["coco-318219", "coco-391895"]
    assert tables["test"]["vqa"].height == 4 and tables["test"]["captions"].height == 2
    assert images_in_several_splits(tables) == {"coco-318219": ["val", "test"]}
    counts = write_dataset(root, tables)
    for split in SPLITS:
        for table in TABLES:
            path = manifest_path(root, split, table)
            assert read_manifest(path, table).height == counts[split][table]
    assert counts["test_shifted"] == {t: 0 for t in TABLES} and counts["val"]["vqa"] == 0
    report = validate_dataset(root, skip_bad_examples=False)
    assert sum(n for split in report["skipped"].values() for n in split.values()) == 0


def test_same_image_with_two_paths_is_an_error(coco, tmp_path: Path) -> None:
    root, karpathy_json = coco
    files = {"val2014": vqa_files(tmp_path, root, "val2014", [391895])}
    captions = load_karpathy(karpathy_json, root, "images")
    vqa = load_vqa_v2(files, root, "elsewhere", splits={"val2014": "test"})
    with pytest.raises(ValueError, match="'coco-391895' has different paths"):
        combine(captions, vqa)


def test_broken_image_and_empty_hypothesis(snli_ve, tmp_path: Path) -> None:
    root, files = snli_ve
    broken = root / "flickr30k-images" / "1000092795.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated download
    records = [json.loads(line) for line in files["dev"].read_text().splitlines()]
    records.append(snli_ve_record("3637013", "3637013.jpg#1r2n", "  ", "neutral"))
    write_jsonl(files["dev"], records)
    tables = load_snli_ve(files, root, "flickr30k-images")
    assert tables["train"]["images"].filter(
        pl.col("image_id") == "flickr30k-1000092795")["width"].to_list() == [0]
    write_dataset(root, tables)
    with pytest.raises(BadExampleError) as failure:
        validate_dataset(root, skip_bad_examples=False)
    message = str(failure.value)
    assert "1000092795.jpg" in message and "image does not decode" in message
    assert f"{manifest_path(root, 'val', 've')} row 1 (3637013.jpg#1r2n): empty hypothesis" in (
        message)
    report = validate_dataset(root, skip_bad_examples=True)
    assert report["skipped"]["train"] == {"images": 1, "captions": 0, "vqa": 0, "ve": 1, "vcr": 0}
    assert report["skipped"]["val"]["ve"] == 1
    assert read_manifest(manifest_path(root, "train", "ve"), "ve")["pair_id"].to_list() == [
        "2248275918.jpg#0r1e", "2248275918.jpg#0r1c"]
    validate_dataset(root, skip_bad_examples=False)  # clean after the drop


def test_vqa_v2_without_multiple_choice_answer_takes_the_normalised_majority(tmp_path: Path
                                                                             ) -> None:
    root = tmp_path / "vqa"
    q, a = vqa_files(tmp_path, root, "val2014", [42], questions_per_image=1)
    data = json.loads(a.read_text())
    del data["annotations"][0]["multiple_choice_answer"]
    answers = ["Two", "2", "two.", "3", "three", "3", "2", "4", "two", "3"]
    data["annotations"][0]["answers"] = [{"answer": x, "answer_confidence": "maybe",
                                          "answer_id": i + 1} for i, x in enumerate(answers)]
    write_json(a, data)
    row = load_vqa_v2({"val2014": (q, a)}, root, "images",
                      splits={"val2014": "val"})["val"]["vqa"].row(0, named=True)
    assert row["multiple_choice_answer"] == "2"  # "Two", "2", "two.", "2", "two" -> 5 votes
    assert row["answers"] == answers  # the raw annotator strings stay as written
    assert set(LOADERS) == set(DEFAULT_SPLITS) == {"karpathy", "vqa_v2", "snli_ve", "vcr",
                                                     "vatex"}
