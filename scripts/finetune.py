"""Rule finetune: one task x regime x method x seed, trained and evaluated (see stages/finetune).
The rule's params (training, distill, compute) reach the stage by name."""

from pathlib import Path

from vldistill.stages.finetune import finetune
from vldistill.train.distributed import run_training_rule
from vldistill.workflow import rule_settings

smk = snakemake  # noqa: F821 (injected by Snakemake)
wc = smk.wildcards

run_training_rule(
    smk,
    finetune,
    **rule_settings(smk),
    task=wc.task,
    regime=wc.regime,
    method=wc.method,
    root=Path("data") / wc.dataset,
    start=smk.input.start,
    vision_index=smk.input.get("vision"),
    text_index=smk.input.get("text"),
    seed=int(wc.seed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
    item_scores_path=smk.output.item_scores,
)
