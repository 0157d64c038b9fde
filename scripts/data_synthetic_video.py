"""Rule data_synthetic_video: the synthetic video scenes (see src/vldistill/data)."""

from pathlib import Path

from vldistill.stages.data import check_examples, make_synthetic_video
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output.videos).parent
    summary = make_synthetic_video(smk.params.synthetic_video, smk.params.seed, root,
                                   smk.output.summary)
    log.info("generated %s", summary["counts"])
    report = check_examples(root, smk.params.skip_bad_examples, smk.output.validation)
    log.info("checked %s; skipped %s", report["checked"], report["reasons"] or "none")
