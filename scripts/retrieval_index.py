"""Rule retrieval_index: the gallery's Fast image embeddings in a faiss index, built here or
merged from the shard indexes (see stages/index)."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.index import build_gallery_index, merge_index_shards
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
index = smk.params.index

with rule_logging(smk.log[0], smk.threads):
    if smk.input.get("shards"):  # the sharded build: merge
        info = merge_index_shards(shard_paths=smk.input.shards, factory=index["factory"],
                                  nprobe=index["nprobe"], out_path=smk.output.index)
    else:
        info = build_gallery_index(
            root=Path("data") / smk.wildcards.dataset,
            fast_path=smk.input.fast,
            split=smk.params.split,
            factory=index["factory"],
            nprobe=index["nprobe"],
            out_path=smk.output.index,
            compute=smk.params.compute,
        )
    # the split too, so a search knows which images the index rows are
    write_json({**info, "split": smk.params.split}, smk.output.info)
