"""Rule retrieval_slow: train the Slow captioner (see stages/retrieval)."""

from pathlib import Path

from vldistill.stages.retrieval import train_slow
from vldistill.train.distributed import run_training_rule

smk = snakemake  # noqa: F821 (injected by Snakemake)
slow = smk.params.slow

run_training_rule(
    smk,
    train_slow,
    root=Path("data") / smk.wildcards.dataset,
    init=slow["init"],
    start=smk.input.get("start"),
    student=smk.params.student,
    progressive=slow["progressive"],
    directions=slow["directions"],
    training=slow["training"],
    seed=int(smk.wildcards.seed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
    compute=smk.params.compute,
)
