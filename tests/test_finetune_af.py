"""Fine-tuning with MAD's adaptive lambda (AF) and fused-state targets, end to end on tiny data."""

import json

import polars as pl
import pytest
import torch
from test_distill_step import build_caches

from vldistill.data.manifest import manifest_path, read_manifest
from vldistill.models.config import StudentConfig
from vldistill.models.factory import create_student, save_checkpoint
from vldistill.stages.finetune import finetune
from vldistill.synthetic.images import SyntheticConfig, generate

TRAINING = {"steps": 6, "batch_size": 8, "lr": 0.003, "warmup_steps": 1, "checkpoint_every": 3}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("af")
    root = path / "data"
    generate(SyntheticConfig(counts={"train": 12, "val": 6, "test": 4, "test_shifted": 4}), root,
             seed=0, progress=False)
    frame = read_manifest(manifest_path(root, "train", "ve"), "ve")
    images = read_manifest(manifest_path(root, "train", "images"), "images")
    teachers = build_caches(path, images["image_id"].to_list(),
                            sorted(set(frame["hypothesis"].to_list())))
    torch.manual_seed(0)
    start = path / "agnostic-mad.safetensors"
    save_checkpoint(start, create_student(StudentConfig(width=32, heads=2, text_layers=1,
                                                        fusion_layers=1, context_length=32)))
    return root, start, teachers, path


def run(setup, method, name, **distill):
    root, start, teachers, path = setup
    out = path / name
    return finetune(task="ve", regime="full", method=method, root=root, start=start,
                    vision_index=teachers.vision.index_path,
                    text_index=teachers.text.index_path,
                    training=TRAINING, distill={"af_every": 2, "ema": 0.0, **distill}, seed=0,
                    out_path=out / "model.safetensors", metrics_path=out / "metrics.json")


def test_af_updates_lambda_from_the_held_out_gold_ce_against_the_probe(setup):
    mad = run(setup, "mad", "mad")
    ablated = run(setup, "mad-af", "mad-af")
    updates = mad["af"]
    assert [u["step"] for u in updates] == [0, 2, 4]
    assert all(u["probe_ce"] == mad["probe"]["out_of_fold_loss"] for u in updates)
    for u in updates:
        assert u["lambda"] == pytest.approx(min(1.0, u["student_val_ce"] / u["probe_ce"]))
    assert len(mad["lambda"]) == TRAINING["steps"] and ablated["lambda"] == [1.0] * 6
    assert ablated["af"] == []
    assert mad["probe"]["af_val_examples"] == 18  # 6 val images x 3 hypotheses
    written = json.loads((setup[3] / "mad" / "metrics.json").read_text())
    assert written["af"] == updates and "accuracy" in written["val"]


def test_mad_af_differs_from_mad_once_the_student_overtakes_the_probe(setup, monkeypatch):
    """Pin the held-out CE far below the probe's from the second update on: lambda follows,
    and the run parts from the constant-lambda ablation."""
    from vldistill.stages import finetune as stage

    losses = iter([10.0, 1e-3, 1e-3])
    monkeypatch.setattr(stage, "gold_cross_entropy",
                        lambda model, data, bank, rows: (next(losses), len(rows)))
    metrics = run(setup, "mad", "falling")
    lambdas = [u["lambda"] for u in metrics["af"]]
    assert lambdas[0] == 1.0 and lambdas[1] < 0.01 and lambdas[2] < 0.01
    assert metrics["lambda"][:2] == [1.0, 1.0] and metrics["lambda"][2] < 0.01
    assert metrics["final_train"]["loss"] != run(setup, "mad-af", "falling-af")["final_train"][
        "loss"]


@pytest.mark.parametrize("fused", ["tokens", "pooled", "both"])
def test_fused_targets_train_the_fusion_projections(setup, fused):
    metrics = run(setup, "mad-af", f"fused-{fused}", fused=fused)
    assert metrics["final_train"]["fused"] > 0
    unfused = run(setup, "mad-af", "unfused")
    assert unfused["final_train"]["fused"] == 0
    assert pl.Series(metrics["lambda"]).eq(1.0).all()
