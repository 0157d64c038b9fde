"""Every command the README and docs/ tell a user to run, read from their text, is checked: the
make targets exist and do what the README says, each Snakemake command plans on a fresh copy
of the workflow (a dry run), and the commands a dry run proves nothing about run elsewhere on
the tiny config (the main command: conftest's tiny_run; DVC: test_dvc; SLURM: test_slurm)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, main_command
from readme_commands import commands, make_recipe

README_ELSEWHERE = {  # commands a dry run cannot check, and the test that runs them
    "profiles/slurm-cpu": "test_slurm.py (on a local SLURM cluster)",
}


def readme_commands(repo: Path, program: str) -> list:
    return commands(repo, program)


def test_the_readme_names_its_two_commands_and_the_makefile_has_them(repo):
    targets = [c.argv[1] for c in readme_commands(repo, "make") if c.source == "README.md"]
    assert targets[:2] == ["results", "test"], targets  # the front door: main job, then tests
    makefile = (repo / "Makefile").read_text()
    for target in targets:
        assert f"\n{target}:" in makefile, f"README says `make {target}`; the Makefile lacks it"
    # `make results` runs the documented main command, with no more GPU jobs at once than the
    # machine's GPUs; CI runs `make test`
    assert make_recipe(repo / "Makefile", "results", CORES="all", GPUS="2") == [
        ["snakemake", "results/table.csv", "--cores", "all", "--resources", "gpu=2"]]
    assert "make test" in (repo / ".ci/run").read_text()


def test_the_main_command_is_what_the_tiny_run_runs():
    assert main_command() == ["snakemake", "results/table.csv", "--cores", "2", "--resources",
                              "gpu=0"]


def dry_runnable(repo: Path) -> list:
    return [c for c in readme_commands(repo, "snakemake")
            if not any(marker in c.argv for marker in README_ELSEWHERE)]


@pytest.mark.slow
@pytest.mark.parametrize("command", dry_runnable(REPO), ids=lambda c: f"{c.source}:{c.line}")
def test_each_snakemake_command_in_the_readme_plans_on_a_fresh_copy(repo, tmp_path, command):
    workdir = copy_workflow(tmp_path / "workflow")
    env = dict(os.environ)
    if "--profile" in command.argv:  # the user's own cluster profile, from the README's template
        name = command.argv[command.argv.index("--profile") + 1]
        profile = tmp_path / "config/snakemake" / name
        profile.mkdir(parents=True)
        template = yaml.safe_load((repo / "profiles/slurm/user-example.yaml").read_text())
        (profile / "config.yaml").write_text(yaml.safe_dump(template))
        env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    argv = [sys.executable, "-m", *command.argv, *([] if "-n" in command.argv else ["-n"])]
    result = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command.source}:{command.line}: {command.argv}\n" \
        + output[-3000:]
    assert "Job stats" in output or "Nothing to be done" in output, output[-2000:]
