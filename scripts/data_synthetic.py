"""Rule data_synthetic: generate the synthetic scenes benchmark (see src/vldistill/data)."""

from pathlib import Path

from vldistill.stages.data import check_examples, make_synthetic
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output.images).parent
    summary = make_synthetic(smk.params.synthetic, smk.params.seed, root, smk.output.summary)
    log.info("generated %s", summary.get("counts", summary))
    report = check_examples(root, smk.params.skip_bad_examples, smk.output.validation)
    log.info("checked %s; skipped %s", report["checked"], report["reasons"] or "none")
