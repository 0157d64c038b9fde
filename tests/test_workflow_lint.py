"""`snakemake --lint` finds nothing: a software environment on every rule (Snakefile, end),
input functions in rules/common.smk only, no path composition with `+`."""

import subprocess
import sys

from conftest import copy_workflow


def test_snakemake_lint_is_clean(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, output[-4000:]
