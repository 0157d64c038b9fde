"""A real-format dataset through the whole DAG: a tiny COCO (Karpathy captions + VQA v2, zipped
as the official archives) downloaded from a local server, verified, extracted, read in its
official formats, with open_clip teachers (random weights: nothing can be fetched here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import polars as pl
import pytest
import yaml
from coco_fixture import build, overlay, serve
from conftest import copy_workflow, snakemake

COUNTS = {"train": 16, "val": 4, "test": 6}
OPEN_CLIP = {"name": "open_clip", "model": "ViT-S-32", "pretrained": None}


@pytest.fixture(scope="module")
def coco_run(repo, tmp_path_factory):
    served = tmp_path_factory.mktemp("served")
    digests = build(served, COUNTS)
    workdir = copy_workflow(tmp_path_factory.mktemp("coco"))
    with serve(served) as url:
        config = overlay(url, digests)
        config["teachers"] = {"vision": {**OPEN_CLIP, "image_size": 64, "batch_size": 8},
                              "text": {**OPEN_CLIP, "max_length": 24, "batch_size": 32}}
        config["finetune"] = {"tasks": ["vqa"]}
        config["retrieval"] = {"max_queries": None, "rerank": {"ks": [1, 4]}}
        (workdir / "coco.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        result = snakemake(workdir, "--cores", "2", overrides=("coco.yaml",))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir, digests


@pytest.mark.slow
def test_the_tiny_coco_runs_through_every_stage(coco_run):
    workdir, _ = coco_run
    table = pl.read_csv(workdir / "results/table.csv")
    assert set(table["task"]) == {"vqa", "retrieval"}
    vqa = table.filter(pl.col("task") == "vqa")
    # no shifted test set in this dataset: only the source test split is evaluated
    assert set(vqa["split"]) == {"test"} and (vqa["n"] > 0).all()
    assert set(vqa["method"]) == {"baseline", "mad", "text_only"}  # + the reference row
    models = set(table.filter(pl.col("task") == "retrieval")["method"])
    assert {"fast", "fast_distilled", "slow", "rerank_k1", "rerank_k4"} <= models
    index = json.loads((workdir / "features/tiny-coco/vision-open_clip/index.json").read_text())
    assert index["n"] == COUNTS["train"] and index["grid"] == [2, 2]  # ViT-S-32 at 64 px


@pytest.mark.slow
def test_downloads_are_verified_and_the_official_formats_read(coco_run):
    workdir, digests = coco_run
    root = workdir / "data/tiny-coco"
    for archive in digests:
        assert (root / "raw" / archive).is_file() and (root / "raw" / f"{archive}.d").is_dir()
        assert not (root / "raw" / f"{archive}.part").exists()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["sources"] == ["karpathy", "vqa_v2"]
    assert summary["image_roots"] == {"coco": 2}  # train2014/ and val2014/
    counts = summary["counts"]
    assert counts["train"]["captions"] == COUNTS["train"] * 5
    assert counts["test_shifted"] == dict.fromkeys(counts["test_shifted"], 0)
    # VQA v2's val2014 is cut by image into val and test; no image is in both
    val = set(pl.read_parquet(root / "manifest/val/vqa.parquet")["image_id"])
    test = set(pl.read_parquet(root / "manifest/test/vqa.parquet")["image_id"])
    assert val and test and not val & test
    first = pl.read_parquet(root / "manifest/train/images.parquet").row(0, named=True)
    assert first["image_id"].startswith("coco-") and first["width"] == 64
    assert (root / first["image_path"]).is_file()  # through the linked image root
    report = json.loads((root / "validation.json").read_text())
    assert report["reasons"] == {}


REUSING = ("vqav2", "snli_ve", "vcr")  # import configs/coco.yaml's students (pretrain.reuse)


def planned(output: str, rule: str) -> bool:
    return f"rule {rule}:" in output or f"localrule {rule}:" in output or f"\n{rule} " in output


@pytest.mark.parametrize("name", ["coco", "flickr30k", "vqav2", "snli_ve", "vcr"])
def test_each_real_config_shows_the_full_dag(repo, tmp_path, name):
    workdir = repo
    if name in REUSING:
        # the COCO run's students, as that run leaves them (a dry run checks only that they exist)
        workdir = copy_workflow(tmp_path)
        source = yaml.safe_load((repo / f"configs/{name}.yaml").read_text())["pretrain"]["reuse"]
        for stem in ("pretrained", "agnostic-plain", "agnostic-mad"):
            for suffix in (".safetensors", ".json"):
                path = workdir / source / "seed-0" / f"{stem}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "results/table.csv", "--configfile",
         f"configs/{name}.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    students = (("student_import",) if name in REUSING
                else ("student_pretrain", "student_task_agnostic"))
    for rule in ("data_files", "teacher_shard", *students, "results_table"):
        assert planned(output, rule), (rule, output[-2000:])
    if name in REUSING:  # trained once, in the COCO run
        assert not planned(output, "student_pretrain")
        assert not planned(output, "student_task_agnostic")
    # the training, evaluation and caching jobs ask for a GPU each (compute.device /
    # features.device: cuda)
    asks = gpu_asks(output)
    training = {"teacher_shard", "student_pretrain", "student_task_agnostic", "finetune",
                "retrieval_slow", "retrieval_fast", "retrieval_index", "retrieval_eval_fast",
                "retrieval_eval_slow", "retrieval_rerank"}
    assert {rule: gpus for rule, gpus in asks.items() if rule in training} == {
        rule: {1} for rule in training & set(asks)}
    assert asks["results_table"] == {0}


def test_pretrained_towers_are_inputs_of_pre_training_only(repo, tmp_path):
    """configs/pretrained-towers.yaml after coco.yaml: the checkpoints it names are inputs of
    student_pretrain (missing, the dry run names them); present, pre-training is planned."""
    towers = yaml.safe_load((repo / "configs/pretrained-towers.yaml").read_text())
    files = list(towers["pretrain"]["init"].values())
    workdir = copy_workflow(tmp_path)
    command = [sys.executable, "-m", "snakemake", "-n", "results/table.csv", "--configfile",
               "configs/coco.yaml", "configs/pretrained-towers.yaml"]
    missing = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    assert all(f in missing.stdout + missing.stderr for f in files), missing.stderr[-2000:]
    for name in files:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).touch()
    present = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert present.returncode == 0, present.stderr[-3000:]
    assert planned(present.stdout + present.stderr, "student_pretrain")


def gpu_asks(dry_run: str) -> dict[str, set[int]]:
    """Each planned rule's `gpu` resource values, from a dry run's job listing."""
    asks: dict[str, set[int]] = {}
    rule = None
    for line in dry_run.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            found = re.search(r"gpu=(\d+)", line)
            asks.setdefault(rule, set()).add(int(found[1]) if found else 0)
    return asks


REAL_CONFIGS = ["coco", "flickr30k", "vqav2", "snli_ve", "vcr"]
SHARED = ("teachers", "features", "student", "pretrain", "mad")


def test_the_real_configs_share_one_base_model_setting(repo):
    configs = {n: yaml.safe_load((repo / f"configs/{n}.yaml").read_text()) for n in REAL_CONFIGS}
    first = configs[REAL_CONFIGS[0]]
    for name, config in configs.items():
        # the same student everywhere; pretrain.reuse says where the others import it from
        own = {**config, "pretrain": {k: v for k, v in config["pretrain"].items() if k != "reuse"}}
        assert {k: own[k] for k in SHARED} == {k: first[k] for k in SHARED}, name
        if name in REUSING:
            assert config["pretrain"]["reuse"] == f"models/{first['dataset']['name']}/student"
        for entry in (config.get("downloads") or {}).values():  # every public file checksummed
            assert len(entry["sha256"]) == 64
