"""A tiny COCO in the official formats, made from synthetic scenes, and a local server for it.

Images become JPEGs under ``train2014/`` and ``val2014/`` named as the COCO release names them,
captions a Karpathy ``dataset_coco.json``, VQA rows the VQA v2 question and annotation json
files; each is zipped as the official archives are. Captions and answers are the synthetic
generator's, so what the pipeline learns from them is real, just small.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from PIL import Image

from vldistill.data.manifest import manifest_path, read_manifest
from vldistill.synthetic.images import SyntheticConfig, generate

# synthetic split -> (COCO subtype, Karpathy split, first COCO image id)
LAYOUT = {"train": ("train2014", "train", 1000), "val": ("val2014", "val", 5000),
          "test": ("val2014", "test", 6000)}
ARCHIVES = {
    "train2014.zip": "images",
    "val2014.zip": "images",
    "caption_datasets.zip": "dataset_coco.json",
    "v2_Questions_Train_mscoco.zip": "v2_OpenEnded_mscoco_train2014_questions.json",
    "v2_Annotations_Train_mscoco.zip": "v2_mscoco_train2014_annotations.json",
    "v2_Questions_Val_mscoco.zip": "v2_OpenEnded_mscoco_val2014_questions.json",
    "v2_Annotations_Val_mscoco.zip": "v2_mscoco_val2014_annotations.json",
}


def _zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=(2014, 1, 1, 0, 0, 0))  # same bytes every run
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)


def build(out: Path, counts: dict[str, int], seed: int = 0) -> dict[str, str]:
    """Write the archives into ``out``; returns {archive name: sha256}."""
    synthetic = out / "synthetic"
    generate(SyntheticConfig(counts={**counts, "test_shifted": 1}), synthetic, seed=seed,
             progress=False)
    images: dict[str, dict[str, bytes]] = {"train2014": {}, "val2014": {}}
    karpathy, questions, annotations = [], {"train2014": [], "val2014": []}, \
        {"train2014": [], "val2014": []}
    for split, (subtype, karpathy_split, first_id) in LAYOUT.items():
        frame = read_manifest(manifest_path(synthetic, split, "images"), "images")
        coco_id = {image_id: first_id + k for k, image_id in enumerate(frame["image_id"])}
        for image_id, rel in zip(frame["image_id"], frame["image_path"], strict=True):
            name = f"COCO_{subtype}_{coco_id[image_id]:012d}.jpg"
            buffer = io.BytesIO()
            Image.open(synthetic / rel).convert("RGB").save(buffer, format="JPEG", quality=95)
            images[subtype][f"{subtype}/{name}"] = buffer.getvalue()
        captions = read_manifest(manifest_path(synthetic, split, "captions"), "captions")
        for image_id, group in captions.group_by("image_id", maintain_order=True):
            cid = coco_id[image_id[0]]
            karpathy.append({
                "filepath": subtype, "filename": f"COCO_{subtype}_{cid:012d}.jpg",
                "imgid": len(karpathy), "split": karpathy_split, "cocoid": cid,
                "sentids": list(range(len(group))),
                "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": len(karpathy),
                               "sentid": k} for k, c in enumerate(group["caption"])],
            })
        vqa = read_manifest(manifest_path(synthetic, split, "vqa"), "vqa")
        for k, row in enumerate(vqa.iter_rows(named=True)):
            qid = coco_id[row["image_id"]] * 1000 + k
            questions[subtype].append({"image_id": coco_id[row["image_id"]],
                                       "question": row["question"], "question_id": qid})
            annotations[subtype].append({
                "question_id": qid, "image_id": coco_id[row["image_id"]],
                "question_type": row["question_type"], "answer_type": row["answer_type"],
                "multiple_choice_answer": row["multiple_choice_answer"],
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                            for i, a in enumerate(row["answers"])],
            })
    def dump(obj: object) -> bytes:
        return json.dumps(obj, sort_keys=True).encode()

    contents = {
        "train2014.zip": images["train2014"],
        "val2014.zip": images["val2014"],
        "caption_datasets.zip": {"dataset_coco.json": dump({"images": karpathy,
                                                            "dataset": "coco"})},
    }
    for subtype, part in (("train2014", "Train"), ("val2014", "Val")):
        contents[f"v2_Questions_{part}_mscoco.zip"] = {
            f"v2_OpenEnded_mscoco_{subtype}_questions.json": dump(
                {"data_subtype": subtype, "task_type": "Open-Ended",
                 "questions": questions[subtype]})}
        contents[f"v2_Annotations_{part}_mscoco.zip"] = {
            f"v2_mscoco_{subtype}_annotations.json": dump(
                {"data_subtype": subtype, "annotations": annotations[subtype]})}
    digests = {}
    for name, files in contents.items():
        _zip(out / name, files)
        digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    return digests


def overlay(base_url: str, digests: dict[str, str], name: str = "tiny-coco") -> dict:
    """A config overlay that downloads the archives from ``base_url`` and reads them."""
    def vqa(subtype: str, part: str) -> list[str]:
        questions = f"v2_Questions_{part}_mscoco.zip.d/v2_OpenEnded_mscoco_{subtype}_questions"
        answers = f"v2_Annotations_{part}_mscoco.zip.d/v2_mscoco_{subtype}_annotations"
        return [f"raw/{questions}.json", f"raw/{answers}.json"]

    return {
        "dataset": {"name": name, "source": "files"},
        "downloads": {archive: {"url": f"{base_url}/{archive}", "sha256": digest,
                                "extract": True} for archive, digest in digests.items()},
        "image_roots": {"coco": ["raw/train2014.zip.d", "raw/val2014.zip.d"]},
        "sources": [
            {"format": "karpathy", "annotations": "raw/caption_datasets.zip.d/dataset_coco.json",
             "images": "coco"},
            {"format": "vqa_v2", "images": "coco",
             "annotations": {"train2014": vqa("train2014", "Train"),
                             "val2014": vqa("val2014", "Val")}},
        ],
    }


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a free local port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def table_counts(root: Path) -> dict[str, dict[str, int]]:
    return {split: {t: pl.read_parquet(manifest_path(root, split, t)).height
                    for t in ("images", "captions", "vqa")} for split in LAYOUT}
