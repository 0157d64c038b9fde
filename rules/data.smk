# Stage 1: the dataset. Every source ends in the same manifests (src/vldistill/data/manifest.py).


rule data_synthetic:
    """Generate the seeded synthetic scenes benchmark (images, captions, VQA, VE, VCR), then
    check every example like any other source's."""
    output:
        manifests=manifests(),
        images=directory("data/{dataset}/images"),
        summary="data/{dataset}/summary.json",
        validation="data/{dataset}/validation.json",
    params:
        synthetic=config.get("synthetic"),
        seed=config["seed"],
        skip_bad_examples=config["dataset"]["skip_bad_examples"],
    log:
        "logs/{dataset}/data_synthetic.log",
    benchmark:
        "benchmarks/runs/{dataset}/data_synthetic.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/data_synthetic.py"


rule text_corpus:
    """Collect the distinct texts the text teacher encodes (features.splits), keyed by id."""
    input:
        manifests(tables=TASKS, splits=FEATURE_SPLITS),
    output:
        "data/{dataset}/texts.parquet",
    params:
        splits=FEATURE_SPLITS,
    log:
        "logs/{dataset}/text_corpus.log",
    benchmark:
        "benchmarks/runs/{dataset}/text_corpus.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/text_corpus.py"
