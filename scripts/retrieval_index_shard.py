"""Rule retrieval_index_shard: one shard of a sharded gallery index (see stages/index)."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.index import build_index_shard
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    info = build_index_shard(root=Path("data") / smk.wildcards.dataset,
                             fast_path=smk.input.fast, split=smk.params.split,
                             template_path=smk.input.template, shard=int(smk.wildcards.shard),
                             shards=int(smk.wildcards.shards), out_path=smk.output.index,
                             compute=smk.params.compute)
    write_json(info, smk.output.info)
