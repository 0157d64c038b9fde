"""Which jobs a config edit re-runs, two ways: Snakemake's own plan, and a model from params.

The model: a job must re-run when its params, its set of input files or its outputs' presence
differ from the completed run's, and so must everything downstream of it. ``planned`` asks
Snakemake (its provenance triggers against the run's recorded metadata: what a dry run would
print); ``jobs`` lists every job of the DAG with the params Snakemake would record. Both read
the DAG in-process through Snakemake's API (about half a second per DAG once warm, where a CLI
dry run pays several seconds of start-up), so a property test can afford a hundred edits.

Snakemake's Python API builds a DAG only as part of running it; ``_prepare_dag``/``_build_dag``
are the two internal steps its own ``--summary`` and ``--list-changes`` use (pinned Snakemake,
pyproject.toml).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.persistence import UNREPRESENTABLE
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    Quietness,
    ResourceSettings,
)

JobKey = tuple[str, tuple[str, ...]]  # (rule, outputs): unique within one DAG


@dataclass(frozen=True)
class Job:
    rule: str
    snakefile: str  # the .smk file that defines the rule
    script: str | None  # its script, relative to the workflow's directory
    params: tuple[str, ...]  # as Snakemake records them in the run's metadata
    inputs: frozenset[str]
    outputs_present: bool
    dependencies: frozenset[JobKey]


@dataclass(frozen=True)
class Dag:
    jobs: dict[JobKey, Job]
    planned: frozenset[JobKey]  # what Snakemake would run (a dry run's job list)
    unrepresentable: tuple[JobKey, ...]  # jobs with a param Snakemake cannot record


@contextlib.contextmanager
def _workflow(workdir: Path, configfiles: list[Path], resources: dict | None) -> Iterator:
    settings = ResourceSettings(cores=1, **(resources or {}))
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=settings,
            config_settings=ConfigSettings(configfiles=[Path(p).absolute() for p in configfiles]),
            snakefile=workdir / "Snakefile", workdir=workdir)
        workflow_api.dag(DAGSettings())  # default target
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=False, ignore_incomplete=False, lock_warn_only=True,
                              nolock=True)
        workflow._build_dag()
        yield workflow


def build(workdir: Path, configfiles: list[Path], resources: dict | None = None) -> Dag:
    """The DAG of the default target under ``configfiles`` in ``workdir`` (a completed run)."""
    workdir = Path(workdir).resolve()
    with _workflow(workdir, configfiles, resources) as workflow:
        dag, persistence = workflow.dag, workflow.persistence

        def key(job) -> JobKey:
            return job.rule.name, tuple(map(str, job.output))

        jobs, unrepresentable = {}, []
        for job in dag.jobs:
            values = list(job.non_derived_params)
            recorded = persistence._params(job)
            if len(recorded) != len(values) or UNREPRESENTABLE in recorded:
                unrepresentable.append(key(job))
            script = job.rule.script
            jobs[key(job)] = Job(
                rule=job.rule.name,
                snakefile=Path(str(job.rule.snakefile)).resolve().relative_to(workdir).as_posix(),
                script=None if script is None else f"scripts/{Path(script).name}",
                params=tuple(recorded),
                inputs=frozenset(map(str, job.input)),
                outputs_present=all((workdir / str(f)).exists() for f in job.output),
                dependencies=frozenset(key(d) for d in dag.dependencies[job]))
        return Dag(jobs=jobs, planned=frozenset(key(j) for j in dag.needrun_jobs()),
                   unrepresentable=tuple(unrepresentable))


def predicted(base: Dag, edited: Dag) -> frozenset[JobKey]:
    """The model's re-run set: jobs whose params, inputs or outputs differ from the completed
    run's, and everything downstream of them."""
    changed = {k for k, job in edited.jobs.items()
               if not job.outputs_present or k not in base.jobs
               or job.params != base.jobs[k].params or job.inputs != base.jobs[k].inputs}
    dependants: dict[JobKey, set[JobKey]] = {}
    for k, job in edited.jobs.items():
        for dependency in job.dependencies:
            dependants.setdefault(dependency, set()).add(k)
    pending, closure = list(changed), set(changed)
    while pending:
        for child in dependants.get(pending.pop(), ()):
            if child not in closure:
                closure.add(child)
                pending.append(child)
    return frozenset(closure)
