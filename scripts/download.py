"""Rule download: fetch one public file, resuming, retrying and verifying its sha256."""

from vldistill.data.download import fetch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    log.info("downloading %s", smk.params.url)
    fetch(smk.params.url, smk.output[0], smk.params.sha256)
