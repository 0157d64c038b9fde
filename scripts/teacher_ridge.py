"""Rule retrieval_teacher_ridge: retrieval by a ridge map between the cached teacher
embeddings, on the Fast and Slow models' gallery and queries (see stages/shortcuts)."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.shortcuts import teacher_ridge
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    result = teacher_ridge(root=Path("data") / smk.wildcards.dataset,
                           vision_index=smk.input.vision, text_index=smk.input.text,
                           teachers=smk.params.teachers, device=smk.params.device,
                           split=smk.params.split,
                           captions_per_image=smk.params.captions_per_image,
                           max_queries=smk.params.max_queries)
    result["seed"] = int(smk.wildcards.seed)  # the report aggregates over seeds
    log.info("%s", result)
    write_json(result, smk.output[0])
