"""Rule retrieval_slow: train the Slow captioner (see stages/retrieval). The rule's params (the
retrieval.slow settings, student, compute) reach the stage by name."""

from pathlib import Path

from vldistill.stages.retrieval import train_slow
from vldistill.train.distributed import run_training_rule
from vldistill.workflow import rule_settings

smk = snakemake  # noqa: F821 (injected by Snakemake)

run_training_rule(
    smk,
    train_slow,
    **rule_settings(smk),
    root=Path("data") / smk.wildcards.dataset,
    start=smk.input.get("start"),
    seed=int(smk.wildcards.seed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
)
