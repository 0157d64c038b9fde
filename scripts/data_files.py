"""Rule data_files: a real dataset from its official-format files (see src/vldistill/data)."""

from pathlib import Path

from vldistill.stages.data import check_examples, make_from_sources
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output.images).parent
    summary = make_from_sources(smk.params.sources, smk.params.image_roots, smk.params.seed,
                                root, smk.output.summary, needs=smk.params.needs)
    log.info("read %s: %s", summary["sources"], summary["counts"])
    report = check_examples(root, smk.params.skip_bad_examples, smk.output.validation)
    log.info("checked %s; skipped %s", report["checked"], report["reasons"] or "none")
