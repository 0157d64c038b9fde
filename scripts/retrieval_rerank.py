"""Rule retrieval_rerank: Fast top-K re-scored by the Slow model (see stages/retrieval)."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.retrieval import evaluate_rerank
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    result = evaluate_rerank(
        root=Path("data") / smk.wildcards.dataset,
        fast_path=smk.input.fast,
        index_path=smk.input.index,
        slow_path=smk.input.slow,
        split=smk.params.split,
        captions_per_image=smk.params.captions_per_image,
        max_queries=smk.params.max_queries,
        k=int(smk.wildcards.k),
        beta=smk.params.beta,
        ranks_path=smk.output.ranks,
        compute=smk.params.compute,
    )
    result["seed"] = int(smk.wildcards.seed)  # the report aggregates over seeds
    log.info("%s", result)
    write_json(result, smk.output[0])
