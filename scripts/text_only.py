"""Rule text_only: a task's text-only reference model for one regime and seed (see
stages/shortcuts)."""

from pathlib import Path

from vldistill.stages.shortcuts import text_only
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
wc = smk.wildcards

with rule_logging(smk.log[0], smk.threads):
    text_only(task=wc.task, regime=wc.regime, root=Path("data") / wc.dataset, seed=int(wc.seed),
              metrics_path=smk.output.metrics, eval_splits=tuple(smk.params.eval_splits))
