"""Re-runs that are exactly right: config edits, dataset switches and code edits (issue: partial
re-runs must re-run what an edit changes, all of it, and nothing else)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from config_edits import random_edits
from conftest import snakemake
from dag_model import build, predicted

N_EDITS = 100  # seeded random config edits checked against the model
EDIT_SEED = 18


def rules_of(jobs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return dict(sorted(counts.items()))


def test_no_script_reads_the_config_behind_its_rules_params(repo):
    """Everything a job depends on reaches it through params, input or wildcards, where the
    provenance triggers see it; a script reading the config directly would hide an edit."""
    for script in sorted((repo / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "config":
                raise AssertionError(f"{script.name}:{node.lineno} reads .config; pass the "
                                     "setting as a param of its rule instead")


@pytest.mark.slow
def test_seeded_config_edits_rerun_exactly_what_their_params_predict(tiny_run, tmp_path):
    """For each edit, Snakemake's plan against the completed run's metadata equals the model's:
    the jobs whose params, inputs or outputs changed, and everything downstream of them."""
    base_files = [tiny_run / "configs/tiny.yaml"]
    base = build(tiny_run, base_files)
    assert not base.planned, rules_of(base.planned)
    assert not base.unrepresentable, base.unrepresentable  # a param Snakemake cannot record
    edits = random_edits(tiny_run, base_files, tiny_run / "schemas/config.schema.yaml",
                         seed=EDIT_SEED)
    checked, rejected, keys = 0, 0, set()
    while checked < N_EDITS:
        edit = next(edits)
        overlay = edit.write(tmp_path / f"edit-{checked + rejected}.yaml")
        try:
            edited = build(tiny_run, [*base_files, overlay])
        except Exception as error:  # the checks rejected the drawn value: draw another
            assert "config" in str(error).lower() or "expected" in str(error).lower(), error
            rejected += 1
            assert rejected < 4 * N_EDITS, "most drawn edits are rejected: fix the generator"
            continue
        expected = predicted(base, edited)
        assert edited.planned == expected, (
            f"{edit.dotted} = {edit.value!r}: Snakemake plans {rules_of(edited.planned)}, "
            f"the params model predicts {rules_of(expected)}; only in the plan: "
            f"{rules_of(edited.planned - expected)}, only predicted: "
            f"{rules_of(expected - edited.planned)}")
        assert not edited.unrepresentable, (edit.dotted, edited.unrepresentable)
        checked += 1
        keys.add(edit.key)
    assert len(keys) >= 40  # the edits spread over the schema, not one key a hundred times


@pytest.mark.slow
def test_resource_and_thread_edits_rerun_nothing(tiny_run):
    edited = build(tiny_run, [tiny_run / "configs/tiny.yaml"], resources={
        "overwrite_threads": {"finetune": 2, "student_pretrain": 2},
        "overwrite_resources": {"finetune": {"mem_mb": 12000}, "retrieval_slow": {"runtime": 600}},
    })
    assert not edited.planned, rules_of(edited.planned)


@pytest.mark.slow
def test_switching_the_dataset_plans_the_new_dataset_and_its_table(tiny_run, tmp_path):
    """A captions-only run of dataset A, then dataset B: the documented command must rebuild the
    global table for B, not report A's table as up to date."""
    switched = tmp_path / "B.yaml"
    switched.write_text(yaml.safe_dump({"dataset": {"name": "tinyB"}}))
    plan = build(tiny_run, [tiny_run / "configs/tiny.yaml", switched]).planned
    rules = rules_of(plan)
    assert rules["data_synthetic"] == 1 and rules["results_table"] == 1
    # the table, the effects and the figures are global outputs drawn from the configured dataset
    global_rules = {"all", "results_table", "effects", "training_curves", "retrieval_panel"}
    assert all("tinyB" in " ".join(outputs) or rule in global_rules for rule, outputs in plan)


def test_the_table_states_what_it_was_built_from(tiny_run):
    markdown = (tiny_run / "results/table.md").read_text()
    assert "Built from: dataset tiny; source synthetic;" in markdown
    assert "tasks vqa, ve, vcr" in markdown


@pytest.mark.slow
def test_editing_a_module_reruns_the_rules_that_import_it_and_no_other(tiny_run, tmp_path):
    """Snakemake's code trigger sees a rule's script; the code hash param covers the package
    modules the script imports. A dry run through the CLI with an edited copy of the package."""
    package = tmp_path / "src"
    shutil.copytree(Path(__import__("vldistill").__file__).parent, package / "vldistill")
    edited = package / "vldistill/results/plots.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    env = {**os.environ, "PYTHONPATH": str(package)}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules",
         "--configfile", "configs/tiny.yaml"],
        cwd=tiny_run, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    planned = {line.split()[0] for line in result.stdout.splitlines()
               if len(line.split()) == 2 and line.split()[1].isdigit()} - {"total", "job"}
    # only the table's and the figures' rules draw plots; no training or evaluation job imports them
    assert planned == {"results_table", "training_curves", "retrieval_panel", "all"}, result.stdout
    # the unedited package plans nothing
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(
        snakemake(tiny_run, "-n", "--quiet", "rules"))


CHEAP_RULES = {"effects", "results_table", "finetune_report", "retrieval_report",
               "retrieval_rerank", "all"}


@pytest.mark.slow
def test_after_running_an_edit_a_second_dry_run_has_nothing_to_do(tiny_run, tmp_path):
    """The first seeded edit whose re-runs are seconds of work, run for real on a copy of the
    tiny run; then neither the model nor the CLI plans anything."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    base_files = [workdir / "configs/tiny.yaml"]
    base = build(workdir, base_files)
    for i, edit in enumerate(random_edits(workdir, base_files,
                                          workdir / "schemas/config.schema.yaml", seed=EDIT_SEED)):
        overlay = edit.write(tmp_path / f"edit-{i}.yaml")
        try:
            plan = predicted(base, build(workdir, [*base_files, overlay]))
        except Exception:
            continue
        if plan and {rule for rule, _ in plan} <= CHEAP_RULES:
            break
    result = snakemake(workdir, "--cores", "2", overrides=(str(overlay),))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not build(workdir, [*base_files, overlay]).planned, edit
    again = snakemake(workdir, "-n", overrides=(str(overlay),))
    assert "Nothing to be done" in again.stdout + again.stderr, edit
