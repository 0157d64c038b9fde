"""Rule student_mad: task-agnostic MAD on the caption corpus (see stages/student)."""

import sys
from pathlib import Path

from vldistill.stages.student import mad_student
from vldistill.train.distributed import processes, relaunch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
nproc = processes(smk.resources)  # `gpu` or `processes` resource

with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
    # more than one process: torchrun re-runs this script once per worker
    if not relaunch(sys.argv[0], nproc):
        mad_student(
            root=Path("data") / smk.wildcards.dataset,
            pretrained=smk.input.pretrained,
            vision_index=smk.input.vision,
            text_index=smk.input.text,
            training=smk.params.training,
            mad=smk.params.distill,
            seed=smk.params.seed,
            out_path=smk.output.model,
            metrics_path=smk.output.metrics,
        )
