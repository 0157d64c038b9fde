"""Rule retrieval_report: gather every retrieval result of every seed (see results/retrieval)."""

from vldistill.results.retrieval import write_report
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    text = write_report(list(smk.input), smk.wildcards.dataset, smk.params.split,
                        csv_path=smk.output.table, summary_path=smk.output.summary,
                        markdown_path=smk.output.markdown)
    log.info("\n%s", text)
