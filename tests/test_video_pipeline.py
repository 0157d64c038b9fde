"""The video modality through the same rules: synthetic clips, towers reading all frames, the
single-frame baseline beside every model, text -> clip recall in the results table."""

import json

import polars as pl
import pytest
import yaml
from conftest import copy_workflow, snakemake

OVERLAY = {
    "dataset": {"name": "tiny-video", "source": "synthetic_video"},
    "synthetic_video": {"counts": {"train": 12, "val": 2, "test": 6, "test_shifted": 2},
                        "captions_per_clip": 2, "extension": ".mp4"},
    "student": {"frames": 4},
    "finetune": {"tasks": []},
    "retrieval": {"max_queries": None, "slow": {"init": "pretrained"},
                  "fast": {"init": "pretrained", "hard_negatives": True},
                  "rerank": {"ks": [1, 4]}},
}


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("video"))
    (workdir / "video.yaml").write_text(yaml.safe_dump(OVERLAY))
    result = snakemake(workdir, "--cores", "2", overrides=("video.yaml",))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_a_tiny_video_run_reports_text_to_clip_recall_with_a_single_frame_baseline(video_run):
    table = pl.read_csv(video_run / "results/table.csv")
    assert set(table["task"]) == {"retrieval"}
    models = set(table["method"])
    assert {"fast", "fast_distilled", "slow", "rerank_k1", "rerank_k4", "fast_1frame",
            "slow_1frame"} <= models
    recall = table.filter(pl.col("metric") == "t2i_R@1")
    assert (recall["n"] == 6 * 2).all()  # 2 queries per clip of the 6-clip gallery
    # every caption has a hard negative (the time-reversed clip's): a coin flip is the reference
    hard = table.filter(pl.col("metric") == "hard_negative_acc")
    assert set(hard["method"]) == {"fast", "fast_distilled", "slow", "fast_1frame",
                                   "slow_1frame"}
    assert (hard["n"] == 12).all() and (hard["reference"] == 50.0).all()
    assert hard["value"].is_between(0, 100).all()
    fast = json.loads((video_run / "models/tiny-video/retrieval/seed-0/fast.json").read_text())
    assert fast["hard_negatives"] is True
    # the teachers cached every sampled frame of the training clips
    index = json.loads(
        (video_run / "features/tiny-video/vision-efficientnet_lite0/index.json").read_text())
    assert index["n"] == 12 * 4
    keys = pl.read_parquet(video_run / "features/tiny-video/vision-efficientnet_lite0/"
                           "index.parquet")["key"]
    assert sorted(keys)[:4] == [f"{sorted(keys)[0][:-3]}#{t:02d}" for t in range(4)]
    summary = json.loads((video_run / "data/tiny-video/summary.json").read_text())
    assert summary["n_frames"] == 8 and summary["counts"]["test"]["images"] == 6
    clip = pl.read_parquet(video_run / "data/tiny-video/manifest/test/images.parquet")
    assert clip["image_path"][0].endswith(".mp4")
    # dual pairs: the gallery holds each clip's time-reversed twin
    captions = pl.read_parquet(video_run / "data/tiny-video/manifest/test/captions.parquet")
    first, twin = (captions.filter(pl.col("image_id") == clip["image_id"][i]) for i in (0, 1))
    assert first["hard_negative"].to_list() == twin["caption"].to_list()
    assert json.loads((video_run / "data/tiny-video/validation.json").read_text())[
        "reasons"] == {}
