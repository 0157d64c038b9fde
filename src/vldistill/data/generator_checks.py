"""Checks shared by the synthetic generators' configs (images and clips), for callers that
build a config in Python without the workflow's schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vldistill.data.manifest import SPLITS
from vldistill.data.scenes import geometry


def check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner} {name} must be an integer >= {minimum}, got {value!r}")


def check_image_size(owner: str, image_size: Any) -> None:
    check_int(owner, "image_size", image_size, 1)
    try:
        geometry(image_size)
    except ValueError as exc:
        raise ValueError(f"{owner} image_size: {exc}") from exc


def check_counts(owner: str, counts: Mapping[str, Any]) -> None:
    """Items per split: every split named, no other, none negative."""
    for split in counts:
        if split not in SPLITS:
            raise ValueError(f"{owner} counts has unknown split {split!r}")
    for split in SPLITS:
        if split not in counts:
            raise ValueError(f"{owner} counts lacks split {split!r}")
        check_int(owner, f"counts[{split!r}]", counts[split], 0)


def check_object_range(owner: str, minimum: Any, maximum: Any, most: int, why: str) -> None:
    check_int(owner, "min_objects", minimum, 1)
    check_int(owner, "max_objects", maximum, minimum)
    if maximum > most:
        raise ValueError(f"{owner} max_objects must be <= {most}{why}")
