"""Rules retrieval_eval_fast, _slow and _single_frame: recall, median rank, latency per query."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.retrieval import evaluate_fast, evaluate_single_frame, evaluate_slow
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
common = {"root": Path("data") / smk.wildcards.dataset, "split": smk.params.split,
          "captions_per_image": smk.params.captions_per_image,
          "max_queries": smk.params.max_queries, "compute": smk.params.compute}

with rule_logging(smk.log[0], smk.threads) as log:
    if smk.rule == "retrieval_eval_slow":
        result = evaluate_slow(slow_path=smk.input.slow, ranks_path=smk.output.ranks, **common)
    elif smk.rule == "retrieval_eval_single_frame":
        result = evaluate_single_frame(model_path=smk.input.model, kind=smk.wildcards.kind,
                                       **common)
    else:
        result = evaluate_fast(fast_path=smk.input.fast, index_path=smk.input.index,
                               ranks_path=smk.output.ranks, **common)
    result["seed"] = int(smk.wildcards.seed)  # the report aggregates over seeds
    log.info("%s", result)
    write_json(result, smk.output[0])
