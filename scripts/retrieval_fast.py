"""Rule retrieval_fast: train a Fast dual encoder, distilled from Slow or not (see
stages/retrieval). The rule's params (the retrieval.fast settings, distill, student, compute)
reach the stage by name."""

from pathlib import Path

from vldistill.stages.retrieval import train_fast
from vldistill.train.distributed import run_training_rule
from vldistill.workflow import rule_settings

smk = snakemake  # noqa: F821 (injected by Snakemake)

run_training_rule(
    smk,
    train_fast,
    **rule_settings(smk),
    root=Path("data") / smk.wildcards.dataset,
    start=smk.input.get("start"),
    slow_path=smk.input.get("slow"),
    seed=int(smk.wildcards.seed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
)
