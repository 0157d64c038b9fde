"""Rule finetune: one task x regime x method x seed, trained and evaluated (see stages/finetune)."""

from pathlib import Path

from vldistill.stages.finetune import finetune
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
wc = smk.wildcards

with rule_logging(smk.log[0], smk.threads):
    finetune(
        task=wc.task,
        regime=wc.regime,
        method=wc.method,
        root=Path("data") / wc.dataset,
        pretrained=smk.input.pretrained,
        mad_student=smk.input.get("mad"),
        vision_index=smk.input.get("vision"),
        text_index=smk.input.get("text"),
        training=smk.params.training,
        mad=smk.params.distill,
        seed=int(wc.seed),
        out_path=smk.output.model,
        metrics_path=smk.output.metrics,
    )
