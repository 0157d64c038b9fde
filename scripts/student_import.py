"""Rule student_import: another run's student made this run's (see stages/student)."""

from vldistill.stages.student import import_student
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    import_student(source=smk.input.model, source_metrics=smk.input.metrics,
                   student=smk.params.student, out_path=smk.output.model,
                   metrics_path=smk.output.metrics)
