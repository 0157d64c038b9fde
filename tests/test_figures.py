"""Training curves and retrieval panels: drawn from what the jobs wrote, no model run."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from vldistill.eval.retrieval import Ranks
from vldistill.results.curves import curve_label, plot_training_curves, read_curves
from vldistill.results.panels import panel_rows, plot_retrieval_panel
from vldistill.results.ranks import TopImages, read_query_ranks, read_top_images, write_query_ranks


def test_top_images_keep_the_best_first_and_drop_empty_slots():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.7]])
    top = TopImages.of(scores, ["a", "b", "c"], n=2)
    assert top.image_ids == [["b", "c"], ["c", "a"]]
    assert top.scores[0] == pytest.approx([0.9, 0.5])
    # re-ranked candidates: gallery rows given, -1 (nothing found) and -inf left out
    rows = torch.tensor([[2, 0, -1], [1, -1, -1]])
    combined = torch.tensor([[3.0, 1.0, float("-inf")], [2.0, float("-inf"), float("-inf")]])
    top = TopImages.of(combined, ["a", "b", "c"], rows=rows)
    assert top.image_ids == [["c", "a"], ["b"]]


def test_ranks_with_top_images_still_read_as_ranks(tmp_path):
    ranks = Ranks(torch.tensor([0, 3]), torch.tensor([0, 1]), torch.tensor([1, 1]))
    top = TopImages([["x", "y"], ["y", "x"]], [[2.0, 1.0], [0.5, 0.4]])
    write_query_ranks(["q1", "q2"], ranks, tmp_path / "r.parquet", top)
    ids, back = read_query_ranks(tmp_path / "r.parquet")
    assert ids == ["q1", "q2"] and back.higher.tolist() == [0, 3]
    assert read_top_images(tmp_path / "r.parquet")["top"].to_list() == top.image_ids
    write_query_ranks(["q1", "q2"], ranks, tmp_path / "old.parquet")  # no top images kept
    with pytest.raises(ValueError, match="old.parquet has no .*re-run the retrieval"):
        read_top_images(tmp_path / "old.parquet")


def _gallery(root, split="test"):
    (root / "images").mkdir(parents=True)
    ids = ["img-a", "img-b", "img-c"]
    for i, image_id in enumerate(ids):
        array = np.full((16, 16, 3), 60 * i, dtype=np.uint8)
        Image.fromarray(array).save(root / "images" / f"{image_id}.png")
    manifest = root / "manifest" / split
    manifest.mkdir(parents=True)
    key = {"image_id": ids, "image_path": [f"images/{i}.png" for i in ids]}
    pl.DataFrame({**key, "domain": ["source"] * 3, "width": [16] * 3, "height": [16] * 3,
                  "scene": [None] * 3}).write_parquet(manifest / "images.parquet")
    pl.DataFrame({**key, "caption_id": ["c-a", "c-b", "c-c"],
                  "caption": ["a dark square", "a grey square", "a light square"],
                  "hard_negative": [None] * 3}).write_parquet(manifest / "captions.parquet")


def test_a_panel_row_per_query_with_its_text_images_and_the_gold_framed(tmp_path):
    root = tmp_path / "data/toy"
    _gallery(root)
    ranks = Ranks(torch.tensor([1, 0, 0]), torch.tensor([0, 1, 0]), torch.tensor([1, 1, 1]))
    top = TopImages([["img-b", "img-a"], ["img-b", "img-c"], ["img-c"]],
                    [[0.9, 0.8], [0.7, 0.7], [0.5]])
    write_query_ranks(["c-a", "c-b", "c-c"], ranks, tmp_path / "m.ranks.parquet", top)
    rows = panel_rows(tmp_path / "m.ranks.parquet", root, "test", queries=2)
    assert [r.query for r in rows] == ["a dark square", "a grey square"]
    assert [r.gold_rank for r in rows] == [2.0, 1.5]  # a tie with one wrong image: 1.5 expected
    assert rows[0].gold == [False, True] and rows[1].gold == [True, False]
    assert rows[0].images[0] == root / "images/img-b.png"
    plot_retrieval_panel(rows, "toy", tmp_path / "panel.png")
    assert (tmp_path / "panel.png").read_bytes().startswith(b"\x89PNG")
    write_query_ranks(["c-x", "c-b", "c-c"], ranks, tmp_path / "other.ranks.parquet", top)
    with pytest.raises(ValueError, match="'c-x' is not a caption of the test split"):
        panel_rows(tmp_path / "other.ranks.parquet", root, "test")


def _metrics(path, history, validation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"history": history, **({"validation": validation}
                                                        if validation else {})}))
    return path


def test_training_curves_draw_one_panel_per_job_and_group_fine_tuning(tmp_path):
    steps = [{"step": s, "loss": 2.0 / s, "itm": 1.0 / s, "itm_accuracy": 0.5 + s / 100,
              "lr": 1e-3} for s in range(1, 21)]
    student = _metrics(tmp_path / "models/toy/student/seed-0/pretrained.json", steps,
                       [{"step": 10, "val_itm_accuracy": 0.6}, {"step": 20, "val_itm": 0.4}])
    fast = _metrics(tmp_path / "models/toy/retrieval/seed-0/fast.json", steps)
    tuned = [_metrics(tmp_path / f"models/toy/vqa/full/{m}/student-0/seed-0/metrics.json",
                      steps) for m in ("baseline", "mad")]
    assert curve_label(student) == "student/seed-0/pretrained"
    assert curve_label(tuned[1]) == "vqa/full/mad/student-0/seed-0"
    assert len(read_curves(student)[1]) == 2
    plot_training_curves([student, fast, *tuned], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    empty = _metrics(tmp_path / "models/toy/retrieval/seed-0/slow.json", [])
    with pytest.raises(ValueError, match="slow.json: no training history"):
        plot_training_curves([empty], tmp_path / "none.png")
