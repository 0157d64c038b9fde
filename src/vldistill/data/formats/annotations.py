"""Reading official annotation files; every error names the file and the entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vldistill.data.formats.splits import FormatError


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FormatError(f"annotation file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from exc


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """One JSON object per non-blank line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise FormatError(f"annotation file {path} does not exist") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path} line {number} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise FormatError(f"{path} line {number} is not a JSON object")
        records.append(record)
    return records


def field(record: dict[str, Any], name: str, where: str) -> Any:
    """``record[name]``, or a FormatError saying which entry of which file lacks it."""
    if name not in record:
        raise FormatError(f"{where} lacks the field {name!r} (has {sorted(record)})")
    return record[name]


def rel_path(*parts: str | Path) -> str:
    """A manifest image path: POSIX separators, relative to the dataset root."""
    return Path(*parts).as_posix()
