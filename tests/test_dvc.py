"""DVC over the Snakemake DAG, on the tiny config: `dvc repro` from a clean clone rebuilds the
table Snakemake built, and push -> fresh clone -> `make pull` round-trips every artifact so
that Snakemake has nothing left to do."""

import os
import re
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


def run(cwd: Path, *command: str) -> str:
    # the venv's console scripts (dvc, snakemake) first, as `make` puts them
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


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


@pytest.mark.slow
def test_dvc_repro_rebuilds_the_snakemake_table_and_pull_round_trips(repo, project, tiny_run):
    """The README's DVC commands, run as written (the remote a local folder)."""
    _, repro, push, add, commit, pull, dry = readme_dvc_commands(repo)
    built = project.parent / "built"
    run(project.parent, "git", "clone", "-q", str(project), str(built))
    run(built, *repro.argv)
    # two clean runs of the same config and seeds (this one and the session's Snakemake run):
    # the results table is bit-identical (timings live in timings.csv)
    assert (built / "results/table.csv").read_bytes() == \
        (tiny_run / "results/table.csv").read_bytes()
    assert "Data and pipelines are up to date" in run(built, "dvc", "status")
    assert re.search(r"metrics\.json", run(built, "dvc", "metrics", "show"))
    for command in (push, add, commit):
        run(built, *command.argv)

    fresh = project.parent / "fresh"
    run(project.parent, "git", "clone", "-q", str(built), str(fresh))
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
