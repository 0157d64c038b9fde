"""Rule finetune: one task x regime x method x seed, trained and evaluated (see stages/finetune)."""

import sys
from pathlib import Path

from vldistill.stages.finetune import finetune
from vldistill.train.distributed import processes, relaunch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
nproc = processes(smk.resources)  # `gpu` or `processes` resource
wc = smk.wildcards

with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
    # more than one process: torchrun re-runs this script once per worker
    if not relaunch(sys.argv[0], nproc):
        finetune(
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
