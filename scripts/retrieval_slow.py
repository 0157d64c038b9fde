"""Rule retrieval_slow: train the Slow captioner (see stages/retrieval)."""

from pathlib import Path

from vldistill.stages.retrieval import train_slow
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
slow = smk.params.slow

with rule_logging(smk.log[0], smk.threads):
    train_slow(
        root=Path("data") / smk.wildcards.dataset,
        init=slow.get("init", "mad"),
        start=smk.input.get("start"),
        student=smk.params.student,
        progressive=slow.get("progressive", True),
        directions=slow.get("directions", ["forward", "backward"]),
        training=slow["training"],
        seed=int(smk.wildcards.seed),
        out_path=smk.output.model,
        metrics_path=smk.output.metrics,
    )
