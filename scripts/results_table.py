"""Rule results_table: the long results table, its Markdown and metrics.json, and the plots."""

from pathlib import Path

from vldistill.results import plots
from vldistill.results.table import write_table
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    table = write_table(list(smk.input.summaries), csv_path=smk.output.table,
                        timings_path=smk.output.timings, markdown_path=smk.output.markdown,
                        metrics_path=smk.output.metrics,
                        validation_paths=[smk.input.validation],
                        effects_path=smk.input.effects,
                        built_from=dict(smk.params.built_from),
                        figures=[*smk.output.plots, *smk.input.figures])
    log.info("results table: %d rows", len(table))
    for path in smk.output.plots:
        getattr(plots, f"plot_{Path(path).stem}")(table, path)
        log.info("plot: %s", path)
