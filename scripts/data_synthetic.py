"""Rule data_synthetic: generate the synthetic scenes benchmark (see src/vldistill/data)."""

from pathlib import Path

from vldistill.stages.data import make_synthetic
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output.images).parent
    summary = make_synthetic(smk.params.synthetic, smk.params.seed, root, smk.output.summary)
    log.info("generated %s", summary.get("counts", summary))
