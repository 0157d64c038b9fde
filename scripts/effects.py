"""Rule effects: paired differences with bootstrap intervals (see results/effects)."""

from vldistill.results.effects import write_effects
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    effects = write_effects(
        finetune_runs=zip(smk.input.metrics, smk.input.item_scores, strict=True),
        retrieval_runs=zip(smk.input.results, smk.input.ranks, strict=True),
        dataset=smk.params.dataset,
        retrieval_split=smk.params.split,
        config=smk.params.effects,
        csv_path=smk.output.csv,
        markdown_path=smk.output.markdown,
    )
    log.info("%d effects, %d of them with an interval that excludes 0", len(effects),
             int(effects["excludes_zero"].sum()))
