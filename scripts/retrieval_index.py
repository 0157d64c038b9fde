"""Rule retrieval_index: the gallery's Fast image embeddings in a faiss index."""

from pathlib import Path

from vldistill.io import write_json
from vldistill.stages.retrieval import build_gallery_index
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    info = build_gallery_index(
        root=Path("data") / smk.wildcards.dataset,
        fast_path=smk.input.fast,
        split=smk.params.split,
        factory=smk.params.index["factory"],
        nprobe=smk.params.index["nprobe"],
        out_path=smk.output.index,
    )
    # the split too, so a search knows which images the index rows are
    write_json({**info, "split": smk.params.split}, smk.output.info)
