"""Rule text_corpus: every distinct text of every task and split, keyed by a stable id."""

from pathlib import Path

from vldistill.stages.data import make_text_corpus
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output[0]).parent
    corpus = make_text_corpus(root, smk.output[0])
    log.info("%d distinct texts", len(corpus))
