"""Rule retrieval_import: another run's Slow or Fast model made this run's (stages/imports)."""

from vldistill.stages.imports import import_model
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    import_model(source=smk.input.model, source_metrics=smk.input.metrics,
                 student=smk.params.student, setting="retrieval.reuse",
                 out_path=smk.output.model, metrics_path=smk.output.metrics)
