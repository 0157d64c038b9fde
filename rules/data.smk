# Stage 1: the dataset. Every source ends in the same manifests (src/vldistill/data/manifest.py).


if SOURCE == "files":

    rule data_files:
        """A real dataset: link its image folders, read each source in its official format
        (Karpathy captions json, VQA v2, SNLI-VE, VCR), write the manifests, check every example."""
        input:
            raw_inputs,
        output:
            manifests=manifests(),
            images=directory("data/{dataset}/images"),
            summary="data/{dataset}/summary.json",
            validation="data/{dataset}/validation.json",
        params:
            sources=config.get("sources"),
            image_roots=config.get("image_roots"),
            seed=config["seed"],
            skip_bad_examples=config["dataset"]["skip_bad_examples"],
            # the tables the configured stages train on: each must have train rows
            # captions feed pre-training (unless pretrain.reuse imports the students) and retrieval
            needs=[
                *(["captions"] if not STUDENT_REUSE or RETRIEVAL else []),
                *config["finetune"]["tasks"],
            ],
        log:
            "logs/{dataset}/data_files.log",
        benchmark:
            "benchmarks/runs/{dataset}/data_files.tsv"
        resources:
            mem_mb=8000,
            runtime=120,
        script:
            "../scripts/data_files.py"


if SOURCE == "synthetic_video":

    rule data_synthetic_video:
        """Generate the seeded synthetic video scenes (clips whose captions need time to be
        right, with their time-reversed hard negatives), then check every clip decodes."""
        output:
            manifests=manifests(),
            videos=directory("data/{dataset}/videos"),
            summary="data/{dataset}/summary.json",
            validation="data/{dataset}/validation.json",
        params:
            synthetic_video=config.get("synthetic_video"),
            seed=config["seed"],
            skip_bad_examples=config["dataset"]["skip_bad_examples"],
        log:
            "logs/{dataset}/data_synthetic_video.log",
        benchmark:
            "benchmarks/runs/{dataset}/data_synthetic_video.tsv"
        resources:
            mem_mb=2000,
            runtime=60,
        script:
            "../scripts/data_synthetic_video.py"


if SOURCE == "synthetic":

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


rule pixels:
    """Decode one split's images (clips) once, as the square view at the student's input size,
    into one uint8 array that every training and evaluation job reads rows from
    (src/vldistill/data/pixels.py)."""
    input:
        manifests(tables=["images"], splits=["{split}"]),
        media=MEDIA_DIR,
    output:
        pixels="data/{dataset}/pixels/{split}.npy",
        ids="data/{dataset}/pixels/{split}.json",
    wildcard_constraints:
        split="|".join(SPLITS),
    params:
        image_size=config["student"]["image_size"],
        frames=config["student"]["frames"],
    log:
        "logs/{dataset}/pixels/{split}.log",
    benchmark:
        "benchmarks/runs/{dataset}/pixels/{split}.tsv"
    resources:
        mem_mb=2000,
        # minutes: decoding runs at roughly 300-1,000 images/s per core; COCO's train split
        # (113k images) takes a few minutes, a video split longer
        runtime=120,
    script:
        "../scripts/pixels.py"


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
