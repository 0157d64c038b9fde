"""Rule student_pretrain: VL pre-training of the student (see stages/student)."""

import sys
from pathlib import Path

from vldistill.stages.student import pretrain_student
from vldistill.train.distributed import processes, relaunch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
nproc = processes(smk.resources)  # `gpu` or `processes` resource

with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
    # more than one process: torchrun re-runs this script once per worker
    if not relaunch(sys.argv[0], nproc):
        pretrain_student(
            root=Path(smk.input.images).parent,
            student=smk.params.student,
            training=smk.params.training,
            objective=smk.params.objective,
            validation=smk.params.validation,
            seed=int(smk.wildcards.sseed),
            out_path=smk.output.model,
            metrics_path=smk.output.metrics,
            compute=smk.params.compute,
        )
