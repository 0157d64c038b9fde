"""Rule text_corpus: the distinct texts the text teacher encodes, keyed by a stable id."""

from pathlib import Path

from vldistill.stages.data import make_text_corpus
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output[0]).parent
    corpus = make_text_corpus(root, smk.output[0], splits=smk.params.splits)
    log.info("%d distinct texts", len(corpus))
