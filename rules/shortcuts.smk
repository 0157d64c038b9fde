# Reference rows beside the methods: what text alone predicts on each task (shortcut detectors,
# trained on the same regime and seed as the fine-tuning jobs, evaluated on the same splits), and
# what the teachers' own embeddings retrieve through a ridge map (no student).


rule text_only:
    """The task's text-only model (VE: hypothesis; VQA: question; VCR: each candidate alone)."""
    input:
        lambda wc: manifests(tables=[wc.task], splits=["train", "val", *REFERENCE_EVAL_SPLITS]),
    output:
        metrics="models/{dataset}/{task}/{regime}/text_only/seed-{seed}/metrics.json",
    params:
        eval_splits=REFERENCE_EVAL_SPLITS,
    threads: 1
    log:
        "logs/{dataset}/text_only/{task}/{regime}/seed-{seed}.log",
    benchmark:
        "benchmarks/runs/{dataset}/text_only/{task}/{regime}/seed-{seed}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/text_only.py"


rule retrieval_teacher_ridge:
    """Retrieval by a ridge map between cached teacher text and image embeddings (train pairs;
    direction and lambda chosen on val), on the Fast and Slow models' gallery and queries."""
    input:
        unpack(lambda wc: {
            "manifests": manifests(tables=["images", "captions"],
                                   splits=sorted({"train", "val", GALLERY_SPLIT})),
            "pixels": pixel_files([GALLERY_SPLIT]),
            "vision": teacher_index("vision"),
            "text": teacher_index("text"),
        }),
    output:
        "results/{dataset}/retrieval/seed-{seed}/teacher_ridge.json",
    params:
        **EVAL_PARAMS,
        teachers=config["teachers"],
        device=config["features"]["device"],
    threads: 2
    log:
        "logs/{dataset}/retrieval/seed-{seed}/teacher_ridge.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/teacher_ridge.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/teacher_ridge.py"
