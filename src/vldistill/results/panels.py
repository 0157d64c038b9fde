"""Retrieval panels: a few fixed text queries, each with a model's top images, the correct image
framed, so a reader sees what the recall numbers mean. Drawn from the evaluation's
ranks.parquet (which keeps each query's top images) and the split's manifests: no model runs."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from vldistill.data.images import image_table  # noqa: E402
from vldistill.data.manifest import manifest_path, read_manifest  # noqa: E402
from vldistill.results.plots import save_figure  # noqa: E402
from vldistill.results.ranks import ranks_of, read_top_images  # noqa: E402

GOLD_COLOUR = "#1a9850"  # the correct image's frame
PANEL_QUERIES = 4


@dataclass(frozen=True)
class PanelRow:
    query: str
    gold_rank: float  # the correct image's expected place in the full ranking (1 = first)
    images: Sequence[Path]  # the top images, best first
    scores: Sequence[float]
    gold: Sequence[bool]  # which of them is the correct image


def panel_rows(ranks_path: str | Path, root: str | Path, split: str,
               queries: int = PANEL_QUERIES) -> list[PanelRow]:
    """The first ``queries`` queries of an evaluation (its fixed query order, the same for every
    model of a run), with their text and images looked up in the split's manifests."""
    table = read_top_images(ranks_path).head(queries)
    captions = read_manifest(manifest_path(root, split, "captions"), "captions")
    by_caption = {row["caption_id"]: row for row in captions.iter_rows(named=True)}
    paths = dict(image_table([manifest_path(root, split, "images")]).iter_rows())
    expected = ranks_of(table).expected().tolist()
    rows = []
    for record, gold_rank in zip(table.iter_rows(named=True), expected, strict=True):
        caption = by_caption.get(record["query"])
        if caption is None:
            raise ValueError(f"{ranks_path}: query {record['query']!r} is not a caption of the "
                             f"{split} split in {root}: the ranks come from another dataset")
        rows.append(PanelRow(caption["caption"], gold_rank,
                             [Path(root) / paths[i] for i in record["top"]], record["top_scores"],
                             [i == caption["image_id"] for i in record["top"]]))
    return rows


def _rank_text(rank: float) -> str:
    """A whole rank as is; a tie group's expected rank with one decimal, marked."""
    return f"{rank:.0f}" if rank == int(rank) else f"{rank:.1f} (ties)"


def _first_frame(path: Path) -> Image.Image:
    """A still to show: the image itself, or a clip's first frame."""
    from vldistill.data.video import is_clip, read_clip

    if is_clip(path):
        return Image.fromarray(read_clip(path, 1, 128)[0])
    with Image.open(path) as image:
        return image.convert("RGB")


def plot_retrieval_panel(rows: Sequence[PanelRow], title: str, path: str | Path) -> None:
    """One row per query: its text and the correct image's rank, then the top images."""
    if not rows:
        raise ValueError("no queries to show")
    k = max(len(row.images) for row in rows)
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.7 * (k + 1) + 1.5, 1.9 * len(rows)),
                             squeeze=False, gridspec_kw={"width_ratios": [2.2] + [1] * k})
    for r, row in enumerate(rows):
        text = axes[r][0]
        text.axis("off")
        text.text(0.0, 0.5, textwrap.fill(row.query, 28) + "\n\ncorrect image: rank "
                  + _rank_text(row.gold_rank), va="center", ha="left", fontsize=8,
                  transform=text.transAxes)
        for c in range(k):
            ax = axes[r][c + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row.images):
                ax.axis("off")
                continue
            ax.imshow(_first_frame(Path(row.images[c])))
            ax.set_title(f"{c + 1}: {row.scores[c]:.3f}", fontsize=7)
            for spine in ax.spines.values():
                spine.set_visible(row.gold[c])
                spine.set_color(GOLD_COLOUR)
                spine.set_linewidth(4)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
