"""SNLI-VE in its official jsonl files (``snli_ve_{train,dev,test}.jsonl``).

Read: ``Flikr30kID`` (sic; the image file name, e.g. ``2248275918.jpg``; ``Flickr30K_ID``, the
bare id, as a fallback), ``sentence2`` (the hypothesis; ``sentence1``, the caption it came from,
is not used: the image is the premise), ``gold_label`` and ``pairID``. Image ids are
``flickr30k-<photo id>``, the Karpathy Flickr30K loader's ids, so both tasks share image rows;
paths are ``<image_dir>/<file name>``.

Labels: ``-`` is SNLI's official "no annotator majority" marker, not a broken row, so those pairs
are left out here (counted in the log). Any other label is kept as written and ``validate.py``
reports it as an unknown label, like every other bad example.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from vldistill.data.formats.annotations import field, read_jsonl, rel_path
from vldistill.data.formats.dataset import Tables, finish
from vldistill.data.formats.splits import FormatError, SplitRule, assign_splits
from vldistill.data.manifest import SCHEMAS

log = logging.getLogger(__name__)

SNLI_VE_SPLITS: dict[str, SplitRule] = {"train": "train", "dev": "val", "test": "test"}
NO_GOLD_LABEL = "-"


def _image_file(record: dict, where: str) -> str:
    if "Flikr30kID" in record:
        return str(record["Flikr30kID"])
    if "Flickr30K_ID" in record:
        return f"{record['Flickr30K_ID']}.jpg"
    raise FormatError(f"{where} lacks the image field 'Flikr30kID' (has {sorted(record)})")


def _rows(path: Path, image_dir: str | Path) -> list[dict]:
    rows, no_gold = [], 0
    for k, record in enumerate(read_jsonl(path)):
        where = f"{path} record {k}"
        label = field(record, "gold_label", where)
        if label == NO_GOLD_LABEL:
            no_gold += 1
            continue
        filename = _image_file(record, where)
        rows.append({
            "image_id": f"flickr30k-{Path(filename).stem}",
            "image_path": rel_path(image_dir, filename),
            "pair_id": str(field(record, "pairID", where)),
            "hypothesis": field(record, "sentence2", where),
            "label": label,
        })
    if no_gold:
        log.info("%s: left out %d pair(s) without a gold label ('-')", path, no_gold)
    return rows


def load_snli_ve(files: Mapping[str, str | Path], root: str | Path, image_dir: str | Path, *,
                 splits: Mapping[str, SplitRule] = SNLI_VE_SPLITS) -> Tables:
    """Hypotheses and images per split.

    ``files`` maps an official split (``train``, ``dev``, ``test``) to its jsonl; ``image_dir``
    (relative to ``root``) holds the Flickr30K images.
    """
    tasks = {official: {"ve": pl.DataFrame(_rows(Path(p), image_dir), schema=SCHEMAS["ve"])}
             for official, p in files.items()}
    return finish(root, assign_splits(tasks, splits, "SNLI-VE"))
