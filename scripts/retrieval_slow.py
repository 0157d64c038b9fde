"""Rule retrieval_slow: train the Slow captioner (see stages/retrieval)."""

import sys
from pathlib import Path

from vldistill.stages.retrieval import train_slow
from vldistill.train.distributed import processes, relaunch
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
nproc = processes(smk.resources)  # `gpu` or `processes` resource
slow = smk.params.slow

with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
    # more than one process: torchrun re-runs this script once per worker
    if not relaunch(sys.argv[0], nproc):
        train_slow(
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
