"""Rule teacher_index: gather a teacher cache's shards into one index; tabulate throughput."""

from vldistill.stages.teacher import gather_teacher_index
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    summary = gather_teacher_index(
        list(smk.input.shards),
        smk.output.index,
        list(smk.input.stats),
        list(smk.input.benchmarks),
        smk.output.throughput,
    )
    log.info("indexed %d items from %d shards", summary["n"], len(smk.input.shards))
