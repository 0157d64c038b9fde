"""DVC over the Snakemake DAG, on the tiny config: `dvc repro` over a Snakemake run records every
artifact folder as its stage's output, and push -> fresh clone -> `make pull` round-trips every
artifact so that Snakemake has nothing left to do."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import WORKFLOW_FILES, copy_workflow
from readme_commands import Command, commands, make_recipe
from snakemake.utils import update_config

PROJECT_FILES = (*WORKFLOW_FILES, "src", "dvc.yaml", ".gitignore", ".dvcignore", "Makefile")
ARTIFACTS = ("data", "features", "models", "indexes", "results")


def run(cwd: Path, *command: str, stdout_only: bool = False) -> str:
    # the venv's console scripts (dvc, snakemake) first, as `make` puts them
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout if stdout_only else result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(repo, tmp_path_factory) -> Path:
    """A git + DVC project of this repository whose config.yaml is the tiny config."""
    root = copy_workflow(tmp_path_factory.mktemp("dvc") / "project", PROJECT_FILES)
    config = yaml.safe_load((repo / "config.yaml").read_text())
    update_config(config, yaml.safe_load((repo / "configs/tiny.yaml").read_text()))
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "core.analytics", "false")
    # the README's `dvc remote add`, pointed at a local folder
    run(root, *readme_dvc_commands(repo)[0].argv[:-1], str(root.parent / "remote"))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


def readme_dvc_commands(repo: Path) -> list[Command]:
    """The documentation's DVC block: remote add; repro, push, commit; then on a fresh clone
    make pull and a dry run that must have nothing to do."""
    everything = commands(repo)
    remote = next(c for c in everything if c.argv[:3] == ("dvc", "remote", "add"))
    block = [c for c in everything if (c.source, c.block) == (remote.source, remote.block)]
    assert [c.argv[:2] for c in block] == [
        ("dvc", "remote"), ("dvc", "repro"), ("dvc", "push"), ("git", "add"), ("git", "commit"),
        ("make", "pull"), ("snakemake", "-n")], "the README's DVC block changed: update this test"
    return block


# A Snakemake run's logs and benchmarks, copied with its artifacts. Its job records
# (.snakemake/metadata) are not: they hold the run folder's own paths, so another folder would
# read every job's code as changed.
RUN_RECORDS = ("logs", "benchmarks/runs")


@pytest.fixture(scope="module")
def built(repo, project, tiny_run) -> Path:
    """A clone of the project holding the session's Snakemake run of the same config, adopted
    by Snakemake (`--touch --forceall` records every job as this folder's, with its params and
    code), after the documentation's `dvc repro`. Each DVC stage's command then asks Snakemake
    for its folder and finds it built: DVC records what Snakemake made instead of training
    everything a second time (two clean runs giving one table is the kill-resume and SLURM
    tests' check)."""
    repro = readme_dvc_commands(repo)[1]
    built = project.parent / "built"
    run(project.parent, "git", "clone", "-q", str(project), str(built))
    for name in (*ARTIFACTS, *RUN_RECORDS):
        shutil.copytree(tiny_run / name, built / name, copy_function=shutil.copy2)
    run(built, "snakemake", "results/table.csv", "--touch", "--forceall", "--cores", "1")
    output = run(built, *repro.argv)
    assert output.count("Nothing to be done") == len(yaml.safe_load(
        (built / "dvc.yaml").read_text())["stages"]), output[-3000:]
    return built


@pytest.mark.slow
def test_dvc_repro_records_the_snakemake_run_and_pull_round_trips(repo, built, tiny_run):
    """The README's DVC commands, run as written (the remote a local folder)."""
    _, _, push, add, commit, pull, dry = readme_dvc_commands(repo)
    assert (built / "results/table.csv").read_bytes() == \
        (tiny_run / "results/table.csv").read_bytes()
    assert "Data and pipelines are up to date" in run(built, "dvc", "status")
    assert re.search(r"metrics\.json", run(built, "dvc", "metrics", "show"))
    for command in (push, add, commit):
        run(built, *command.argv)

    fresh = built.parent / "fresh"
    run(built.parent, "git", "clone", "-q", str(built), str(fresh))
    assert not any((fresh / name).exists() for name in ARTIFACTS)
    assert pull.argv == ("make", "pull")
    for command in make_recipe(fresh / "Makefile", "pull"):  # what `make pull` runs
        run(fresh, *command)

    for name in ARTIFACTS:
        files = sorted(p.relative_to(built) for p in (built / name).rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(fresh) for p in (fresh / name).rglob("*")
                               if p.is_file()), name
        for path in files:
            assert (fresh / path).read_bytes() == (built / path).read_bytes(), path
    assert dry.expect == "Nothing to be done"
    output = run(fresh, *dry.argv)
    assert dry.expect in output, output


def artifact_times(root: Path, folders: tuple[str, ...]) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for name in folders for p in (root / name).rglob("*") if p.is_file()}


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """A nested metrics dict as {"a/b/c": value}."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= leaves(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.slow
def test_a_dvc_experiment_reruns_only_what_its_key_touches_and_lists_its_metrics(repo, built):
    """docs/dvc.md's `dvc exp run -S`: the re-ranking weight re-runs the re-rankings and the
    results after them, nothing upstream; `dvc exp show` lists the experiment's metrics."""
    [exp_run] = [c for c in commands(repo, "dvc") if c.argv[1:3] == ("exp", "run")]
    name = exp_run.argv[exp_run.argv.index("-n") + 1]
    [setting] = [a for a in exp_run.argv if a.startswith("config.yaml:")]
    key, value = setting.removeprefix("config.yaml:").split("=")
    if run(built, "git", "status", "--porcelain").strip():  # an experiment starts from a commit
        run(built, "git", "add", "-A")
        run(built, "git", "commit", "-qm", "built")
    upstream = ("data", "features", "models", "indexes")
    before = artifact_times(built, upstream)
    reranks = sorted((built / "results").rglob("rerank_k*.json"))
    rerank_times = [p.stat().st_mtime_ns for p in reranks]

    run(built, *exp_run.argv)
    assert artifact_times(built, upstream) == before  # nothing upstream of the key re-ran
    assert all(p.stat().st_mtime_ns > t for p, t in zip(reranks, rerank_times, strict=True))
    assert "Nothing to be done" in run(built, "snakemake", "-n", "results/table.csv")

    shown = json.loads(run(built, "dvc", "exp", "show", "--json", stdout_only=True))
    baseline = next(r for r in shown if r["rev"] != "workspace")
    [experiment] = [e for group in baseline["experiments"] or [] for e in group["revs"]
                    if e["name"] == name]
    params = experiment["data"]["params"]["config.yaml"]["data"]
    leaf = params
    for part in key.split("."):
        leaf = leaf[part]
    assert leaf == float(value)
    metrics = leaves(experiment["data"]["metrics"]["results/metrics.json"]["data"])
    assert any("/rerank_k" in path for path in metrics), sorted(metrics)[:10]
    assert metrics.keys() == leaves(
        baseline["data"]["metrics"]["results/metrics.json"]["data"]).keys()
