"""Rule extract: unpack a verified zip or tar into a directory, all or nothing."""

from vldistill.data.download import extract
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    extract(smk.input[0], smk.output[0])
