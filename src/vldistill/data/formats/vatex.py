"""VATEX video captions in the official json files (``vatex_training_v1.0.json``,
``vatex_validation_v1.0.json``) over clips the user placed.

Read: a list of ``{"videoID": "<YouTube id>_<start, 6 digits>_<end, 6 digits>", "enCap": [10
English captions], ...}``; ``chCap`` (Chinese) and any other field are ignored. Clip ids are
``vatex-<videoID>``; clip paths ``<clip_dir>/<videoID><extension>``; caption ids
``<image_id>-c<k>``, k the caption's position in ``enCap``. A clip is one row of the ``images``
table, with its video stream's width and height (0 when the clip is missing or unreadable, so
validation names it).

The videos are YouTube videos and are never downloaded here: the user cuts each one to its
[start, end] seconds and places it at its path (``require_clips`` says where). The public test
file has no English captions, so the default cuts validation by clip into val and test halves.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from vldistill.data.download import MissingDataError
from vldistill.data.formats.annotations import field, read_json, rel_path
from vldistill.data.formats.dataset import SIZE_THREADS, Tables, finish
from vldistill.data.formats.splits import FormatError, SplitRule, assign_splits, by_image
from vldistill.data.manifest import SCHEMAS, BadExampleError
from vldistill.data.video import clip_info

VATEX_SPLITS: dict[str, SplitRule] = {"training": "train", "validation": by_image(seed=0)}
MISSING_LISTED = 5  # expected paths spelled out when clips are missing


def _rows(path: Path, clip_dir: str | Path, extension: str) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a list of {{'videoID', 'enCap'}} objects (VATEX "
                          "format)")
    rows: list[dict] = []
    seen: set[str] = set()
    for k, entry in enumerate(data):
        where = f"{path} [{k}]"
        if not isinstance(entry, dict):
            raise FormatError(f"{where} is not a JSON object")
        video_id = field(entry, "videoID", where)
        if not isinstance(video_id, str) or not video_id or "/" in video_id or "\\" in video_id:
            raise FormatError(f"{where}: videoID {video_id!r} is not a usable clip file name")
        if video_id in seen:
            raise FormatError(f"{where}: videoID {video_id!r} appears twice")
        seen.add(video_id)
        if "enCap" not in entry:
            raise FormatError(f"{where} (videoID {video_id!r}) has no English captions ('enCap'); "
                              "the VATEX public test file has none: use the training and "
                              "validation files (validation is cut into val and test)")
        captions = entry["enCap"]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise FormatError(f"{where}: 'enCap' must be a list of strings, got {captions!r}")
        image_id = f"vatex-{video_id}"
        image_path = rel_path(clip_dir, f"{video_id}{extension}")
        rows += [{"image_id": image_id, "image_path": image_path, "caption_id": f"{image_id}-c{j}",
                  "caption": caption, "hard_negative": None}
                 for j, caption in enumerate(captions)]
    return rows


def _clip_size(path: Path) -> tuple[int, int]:
    try:
        _, _, width, height = clip_info(path)
    except BadExampleError:  # missing or unreadable: validation names it with the reason
        return 0, 0
    return width, height


def _with_clip_sizes(root: str | Path, images: pl.DataFrame) -> pl.DataFrame:
    # finish() reads sizes from image headers, which a video does not have: take the stream's
    with ThreadPoolExecutor(SIZE_THREADS) as pool:
        sizes = list(pool.map(_clip_size, (Path(root) / p for p in images["image_path"])))
    return images.with_columns(pl.Series("width", [w for w, _ in sizes], dtype=pl.Int32),
                               pl.Series("height", [h for _, h in sizes], dtype=pl.Int32))


def load_vatex(files: Mapping[str, str | Path], root: str | Path, clip_dir: str | Path, *,
               splits: Mapping[str, SplitRule] = VATEX_SPLITS,
               extension: str = ".mp4") -> Tables:
    """English captions and clips per split.

    ``files`` maps an official split (``training``, ``validation``) to its json; ``clip_dir``
    (relative to ``root``) holds the clips, named ``<videoID><extension>``.
    """
    tasks = {official: {"captions": pl.DataFrame(_rows(Path(p), clip_dir, extension),
                                                 schema=SCHEMAS["captions"])}
             for official, p in files.items()}
    tables = finish(root, assign_splits(tasks, splits, "VATEX"))
    for split_tables in tables.values():
        split_tables["images"] = _with_clip_sizes(root, split_tables["images"])
    return tables


def missing_clips(root: str | Path, tables: Tables) -> list[str]:
    """The expected path (under ``root``) of every clip the tables list that is not a file."""
    paths = {p for split_tables in tables.values() if "images" in split_tables
             for p in split_tables["images"]["image_path"].to_list()}
    return sorted(str(Path(root) / p) for p in paths if not (Path(root) / p).is_file())


def require_clips(root: str | Path, tables: Tables) -> None:
    """Raise MissingDataError listing where the missing clips belong, if any are missing."""
    missing = missing_clips(root, tables)
    if not missing:
        return
    listed = "\n".join(f"  {p}" for p in missing[:MISSING_LISTED])
    more = len(missing) - MISSING_LISTED
    raise MissingDataError(
        f"{len(missing)} VATEX clip(s) are missing; expected at\n{listed}"
        + (f"\n  ... and {more} more" if more > 0 else "")
        + f"\nVATEX videos are YouTube videos and the pipeline never downloads them: cut each "
          f"video to the seconds its videoID ends in (<YouTube id>_<start>_<end>), place the "
          f"clip at the path above, named <videoID>{Path(missing[0]).suffix}, and run again "
          "(or drop the clips you cannot obtain from the annotation json)."
    )
