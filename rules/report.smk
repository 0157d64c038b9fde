# Stage 5: results. Every job's metrics gathered into long tables with n and the reference
# (chance or majority baseline) beside each number, plus a pivoted Markdown view for humans.


rule finetune_report:
    """Every fine-tuning job's metrics: long CSV and a per-task Markdown table over seeds."""
    input:
        lambda wc: finetune_metrics(wc.dataset) + text_only_metrics(wc.dataset),
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


rule effects:
    """Paired differences (MAD - baseline, ablations, Fast distillation, re-ranking - Slow) on the
    same items and seeds, with bootstrap intervals: results/effects.{csv,md}."""
    input:
        metrics=finetune_metrics(),
        item_scores=finetune_item_scores(),
        results=ranked_results(".json"),
        ranks=ranked_results(".ranks.parquet"),
    output:
        csv="results/effects.csv",
        markdown="results/effects.md",
    params:
        effects=config["effects"],
        dataset=DATASET,
        split=GALLERY_SPLIT,
    log:
        "logs/report/effects.log",
    benchmark:
        "benchmarks/runs/report/effects.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/effects.py"


rule results_table:
    """The results table (long CSV, paper-style Markdown, metrics.json for DVC) and its plots."""
    input:
        summaries=table_summaries(),
        validation=f"data/{DATASET}/validation.json",
        effects=rules.effects.output.csv,
    output:
        table=report("results/table.csv", caption="../report/table.rst", category="Results"),
        timings=report("results/timings.csv", caption="../report/timings.rst",
                       category="Results"),
        markdown=report("results/table.md", caption="../report/table_md.rst",
                        category="Results"),
        metrics="results/metrics.json",
        plots=[report(f"results/plots/{name}.png", caption=f"../report/{name}.rst",
                      category="Plots") for name in PLOTS],
    params:
        # What the table was built from, stated in table.md; as a param, a config switch
        # (dataset, tasks, retrieval on/off, seeds) re-runs the table even where the gathered
        # inputs happen to exist already.
        built_from=BUILT_FROM,
    log:
        "logs/report/table.log",
    benchmark:
        "benchmarks/runs/report/table.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/results_table.py"
