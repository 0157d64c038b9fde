"""Rule finetune: one task x regime x method x seed, trained and evaluated (see stages/finetune)."""

from pathlib import Path

from vldistill.stages.finetune import finetune
from vldistill.train.distributed import run_training_rule

smk = snakemake  # noqa: F821 (injected by Snakemake)
wc = smk.wildcards

run_training_rule(
    smk,
    finetune,
    task=wc.task,
    regime=wc.regime,
    method=wc.method,
    root=Path("data") / wc.dataset,
    start=smk.input.start,
    vision_index=smk.input.get("vision"),
    text_index=smk.input.get("text"),
    training=smk.params.training,
    mad=smk.params.distill,
    seed=int(wc.seed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
    compute=smk.params.compute,
    item_scores_path=smk.output.item_scores,
)
