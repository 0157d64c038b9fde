"""The tiny pipeline on a real SLURM cluster through profiles/slurm (the executor plugin).

Needs a reachable cluster (`sinfo` answers): CI starts one on localhost with
scripts/slurm_local.sh and sets VLDISTILL_REQUIRE_SLURM=1, so there a missing cluster fails
instead of skipping. The local node has no GPU, so the test runs a copy of profiles/slurm with
the GPU asks dropped and memory capped to what the node has; everything else (threads, runtime,
retries with more memory per attempt, local rules) is the profile's own.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import copy_workflow, snakemake
from readme_commands import commands

REQUIRE = os.environ.get("VLDISTILL_REQUIRE_SLURM") == "1"
MEM_CAP_MB = 6000  # each job's memory on the test node: three fit beside the submitting process
PROFILE = "profiles/slurm-cpu"  # the test's copy of profiles/slurm, written by the fixture


def cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH"
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if result.returncode != 0:
        return f"no reachable SLURM cluster: {result.stderr.strip()}"
    if not any(state.startswith(("idle", "mix", "alloc")) for state in result.stdout.split()):
        return f"no usable SLURM node (states: {result.stdout.split()})"
    return None


def cpu_profile(profile: dict) -> dict:
    """profiles/slurm for a node without GPUs: no `gpu` ask, memory capped, and each rule's own
    threads (not the profile's 8) so every job runs with the threads it has in the local run:
    torch's CPU reductions round differently with another thread count, and the tables are
    compared bit for bit."""
    profile = {k: v for k, v in profile.items() if k != "set-threads"}
    profile = {**profile, "set-resources": {
        rule: {name: (f"min({value}, {MEM_CAP_MB})" if name == "mem_mb" else value)
               for name, value in resources.items() if name != "gpu"}
        for rule, resources in profile["set-resources"].items()
    }}
    return profile


def localrules(workdir: Path) -> set[str]:
    snakefile = (workdir / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", snakefile, re.M)
    assert block, "the Snakefile declares no localrules"
    return {name.strip(" ,") for name in block.group(1).splitlines()}


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table: jobs per rule."""
    stats = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def comparable(table: Path) -> pl.DataFrame:
    """The results table without latencies (metrics or columns ending in _ms): timings differ
    from run to run, everything else must not."""
    frame = pl.read_csv(table)
    if "metric" in frame.columns:
        frame = frame.filter(~pl.col("metric").str.ends_with("_ms"))
    frame = frame.drop([c for c in frame.columns if c.endswith("_ms")])
    return frame.sort(frame.columns)


def readme_cluster_test_args(repo: Path) -> list[str]:
    """The documented command for this test (the cluster page), as written there, less the tiny
    config file the test helper adds itself. Its status-check flags suit a cluster without
    accounting (scripts/slurm_local.sh), polled often so the run takes minutes, not the default
    40 s wait per job; `--max-threads 2` keeps every job at the threads of the local run."""
    command = next(c for c in commands(repo, "snakemake") if PROFILE in c.argv)
    args = list(command.argv[1:])
    at = args.index("--configfile")
    assert args[at + 1] == "configs/tiny.yaml", command
    return args[:at] + args[at + 2:]


@pytest.fixture(scope="module")
def slurm_run(repo, tmp_path_factory):
    problem = cluster_problem()
    if problem:
        if REQUIRE:
            pytest.fail(f"VLDISTILL_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(f"{problem} (start one with scripts/slurm_local.sh start)")
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"))
    profile = yaml.safe_load((repo / "profiles/slurm/config.yaml").read_text())
    (workdir / PROFILE).mkdir()
    (workdir / PROFILE / "config.yaml").write_text(yaml.safe_dump(cpu_profile(profile)))
    start = time.perf_counter()
    result = snakemake(workdir, *readme_cluster_test_args(repo))
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    print(f"tiny pipeline through SLURM: {seconds:.0f} s")
    return workdir, output


def test_the_profile_asks_for_gpus_for_training_and_feature_caching(repo):
    profile = yaml.safe_load((repo / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    resources = profile["set-resources"]
    for rule in ("teacher_shard", "student_pretrain", "student_task_agnostic", "finetune",
                 "retrieval_slow", "retrieval_fast"):
        assert resources[rule]["gpu"] >= 1, rule
        # more memory on a retry: the profile's ask, or the rule's own derived one
        assert "attempt" in str(resources[rule].get("mem_mb", "attempt")), rule
    assert profile["retries"] >= 1
    # account and partition are the user's (their own profile), never the workflow's
    assert "default-resources" not in profile
    assert "slurm_account" not in str(profile) and "slurm_partition" not in str(profile)


@pytest.mark.slow
def test_every_job_but_the_local_rules_went_through_sbatch(slurm_run):
    workdir, output = slurm_run
    counts = job_counts(output)
    local = localrules(workdir)
    logs = workdir / ".snakemake" / "slurm_logs"
    job_ids = []
    for rule, count in counts.items():
        rule_logs = sorted((logs / f"rule_{rule}").rglob("*.log"))
        expected = 0 if rule in local else count
        assert len(rule_logs) == expected, (rule, rule_logs)
        job_ids += [p.stem for p in rule_logs]
    assert len(job_ids) >= 25
    # every submitted job is known to SLURM and finished cleanly (MinJobAge keeps it listed)
    queue = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T"],
                           capture_output=True, text=True, check=True).stdout
    states = dict(line.split() for line in queue.splitlines())
    assert states == dict.fromkeys(job_ids, "COMPLETED")


@pytest.mark.slow
def test_the_slurm_results_table_matches_the_local_run(slurm_run, tiny_run):
    workdir, _ = slurm_run
    local = comparable(tiny_run / "results" / "table.csv")
    cluster = comparable(workdir / "results" / "table.csv")
    assert len(local) > 0
    assert cluster.equals(local), (cluster, local)
