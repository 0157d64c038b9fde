"""A tiny end-to-end run of the DAG that exists, through the real Snakemake CLI."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import snakemake

from vldistill.data.manifest import SPLITS, TABLES
from vldistill.features.store import FeatureStore


@pytest.mark.slow
def test_tiny_pipeline_produces_every_manifest_and_both_caches(tiny_run):
    root = tiny_run / "data" / "tiny"
    for split in SPLITS:
        for table in TABLES:
            assert (root / "manifest" / split / f"{table}.parquet").is_file()
    # the teachers encode the training split only (features.splits' default)
    images = pl.read_parquet(root / "manifest" / "train" / "images.parquet")
    vision = FeatureStore(tiny_run / "features/tiny/vision-efficientnet_lite0/index.parquet")
    assert sorted(vision.keys) == sorted(images["image_id"].to_list())
    assert vision.dim == 1280 and tuple(vision.grid) == (2, 2)  # 64 px / 32
    texts = pl.read_parquet(root / "texts.parquet")
    train_captions = pl.read_parquet(root / "manifest" / "train" / "captions.parquet")
    assert set(train_captions["caption"]) <= set(texts["text"])
    text = FeatureStore(tiny_run / "features/tiny/text-minilm/index.parquet")
    assert sorted(text.keys) == sorted(texts["text_id"].to_list())
    batch = text.get(texts["text_id"].to_list()[:3])
    assert batch["global"].shape == (3, 384) and batch["tokens"].shape == (3, 24, 384)
    throughput = pl.read_csv(
        tiny_run / "features/tiny/vision-efficientnet_lite0/throughput.tsv", separator="\t"
    )
    assert throughput["n"].sum() == len(images)
    assert (throughput["items_per_second_encode"] > 0).all()


@pytest.mark.slow
def test_every_job_has_a_log_and_a_benchmark(tiny_run):
    logs = sorted(p.relative_to(tiny_run / "logs") for p in (tiny_run / "logs").rglob("*.log"))
    benchmarks = list((tiny_run / "benchmarks" / "runs").rglob("*.tsv"))
    # data, 4 splits' pixel files, text corpus, 2 modalities x (2 shards + index), pretrain,
    # 2 task-agnostic students (plain, mad), 3 x 2 x 2 finetune, 3 x 2 text-only references,
    # finetune report; retrieval: slow, 2 fast, 2 indexes, 2 fast evals, slow eval, 2 re-ranks,
    # teacher ridge, retrieval report; effects; results table
    assert len(logs) == 54, logs
    assert len(benchmarks) == 54
    shard_log = (tiny_run / "logs/tiny/teacher/vision-efficientnet_lite0/shard-000-of-002.log")
    assert "done in" in shard_log.read_text()


@pytest.mark.slow
def test_up_to_date_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_text_teacher_edit_reruns_only_the_text_cache(tiny_run):
    override = tiny_run / "configs" / "text_edit.yaml"
    override.write_text("teachers:\n  text: {name: minilm, max_length: 16, batch_size: 64}\n")
    result = snakemake(tiny_run, "-n", overrides=(str(override),))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "text-minilm/shard-000-of-002" in output
    assert "text-minilm/index.parquet" in output
    assert "vision-efficientnet_lite0/shard-000-of-002" not in output
    assert "rule data_synthetic" not in output
    assert "rule student_pretrain" not in output  # pre-training reads no teacher
    assert "rule student_task_agnostic" in output


def dry_run_jobs(workdir: Path, *overrides: str) -> dict[str, int]:
    result = snakemake(workdir, "-n", "--quiet", "rules", overrides=overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in {"total", "job"}:
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.mark.slow
def test_finetune_results_exist_for_every_task_regime_and_method(tiny_run):
    for task in ("vqa", "ve", "vcr"):
        for regime in ("lowshot-50", "full"):
            for method in ("baseline", "mad"):
                path = (tiny_run / "models/tiny" / task / regime / method / "student-0"
                        / "seed-0/metrics.json")
                metrics = json.loads(path.read_text())
                assert set(metrics["results"]) == {"test", "test_shifted"}
                for result in metrics["results"].values():
                    assert result["n"] > 0
                    assert ("majority_baseline" if task == "vqa" else "chance") in result
                assert (metrics["probe"] is None) == (method == "baseline")
    report = (tiny_run / "results/tiny/finetune.md").read_text()
    assert "| reference | n |" in report and "(majority)" in report and "(chance)" in report
    rows = pl.read_csv(tiny_run / "results/tiny/finetune.csv")
    # regimes x (methods + the text-only reference) x splits x task metrics
    assert len(rows) == 2 * (2 + 1) * 2 * (1 + 1 + 3)
    ve = tiny_run / "models/tiny/ve"
    low = json.loads((ve / "lowshot-50/baseline/student-0/seed-0/metrics.json").read_text())
    full = json.loads((ve / "full/baseline/student-0/seed-0/metrics.json").read_text())
    assert low["n_train_images"] == 12 and full["n_train_images"] == 24


@pytest.mark.slow
def test_a_per_task_learning_rate_edit_reruns_only_that_tasks_finetuning(tiny_run):
    override = tiny_run / "configs" / "vqa_lr.yaml"
    override.write_text("finetune:\n  per_task: {vqa: {lr: 0.01}}\n")
    # the training curves read the first seed's fine-tuning histories
    assert dry_run_jobs(tiny_run, str(override)) == {"finetune": 4, "finetune_report": 1,
                                                     "training_curves": 1, "effects": 1,
                                                     "results_table": 1, "all": 1}


@pytest.mark.slow
def test_another_seed_adds_only_its_own_finetuning_jobs(tiny_run):
    override = tiny_run / "configs" / "seeds.yaml"
    override.write_text("finetune:\n  seeds: [0, 1]\n")
    # 3 tasks x 2 regimes x 2 methods for seed 1; seed 0's results and the students stay
    assert dry_run_jobs(tiny_run, str(override)) == {"finetune": 12, "text_only": 6,
                                                     "finetune_report": 1,
                                                     "effects": 1, "results_table": 1, "all": 1}


@pytest.mark.slow
def test_a_rerank_k_list_edit_reruns_only_reranking_and_the_tables(tiny_run):
    override = tiny_run / "configs" / "ks.yaml"
    override.write_text("retrieval:\n  rerank: {ks: [1, 2, 4]}\n")
    # plus the new re-ranker's panel
    assert dry_run_jobs(tiny_run, str(override)) == {"retrieval_rerank": 1, "retrieval_report": 1,
                                                     "retrieval_panel": 1, "effects": 1,
                                                     "results_table": 1, "all": 1}


@pytest.mark.slow
def test_a_sharded_index_builds_from_shard_jobs_and_retrains_nothing(tiny_run):
    override = tiny_run / "configs" / "index_shards.yaml"
    override.write_text("retrieval:\n  index: {factory: Flat, nprobe: null, shards: 3}\n")
    jobs = dry_run_jobs(tiny_run, str(override))
    # per Fast model: one template, three shards, one merge; then what reads the indexes
    assert {rule: jobs.get(rule) for rule in ("retrieval_index_template", "retrieval_index_shard",
                                              "retrieval_index")} == {
        "retrieval_index_template": 2, "retrieval_index_shard": 6, "retrieval_index": 2}
    assert not {"retrieval_fast", "retrieval_slow", "student_pretrain", "finetune"} & set(jobs)


@pytest.mark.slow
def test_a_fast_hard_negatives_edit_reruns_the_fast_models_and_what_reads_them_not_slow(
        tiny_run):
    override = tiny_run / "configs" / "hard_negatives.yaml"
    override.write_text("retrieval:\n  fast: {hard_negatives: true}\n")
    assert dry_run_jobs(tiny_run, str(override)) == {
        "retrieval_fast": 2, "retrieval_index": 2, "retrieval_eval_fast": 2,
        "retrieval_rerank": 2, "retrieval_report": 1, "effects": 1, "results_table": 1,
        # the panels of both Fast models and both re-rankers, and the Fast training curves
        "retrieval_panel": 4, "training_curves": 1, "all": 1}


@pytest.mark.slow
def test_a_resources_or_threads_change_reruns_nothing(tiny_run):
    result = snakemake(tiny_run, "-n", "--set-resources", "finetune:mem_mb=12000",
                       "retrieval_slow:runtime=600", "--set-threads", "finetune=2")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_training_job_asks_for_memory_by_the_size_of_what_it_loads(tiny_run):
    from vldistill.workflow import PROCESS_MB, training_mem_mb

    model = "models/tiny/student/seed-0/agnostic-mad.safetensors"
    result = snakemake(tiny_run, "-n", "--forcerun", "finetune", "--", "results/table.csv")
    asks = {int(m) for m in re.findall(r"rule finetune:.*?mem_mb=(\d+)", result.stdout, re.S)}
    assert result.returncode == 0, result.stderr
    # every fine-tuning job: the process, plus its tables and its start model
    assert asks and min(asks) > PROCESS_MB
    model_mb = (tiny_run / model).stat().st_size / 2**20
    assert training_mem_mb({model: model_mb}) == int(PROCESS_MB + 4 * model_mb)
    assert training_mem_mb({"a.parquet": 2.0, "a.npy": 10_000.0}, attempt=2) == 2 * (
        PROCESS_MB + 400)  # a pixel file is streamed: it does not count


@pytest.mark.slow
def test_the_results_table_and_plots(tiny_run):
    table = pl.read_csv(tiny_run / "results/table.csv")
    assert table.columns[:8] == ["dataset", "task", "regime", "split", "method", "metric",
                                 "value", "spread"]
    assert set(table["task"]) == {"vqa", "ve", "vcr", "retrieval"}
    keys = ["dataset", "task", "regime", "split", "method", "metric"]
    assert table.select(keys).is_unique().all()
    finetune = pl.read_csv(tiny_run / "results/tiny/finetune.csv")
    assert len(table.filter(pl.col("task") != "retrieval")) == len(finetune)  # one seed
    assert (table["n"] > 0).all()
    text = (tiny_run / "results/table.md").read_text()
    assert "| method | 50% source |" in text and "| rerank_k4 |" in text
    metrics = json.loads((tiny_run / "results/metrics.json").read_text())
    vqa = metrics["tiny"]["vqa"]["full"]["test"]["mad"]["accuracy"]
    assert vqa == pytest.approx(table.filter(
        (pl.col("task") == "vqa") & (pl.col("regime") == "full") & (pl.col("split") == "test")
        & (pl.col("method") == "mad"))["value"].item())
    ranked = ("fast", "fast_distilled", "slow", "rerank_k1", "rerank_k4")
    figures = ["lowshot", "recall_vs_k", "accuracy_vs_latency", "training_curves",
               *(f"retrieval_panel_{m}" for m in ranked)]
    for name in figures:
        png = (tiny_run / "results/plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        assert f"(plots/{name}.png)" in text  # table.md links every figure


@pytest.mark.slow
def test_a_shard_lost_before_the_gather_reruns_alone(tiny_run):
    # As after a run killed during one shard job: that shard and the index are missing.
    cache = tiny_run / "features/tiny/vision-efficientnet_lite0"
    moved = {p: p.with_name("kept-" + p.name)
             for p in (cache / "shard-001-of-002.safetensors", cache / "index.parquet")}
    for path, kept in moved.items():
        path.rename(kept)
    try:
        result = snakemake(tiny_run, "-n", "--quiet", "rules")
    finally:
        for path, kept in moved.items():
            kept.rename(path)
    assert result.returncode == 0, result.stderr
    jobs = dict(
        line.split()[:2] for line in result.stdout.splitlines()
        if line.split()[:1] and line.split()[0] in {"teacher_shard", "teacher_index", "all"}
    )
    assert jobs == {"teacher_shard": "1", "teacher_index": "1", "all": "1"}, result.stdout


@pytest.mark.slow
def test_a_forced_rerun_of_the_shards_gives_identical_bytes(tiny_run, tmp_path):
    # on a copy, and only the shards (--until): re-running everything downstream would cost
    # minutes and prove nothing more about the shards' bytes
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    shards = sorted((workdir / "features" / "tiny").rglob("shard-*.safetensors"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    result = snakemake(workdir, "--cores", "2", "--forcerun", "teacher_shard",
                       "--until", "teacher_shard")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    assert len(before) == 4 and after == before


@pytest.mark.slow
def test_retrieval_results_for_fast_distilled_slow_and_every_k(tiny_run):
    results = tiny_run / "results/tiny/retrieval/seed-0"
    models = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    ridge = models.pop("teacher_ridge")  # the reference row: no model, no latency
    assert ridge["t2i"]["n"] == 12
    assert set(models) == {"fast", "fast_distilled", "slow", "rerank_k1", "rerank_k4"}
    for result in models.values():
        # 8 test images x 2 captions, of which the config's max_queries: 12, the same for all
        assert result["t2i"]["n"] == result["queries"] == 12
        assert set(result["t2i"]) >= {"R@1", "R@5", "R@10", "median_rank"}
        assert result["latency_ms_per_query"]["total"] > 0
        assert result["seed"] == 0
    assert models["slow"]["slow_calls_per_query"] == 8  # the whole gallery
    assert models["rerank_k4"]["slow_calls_per_query"] == 4
    assert models["rerank_k1"]["t2i"]["R@1"] == models["fast_distilled"]["t2i"]["R@1"]
    assert (tiny_run / "indexes/tiny/seed-0/fast_distilled.faiss").is_file()

    table = pl.read_csv(tiny_run / "results/tiny/retrieval.csv")
    # + the caption ceiling and the teachers' ridge reference
    assert set(table["method"]) == set(models) | {"ceiling", "teacher_ridge"}
    slow_r1 = table.filter((pl.col("method") == "slow") & (pl.col("metric") == "t2i_R@1"))
    assert slow_r1["value"].item() == pytest.approx(models["slow"]["t2i"]["R@1"])
    assert slow_r1["reference"].item() == pytest.approx(100 / 8)  # chance: 1 of 8 images
    report = (tiny_run / "results/tiny/retrieval.md").read_text()
    assert "| rerank_k4 |" in report and "speed-up vs Slow" in report


def test_every_metrics_file_records_the_seeds_it_depends_on(tiny_run):
    stage_of = {"vqa": "finetune", "ve": "finetune", "vcr": "finetune", "retrieval": "retrieval",
                "student": "pretrain"}
    metrics = [*(tiny_run / "models/tiny").rglob("*.json"),
               *(tiny_run / "results/tiny/retrieval").rglob("*.json")]
    assert len(metrics) > 20
    for path in metrics:
        seeds = json.loads(path.read_text())["seeds"]
        parts = path.relative_to(tiny_run).parts
        stage = stage_of[parts[2]]
        # configs/tiny.yaml: seed 0 everywhere; the reference rows use no student
        if "text_only" in parts or path.stem == "teacher_ridge":
            assert seeds["data"] == 0, path
            continue
        assert seeds["data"] == seeds["pretrain"] == seeds[stage] == 0, path


def test_timings_live_beside_the_table_and_the_data_check_is_recorded(tiny_run):
    table = pl.read_csv(tiny_run / "results/table.csv")
    timings = pl.read_csv(tiny_run / "results/timings.csv")
    assert not table["metric"].str.ends_with("_ms").any()
    assert set(timings["metric"]) == {"fast_ms", "slow_ms", "total_ms"}
    assert (table["skipped"] == 0).all()
    report = json.loads((tiny_run / "data/tiny/validation.json").read_text())
    assert report["checked"]["train"]["images"] == 24 and report["reasons"] == {}


@pytest.mark.slow
def test_effects_pair_every_method_and_model_on_the_same_items(tiny_run):
    effects = pl.read_csv(tiny_run / "results/effects.csv")
    assert effects.columns == ["effect", "dataset", "task", "regime", "split", "metric",
                               "difference", "ci_low", "ci_high", "n", "seeds", "excludes_zero"]
    finetune = effects.filter(pl.col("task") != "retrieval")
    # configs/tiny.yaml: baseline and mad only; 2 regimes x 2 splits x (1 + 1 + 3) task metrics
    assert set(finetune["effect"]) == {"mad - baseline"} and len(finetune) == 2 * 2 * 5
    retrieval = effects.filter(pl.col("task") == "retrieval")
    assert retrieval.group_by("effect").len().sort("effect").rows() == [
        ("fast_distilled - fast", 3), ("rerank_k1 - slow", 3), ("rerank_k4 - slow", 3)]
    assert (retrieval["n"] == 12).all() and (effects["seeds"] == 1).all()
    assert (effects["ci_low"] <= effects["ci_high"]).all()
    # each difference is the two methods' table values apart: the same items, the same metric
    table = pl.read_csv(tiny_run / "results/table.csv")
    for row in finetune.head(4).iter_rows(named=True):
        cell = table.filter((pl.col("task") == row["task"]) & (pl.col("regime") == row["regime"])
                            & (pl.col("split") == row["split"])
                            & (pl.col("metric") == row["metric"]))
        value = dict(zip(cell["method"], cell["value"], strict=True))
        assert row["difference"] == pytest.approx(value["mad"] - value["baseline"])
        assert row["n"] == cell["n"][0]
    job = tiny_run / "models/tiny/vcr/full/mad/student-0/seed-0"
    items = pl.read_parquet(job / "item_scores.parquet")
    assert set(items["metric"]) == {"q2a", "qa2r", "q2ar"}
    assert set(items["split"]) == {"test", "test_shifted"}
    ranks = pl.read_parquet(tiny_run / "results/tiny/retrieval/seed-0/rerank_k4.ranks.parquet")
    assert ranks.columns == ["query", "higher", "tied", "gold_tied", "top", "top_scores"]
    assert len(ranks) == 12
    assert "| mad - baseline |" in (tiny_run / "results/effects.md").read_text()
    assert "## Effects" in (tiny_run / "results/table.md").read_text()



def build_reusing(workdir: Path, override: Path, source: Path, job: str) -> dict:
    """Build one job of a run that imports another run's ``source`` model, check the source was
    left as it was, and return the job's JSON."""
    before = source.stat().st_mtime_ns
    result = snakemake(workdir, "--cores", "2", job, overrides=(str(override),))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert source.stat().st_mtime_ns == before
    return json.loads((workdir / job).read_text())


@pytest.mark.slow
def test_a_second_dataset_fine_tunes_the_first_ones_students_without_retraining_them(tiny_run):
    override = tiny_run / "configs" / "reuse.yaml"
    override.write_text("dataset: {name: tiny2, source: synthetic}\n"
                        "seed: 7\n"
                        "pretrain: {reuse: models/tiny/student}\n")
    jobs = dry_run_jobs(tiny_run, str(override))
    # pretrained (the training curves), agnostic-plain (baseline) and agnostic-mad (mad)
    assert jobs["student_import"] == 3
    assert "student_pretrain" not in jobs and "student_task_agnostic" not in jobs
    source = tiny_run / "models/tiny/student/seed-0/agnostic-mad.safetensors"
    metrics = build_reusing(tiny_run, override, source,
                            "models/tiny2/vqa/full/mad/student-0/seed-0/metrics.json")
    [record] = metrics["provenance"]
    assert record["path"] == str(source.resolve()) and record["dataset"] == "tiny"
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["stage"] == "task_agnostic" and record["variant"] == "mad"
    # the source's generator seed is kept apart from this dataset's
    assert metrics["seeds"] == {"data": 7, "source_data": 0, "pretrain": 0,
                                "task_agnostic": 0, "finetune": 0}
    assert metrics["results"]["test"]["n"] > 0


@pytest.mark.slow
def test_a_second_dataset_searches_its_gallery_with_the_first_ones_retrieval_models(tiny_run):
    """retrieval.reuse: the Slow and Fast models imported, the index, evaluation and
    re-ranking over the second dataset's own gallery."""
    override = tiny_run / "configs" / "reuse-retrieval.yaml"
    override.write_text("dataset: {name: tiny3, source: synthetic}\n"
                        "seed: 8\n"
                        "finetune: {tasks: []}\n"
                        "retrieval: {reuse: models/tiny/retrieval}\n")
    jobs = dry_run_jobs(tiny_run, str(override))
    assert jobs["retrieval_import"] == 3  # slow, fast, fast_distilled
    assert not {"retrieval_slow", "retrieval_fast", "student_pretrain"} & set(jobs)
    source = tiny_run / "models/tiny/retrieval/seed-0/fast_distilled.safetensors"
    reranked = build_reusing(tiny_run, override, source,
                             "results/tiny3/retrieval/seed-0/rerank_k4.json")
    assert {r["dataset"] for r in reranked["provenance"]} == {"tiny"}
    assert {r["stage"] for r in reranked["provenance"]} == {"slow", "fast"}
    assert reranked["seeds"]["data"] == 8 and reranked["seeds"]["source_data"] == 0
