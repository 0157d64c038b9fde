# Stage 2: cache the unimodal teachers' features. Scatter: one job per (modality, shard), so a
# killed shard re-runs alone (and resumes from its finished chunks); gather: one index per cache.


rule teacher_shard:
    """Encode one shard of the images (vision) or texts (text) with the teacher (fp16)."""
    input:
        unpack(teacher_items),
    output:
        shard="features/{dataset}/{modality}-{teacher}/shard-{shard}-of-{n}.safetensors",
        stats="features/{dataset}/{modality}-{teacher}/shard-{shard}-of-{n}.stats.json",
    params:
        teacher=lambda wc: config["teachers"][wc.modality],
        # shards and splits change the inputs and outputs themselves
        features={k: v for k, v in config["features"].items() if k not in ("shards", "splits")},
        # clips: one cached item per sampled frame (the students' frames); text ignores it
        frames=lambda wc: config["student"]["frames"] if wc.modality == "vision" else 1,
    threads: 2
    # on the critical path to every teacher method: schedule before the baselines
    priority: 10
    log:
        "logs/{dataset}/teacher/{modality}-{teacher}/shard-{shard}-of-{n}.log",
    benchmark:
        "benchmarks/runs/{dataset}/teacher/{modality}-{teacher}/shard-{shard}-of-{n}.tsv"
    resources:
        gpu=CACHE_GPUS,
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/teacher_shard.py"


rule teacher_index:
    """Gather the shards into one key -> (shard, row) index; tabulate throughput per shard."""
    input:
        shards=lambda wc: shard_files(
            wc, "features/{dataset}/{modality}-{teacher}/shard-{shard}-of-{n}.safetensors"
        ),
        stats=lambda wc: shard_files(
            wc, "features/{dataset}/{modality}-{teacher}/shard-{shard}-of-{n}.stats.json"
        ),
        benchmarks=lambda wc: shard_files(
            wc, "benchmarks/runs/{dataset}/teacher/{modality}-{teacher}/shard-{shard}-of-{n}.tsv"
        ),
    output:
        index="features/{dataset}/{modality}-{teacher}/index.parquet",
        throughput="features/{dataset}/{modality}-{teacher}/throughput.tsv",
    priority: 10
    log:
        "logs/{dataset}/teacher/{modality}-{teacher}/index.log",
    benchmark:
        "benchmarks/runs/{dataset}/teacher/{modality}-{teacher}/index.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/teacher_index.py"
