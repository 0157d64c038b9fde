"""Rule student_pretrain: VL pre-training of the student (see stages/student)."""

from pathlib import Path

from vldistill.stages.student import pretrain_student
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    pretrain_student(
        root=Path(smk.input.images).parent,
        student=smk.params.student,
        training=smk.params.training,
        objective=smk.params.objective,
        seed=smk.params.seed,
        out_path=smk.output.model,
        metrics_path=smk.output.metrics,
    )
