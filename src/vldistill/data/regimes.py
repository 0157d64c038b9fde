"""Training-data regimes: which part of the training split a fine-tuning run may see.

A low-shot regime keeps a seeded fraction of the training *images* with all their examples, so
questions about one image never straddle the kept and dropped parts; ``full`` keeps everything.
The same (fraction, seed) keeps the same images for every task and method, which makes methods
comparable within a regime, and a smaller fraction keeps a subset of a larger one's images.
"""

from __future__ import annotations

import hashlib

import polars as pl


def regime_fraction(name: str) -> float:
    """``full`` -> 1.0; ``lowshot-10`` -> 0.10 (percent of training images)."""
    if name == "full":
        return 1.0
    prefix = "lowshot-"
    if name.startswith(prefix):
        try:
            percent = float(name[len(prefix):])
        except ValueError:
            percent = -1.0
        if 0 < percent <= 100:
            return percent / 100
    raise ValueError(f"unknown regime {name!r}; expected 'full' or 'lowshot-<percent>' "
                     "with 0 < percent <= 100, e.g. 'lowshot-10'")


def _rank(image_id: str, seed: int) -> int:
    # A hash rank per image: nested subsets across fractions, independent of row order.
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def select_regime(table: pl.DataFrame, regime: str, seed: int) -> pl.DataFrame:
    """Rows of ``table`` (any task manifest of the train split) whose image is in the regime."""
    fraction = regime_fraction(regime)
    if fraction == 1.0:
        return table
    images = table.get_column("image_id").unique().sort().to_list()
    n_keep = max(1, round(fraction * len(images)))
    kept = set(sorted(images, key=lambda i: _rank(i, seed))[:n_keep])
    return table.filter(pl.col("image_id").is_in(kept))
