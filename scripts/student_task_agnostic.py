"""Rule student_task_agnostic: one task-agnostic student (see stages/student, distill/agnostic)."""

import sys
from pathlib import Path

from vldistill.stages.student import agnostic_student
from vldistill.train.distributed import processes, relaunch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
nproc = processes(smk.resources)  # `gpu` or `processes` resource

with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
    # more than one process: torchrun re-runs this script once per worker
    if not relaunch(sys.argv[0], nproc):
        agnostic_student(
            root=Path("data") / smk.wildcards.dataset,
            pretrained=smk.input.pretrained,
            variant=smk.wildcards.variant,
            vision_index=smk.input.get("vision"),
            text_index=smk.input.get("text"),
            training=smk.params.training,
            distill=smk.params.distill,
            objective=smk.params.objective,
            seed=int(smk.wildcards.sseed),
            out_path=smk.output.model,
            metrics_path=smk.output.metrics,
            compute=smk.params.compute,
        )
