"""Map official splits onto the project's splits, whole images at a time.

A rule is a split name, ``None`` (drop the official split), or a function that receives the
distinct image ids of an official split and returns {image_id: split}. ``by_image`` is such a
function: it cuts an official split (VQA v2 val2014, VCR val, whose test labels are hidden) into
parts by a seeded hash rank of the image id, so the questions of one image never straddle two
splits and the cut does not depend on row order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl

from vldistill.data.manifest import SPLITS
from vldistill.data.regimes import _rank  # the same seeded image rank the low-shot regimes use

SplitRule = str | Callable[[Sequence[str]], Mapping[str, str]] | None
TaskTables = dict[str, pl.DataFrame]  # task table name -> rows (image_id and image_path first)


class FormatError(ValueError):
    """An annotation file is not in the official format; the message names the file and entry."""


def by_image(seed: int, parts: Mapping[str, float] | None = None
             ) -> Callable[[Sequence[str]], dict[str, str]]:
    """A rule that splits images into ``parts`` ({split: fraction}, default half val, half test).

    Images are sorted by their seeded hash rank and cut at the cumulative fractions, so the sizes
    are exact (rounded) and the same ids with the same seed always land in the same parts.
    """
    parts = dict(parts or {"val": 0.5, "test": 0.5})
    unknown = [s for s in parts if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {SPLITS}")
    if any(f < 0 for f in parts.values()) or abs(sum(parts.values()) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {parts}")

    def assign(image_ids: Sequence[str]) -> dict[str, str]:
        ranked = sorted(set(image_ids), key=lambda i: (_rank(i, seed), i))
        result: dict[str, str] = {}
        start, cumulative = 0, 0.0
        for k, (split, fraction) in enumerate(parts.items()):
            cumulative += fraction
            stop = len(ranked) if k == len(parts) - 1 else round(cumulative * len(ranked))
            result.update((i, split) for i in ranked[start:stop])
            start = stop
        return result

    return assign


def assign_splits(per_official: Mapping[str, TaskTables], rules: Mapping[str, SplitRule],
                  source: str) -> dict[str, TaskTables]:
    """Task tables per official split -> task tables per project split (rows concatenated)."""
    out: dict[str, dict[str, list[pl.DataFrame]]] = {}
    for official, tables in per_official.items():
        if official not in rules:
            raise FormatError(f"{source}: official split {official!r} has no mapping; map it to "
                              f"one of {SPLITS} (or None to drop it); mapped: {sorted(rules)}")
        rule = rules[official]
        if rule is None:
            continue
        if isinstance(rule, str):
            if rule not in SPLITS:
                raise ValueError(f"{official!r} maps to unknown split {rule!r}; expected {SPLITS}")
            for table, df in tables.items():
                out.setdefault(rule, {}).setdefault(table, []).append(df)
            continue
        ids = sorted({i for df in tables.values() for i in df["image_id"].to_list()})
        mapping = rule(ids)
        bad = sorted({s for s in mapping.values() if s not in SPLITS})
        if bad:
            raise ValueError(f"the rule for {official!r} gave unknown split(s) {bad}")
        for table, df in tables.items():
            labelled = df.with_columns(
                pl.col("image_id").replace_strict(mapping, return_dtype=pl.String).alias("_split"))
            for (split,), part in labelled.partition_by("_split", as_dict=True).items():
                out.setdefault(str(split), {}).setdefault(table, []).append(part.drop("_split"))
    return {split: {t: pl.concat(dfs) for t, dfs in tables.items()}
            for split, tables in out.items()}
