"""Rule finetune_report: gather every fine-tuning job's metrics (see results/finetune)."""

from vldistill.results.finetune import write_report
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    text = write_report(list(smk.input), smk.wildcards.dataset, csv_path=smk.output.csv,
                        summary_path=smk.output.summary, markdown_path=smk.output.markdown)
    log.info("\n%s", text)
