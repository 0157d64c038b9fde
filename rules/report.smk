# Stage 5: results. Every job's metrics gathered into long tables with n and the reference
# (chance or majority baseline) beside each number, plus a pivoted Markdown view for humans.


rule finetune_report:
    """Every fine-tuning job's metrics: long CSV and a per-task Markdown table over seeds."""
    input:
        lambda wc: finetune_metrics(wc.dataset),
    output:
        csv="results/{dataset}/finetune.csv",
        summary="results/{dataset}/finetune_summary.csv",
        markdown="results/{dataset}/finetune.md",
    log:
        "logs/{dataset}/report/finetune.log",
    benchmark:
        "benchmarks/runs/{dataset}/report/finetune.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/finetune_report.py"
