"""Rule retrieval_fast: train a Fast dual encoder, distilled from Slow or not (stages/retrieval)."""

import sys
from pathlib import Path

from vldistill.stages.retrieval import train_fast
from vldistill.train.distributed import processes, relaunch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
nproc = processes(smk.resources)  # `gpu` or `processes` resource
fast = smk.params.fast

with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
    # more than one process: torchrun re-runs this script once per worker
    if not relaunch(sys.argv[0], nproc):
        train_fast(
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
