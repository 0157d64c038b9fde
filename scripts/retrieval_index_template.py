"""Rule retrieval_index_template: the empty (trained) index every shard of a sharded gallery
index starts from (retrieval.index.shards > 1; see stages/index)."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.index import build_index_template
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    info = build_index_template(root=Path("data") / smk.wildcards.dataset,
                                fast_path=smk.input.fast, split=smk.params.split,
                                factory=smk.params.factory, out_path=smk.output.index,
                                compute=smk.params.compute)
    write_json(info, smk.output.info)
