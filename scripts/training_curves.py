"""Rule training_curves: every training job's curves in one figure (see results/curves)."""

from vldistill.results.curves import plot_training_curves
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    plot_training_curves(list(smk.input), smk.output[0])
    log.info("training curves of %d jobs: %s", len(smk.input), smk.output[0])
