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


rule training_curves:
    """Every training job's loss terms per step and held-out validation, one panel per job."""
    input:
        training_metrics(),
    output:
        report("results/plots/training_curves.png", caption="../report/training_curves.rst",
               category="Plots"),
    log:
        "logs/report/training_curves.log",
    benchmark:
        "benchmarks/runs/report/training_curves.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/training_curves.py"


rule retrieval_panel:
    """A ranked model's top images for a few fixed queries of the first retrieval seed."""
    input:
        manifests=expand(manifests(tables=["images", "captions"], splits=[GALLERY_SPLIT]),
                         dataset=DATASET) if RETRIEVAL else [],
        images=f"data/{DATASET}/{MEDIA}",
        ranks=lambda wc: f"results/{DATASET}/retrieval/seed-{RETRIEVAL_SEEDS[0]}/"
                         f"{wc.model}.ranks.parquet",
    output:
        report("results/plots/retrieval_panel_{model}.png",
               caption="../report/retrieval_panel.rst", category="Plots"),
    wildcard_constraints:
        model="|".join(RANKED_MODELS) or "(?!)",
    params:
        split=GALLERY_SPLIT,
        seed=RETRIEVAL_SEEDS[0] if RETRIEVAL else None,
    log:
        "logs/report/retrieval_panel_{model}.log",
    benchmark:
        "benchmarks/runs/report/retrieval_panel_{model}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/retrieval_panel.py"


rule results_table:
    """The results table (long CSV, paper-style Markdown, metrics.json for DVC) and its plots;
    table.md links every figure."""
    input:
        summaries=table_summaries(),
        validation=f"data/{DATASET}/validation.json",
        effects=rules.effects.output.csv,
        figures=FIGURES,  # linked from table.md
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
