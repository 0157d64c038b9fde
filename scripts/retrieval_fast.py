"""Rule retrieval_fast: train a Fast dual encoder, distilled from Slow or not (stages/retrieval)."""

from pathlib import Path

from vldistill.stages.retrieval import train_fast
from vldistill.train.distributed import run_training_rule

smk = snakemake  # noqa: F821 (injected by Snakemake)
fast = smk.params.fast

run_training_rule(
    smk,
    train_fast,
    root=Path("data") / smk.wildcards.dataset,
    init=fast["init"],
    start=smk.input.get("start"),
    student=smk.params.student,
    embed_dim=fast["embed_dim"],
    temperature=fast["temperature"],
    training=fast["training"],
    seed=int(smk.wildcards.seed),
    distill=smk.params.distill,
    slow_path=smk.input.get("slow"),
    hard_negatives=fast["hard_negatives"],
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
    compute=smk.params.compute,
)
