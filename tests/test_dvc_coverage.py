"""dvc.yaml cannot drift from the rules: each DVC stage's params cover every config key that
reaches its rules' params, and its deps cover every file its rules run (rule file, script, the
package modules the script imports). Keys are found by editing each one and seeing which jobs'
params move, on a fresh copy of the workflow (DAGs only, nothing runs)."""

import random

import pytest
import yaml
from config_edits import Edit, draw, effective_config, leaves
from conftest import copy_workflow
from dag_model import build

from vldistill.code_version import package_root, source_files
from vldistill.config import load_schema

CONFIG = "configs/tiny.yaml"


def covered(item: str, listed: list[str]) -> bool:
    """A listed key or path covers itself and everything below it."""
    return any(item == entry or item.startswith(entry.rstrip("/") + ("." if "/" not in item
                                                                        else "/"))
               for entry in listed)


@pytest.fixture(scope="module")
def stages(repo, tmp_path_factory):
    """Each DVC stage: its out folders (this config's dataset), params and deps."""
    workdir = copy_workflow(tmp_path_factory.mktemp("dvc-coverage"))
    dataset = effective_config(workdir, [workdir / CONFIG],
                               workdir / "schemas/config.schema.yaml")["dataset"]["name"]
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    parsed = {}
    for name, stage in dvc.items():
        outs = [next(iter(out)) if isinstance(out, dict) else out
                for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])]
        params = [key for entry in stage.get("params", []) for key in
                  (entry["config.yaml"] if isinstance(entry, dict) else [entry])]
        parsed[name] = {"outs": [o.replace("${dataset.name}", dataset) for o in outs],
                        "params": params, "deps": stage.get("deps", [])}
    return workdir, parsed


def stage_of(outputs: tuple[str, ...], stages: dict) -> str | None:
    for name, stage in stages.items():
        if any(covered(output, stage["outs"]) for output in outputs):
            return name
    return None


@pytest.mark.slow
def test_every_key_a_rule_reads_is_a_param_of_that_rules_dvc_stage(stages):
    workdir, parsed = stages
    schema_path = workdir / "schemas/config.schema.yaml"
    root = load_schema(schema_path)
    base_files = [workdir / CONFIG]
    base = build(workdir, base_files)
    rng = random.Random(20)
    missing, tried = set(), 0
    config = effective_config(workdir, base_files, schema_path)
    for key, sub, value in leaves(config, root, root):
        new = draw(rng, sub, value, root)
        if new is None:
            continue
        edit = Edit(key, new)
        try:
            edited = build(workdir, [*base_files, edit.write(workdir / "edit.yaml")])
        except Exception:
            continue  # a value the checks refuse alone (e.g. a teacher without its model)
        tried += 1
        for job_key, job in edited.jobs.items():
            before = base.jobs.get(job_key)
            if before is None or before.params == job.params:
                continue
            stage = stage_of(job_key[1], parsed)
            if stage is not None and not covered(edit.dotted, parsed[stage]["params"]):
                missing.add(f"{stage}: {edit.dotted} (read by rule {job.rule})")
    assert tried >= 60
    assert not missing, "dvc.yaml stages lack params:\n  " + "\n  ".join(sorted(missing))


def test_every_file_a_stage_runs_is_a_dep_of_it(stages):
    workdir, parsed = stages
    root = package_root()
    missing = set()
    for job_key, job in build(workdir, [workdir / CONFIG]).jobs.items():
        stage = stage_of(job_key[1], parsed)
        if stage is None:
            continue
        files = [job.snakefile, *([job.script] if job.script else [])]
        if job.script:
            files += [f"src/{p.relative_to(root).as_posix()}"
                      for p in source_files(workdir / job.script, root)]
        missing.update(f"{stage}: {f} (rule {job.rule})" for f in files
                       if not covered(f, parsed[stage]["deps"]))
    assert not missing, "dvc.yaml stages lack deps:\n  " + "\n  ".join(sorted(missing))
