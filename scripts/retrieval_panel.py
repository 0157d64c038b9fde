"""Rule retrieval_panel: a ranked model's top images for a few queries (see results/panels)."""

from pathlib import Path

from vldistill.results.panels import panel_rows, plot_retrieval_panel
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.input.images).parent  # the dataset directory holding media and manifests
    rows = panel_rows(smk.input.ranks, root, smk.params.split)
    title = (f"{smk.wildcards.model}: text -> image on {root.name} "
             f"{smk.params.split} (seed {smk.params.seed}); green frame = the query's image")
    plot_retrieval_panel(rows, title, smk.output[0])
    log.info("%d queries: %s", len(rows), smk.output[0])
