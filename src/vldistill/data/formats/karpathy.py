"""COCO / Flickr30K / Flickr8K captions in the Karpathy split json (``dataset_coco.json``, ...).

Read: ``images[*].split`` (train / restval / val / test), ``filepath`` (COCO: train2014 or
val2014; absent for Flickr), ``filename``, ``cocoid`` (COCO only) and ``sentences[*].raw``.
Image ids: ``<dataset>-<cocoid>`` for COCO (the id VQA v2 uses too, so both tasks share image
rows), otherwise ``<dataset>-<filepath/><file stem>`` (Flickr30K: the Flickr photo id SNLI-VE
uses). ``<dataset>`` is the json's ``dataset`` field unless the caller names one. Caption ids are
``<image_id>-c<k>``, k the sentence's position in the image's list. Image paths are
``<image_dir>/<filepath>/<filename>``, relative to the dataset root.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import polars as pl

from vldistill.data.formats.annotations import field, read_json, rel_path
from vldistill.data.formats.dataset import Tables, finish
from vldistill.data.formats.splits import FormatError, SplitRule, assign_splits
from vldistill.data.manifest import SCHEMAS

KARPATHY_SPLITS: dict[str, SplitRule] = {
    "train": "train", "restval": "train", "val": "val", "test": "test",
}


def load_karpathy(json_path: str | Path, root: str | Path, image_dir: str | Path, *,
                  splits: Mapping[str, SplitRule] = KARPATHY_SPLITS,
                  dataset: str | None = None) -> Tables:
    """Captions and images per split from a Karpathy-format json.

    ``image_dir`` is where the images lie, relative to ``root`` (the dataset root the manifests'
    paths are relative to). Works the same for a user's own images in this format.
    """
    data = read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FormatError(f"{json_path}: expected an object with an 'images' list (Karpathy "
                          "split format)")
    prefix = dataset or data.get("dataset") or Path(json_path).stem
    per_official: dict[str, list[dict]] = {}
    for k, entry in enumerate(data["images"]):
        where = f"{json_path} images[{k}]"
        filename = field(entry, "filename", where)
        filepath = entry.get("filepath") or ""
        if "cocoid" in entry:
            local = str(entry["cocoid"])
        else:
            local = str(PurePosixPath(filepath, PurePosixPath(filename).stem))
        image_id = f"{prefix}-{local}"
        image_path = rel_path(image_dir, filepath, filename)
        for j, sentence in enumerate(field(entry, "sentences", where)):
            per_official.setdefault(str(field(entry, "split", where)), []).append({
                "image_id": image_id,
                "image_path": image_path,
                "caption_id": f"{image_id}-c{j}",
                "caption": field(sentence, "raw", f"{where}.sentences[{j}]"),
                "hard_negative": None,
            })
    tasks = {official: {"captions": pl.DataFrame(rows, schema=SCHEMAS["captions"])}
             for official, rows in per_official.items()}
    return finish(root, assign_splits(tasks, splits, str(json_path)))
