# Stage 6: Fast and Slow retrieval. The Slow captioner and the Fast dual encoders train on the
# train split's captions; the gallery is the `retrieval.split` images, queried by their captions.
# Every model, index and result lives under seed-{seed}/: one independent run per retrieval seed
# (`retrieval.seeds`), all answering the same queries; the report aggregates over seeds. With
# retrieval.reuse the Slow and Fast models come from another run (retrieval_import) and only
# the index, evaluations and re-ranking are this run's.

# The section is optional: absent, no job of these rules exists. Params that read it are
# functions, evaluated only for the jobs that exist.


wildcard_constraints:
    fast_model="|".join(FAST_MODELS),
    k=r"\d+",
    seed=r"\d+",


if RETRIEVAL_REUSE:

    localrules:
        retrieval_import,

    rule retrieval_import:
        """Another run's Slow or Fast model, with its provenance recorded."""
        input:
            model=f"{RETRIEVAL_REUSE}/seed-{{seed}}/{{name}}.safetensors",
            metrics=f"{RETRIEVAL_REUSE}/seed-{{seed}}/{{name}}.json",
        output:
            model="models/{dataset}/retrieval/seed-{seed}/{name}.safetensors",
            metrics="models/{dataset}/retrieval/seed-{seed}/{name}.json",
        wildcard_constraints:
            name="|".join(["slow", *FAST_MODELS]),
        params:
            student=config["student"],
        log:
            "logs/{dataset}/retrieval/seed-{seed}/import-{name}.log",
        benchmark:
            "benchmarks/runs/{dataset}/retrieval/seed-{seed}/import-{name}.tsv"
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/retrieval_import.py"

else:

    rule retrieval_slow:
        """Train the Slow model: the student's captioning decoder, bidirectional captioning loss."""
        input:
            unpack(lambda wc: {**caption_inputs("train"), **start_input("slow")}),
        output:
            model="models/{dataset}/retrieval/seed-{seed}/slow.safetensors",
            metrics="models/{dataset}/retrieval/seed-{seed}/slow.json",
        params:
            compute=config["compute"],  # device and precision (train/compute.py)
            student=config["student"],
            # retrieval.slow's keys, one param each: they are train_slow's arguments
            **(RETRIEVAL["slow"] if RETRIEVAL else {}),
        threads: 2
        log:
            "logs/{dataset}/retrieval/seed-{seed}/slow.log",
        benchmark:
            "benchmarks/runs/{dataset}/retrieval/seed-{seed}/slow.tsv"
        resources:
            gpu=TRAINING_GPUS,
            mem_mb=training_mem,
            runtime=240,
        script:
            "../scripts/retrieval_slow.py"


    rule retrieval_fast:
        """Train a Fast dual encoder: InfoNCE, plus KL from the Slow model for fast_distilled."""
        input:
            unpack(lambda wc: {
                **caption_inputs("train"),
                **start_input("fast"),
                **({"slow": "models/{dataset}/retrieval/seed-{seed}/slow.safetensors"}
                   if wc.fast_model == "fast_distilled" else {}),
            }),
        output:
            model="models/{dataset}/retrieval/seed-{seed}/{fast_model}.safetensors",
            metrics="models/{dataset}/retrieval/seed-{seed}/{fast_model}.json",
        params:
            compute=config["compute"],  # device and precision (train/compute.py)
            distill=lambda wc: RETRIEVAL["distill"] if wc.fast_model == "fast_distilled" else None,
            student=config["student"],
            # retrieval.fast's keys, one param each: they are train_fast's arguments
            **(RETRIEVAL["fast"] if RETRIEVAL else {}),
        threads: 2
        log:
            "logs/{dataset}/retrieval/seed-{seed}/{fast_model}.log",
        benchmark:
            "benchmarks/runs/{dataset}/retrieval/seed-{seed}/{fast_model}.tsv"
        resources:
            gpu=TRAINING_GPUS,
            mem_mb=training_mem,
            runtime=240,
        script:
            "../scripts/retrieval_fast.py"


rule retrieval_index:
    """Embed the gallery with a Fast image tower into a faiss index (retrieval.index.factory),
    or, with retrieval.index.shards > 1, merge the shard indexes in shard order: the same index
    one job would build."""
    input:
        unpack(index_inputs),
    output:
        index="indexes/{dataset}/seed-{seed}/{fast_model}.faiss",
        info="indexes/{dataset}/seed-{seed}/{fast_model}.json",
    params:
        index=lambda wc: RETRIEVAL["index"],
        split=GALLERY_SPLIT,
        compute=config["compute"],  # the gallery is embedded on the device
    log:
        "logs/{dataset}/retrieval/seed-{seed}/index-{fast_model}.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/index-{fast_model}.tsv"
    resources:
        gpu=0 if INDEX_SHARDS > 1 else TRAINING_GPUS,  # merging shard indexes needs none
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/retrieval_index.py"


# The parts of a sharded index (retrieval.index.shards > 1); no job asks for them otherwise.
rule retrieval_index_template:
    """The empty index every shard starts from, trained on the gallery's first vectors when the
    factory needs training (IVF, PQ): one quantizer, so the shards merge."""
    input:
        unpack(lambda wc: caption_inputs(GALLERY_SPLIT)),
        fast="models/{dataset}/retrieval/seed-{seed}/{fast_model}.safetensors",
    output:
        index=f"{INDEX_PARTS}/template.faiss",
        info=f"{INDEX_PARTS}/template.json",
    params:
        factory=lambda wc: RETRIEVAL["index"]["factory"],
        split=GALLERY_SPLIT,
        compute=config["compute"],
    log:
        "logs/{dataset}/retrieval/seed-{seed}/index-{fast_model}-template.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/index-{fast_model}-template.tsv"
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/retrieval_index_template.py"


rule retrieval_index_shard:
    """One contiguous slice of the gallery, embedded and added to the template."""
    input:
        unpack(lambda wc: caption_inputs(GALLERY_SPLIT)),
        fast="models/{dataset}/retrieval/seed-{seed}/{fast_model}.safetensors",
        template=f"{INDEX_PARTS}/template.faiss",
    output:
        index=f"{INDEX_PARTS}/{{shard}}-of-{{shards}}.faiss",
        info=f"{INDEX_PARTS}/{{shard}}-of-{{shards}}.json",
    params:
        split=GALLERY_SPLIT,
        compute=config["compute"],
    log:
        "logs/{dataset}/retrieval/seed-{seed}/index-{fast_model}-{shard}-of-{shards}.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/index-{fast_model}-{shard}-of-{shards}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/retrieval_index_shard.py"


rule retrieval_eval_fast:
    """Fast retrieval through the index: R@K both directions, median rank, latency per query."""
    input:
        unpack(lambda wc: caption_inputs(GALLERY_SPLIT)),
        fast="models/{dataset}/retrieval/seed-{seed}/{fast_model}.safetensors",
        index="indexes/{dataset}/seed-{seed}/{fast_model}.faiss",
    output:
        "results/{dataset}/retrieval/seed-{seed}/{fast_model}.json",
        ranks="results/{dataset}/retrieval/seed-{seed}/{fast_model}.ranks.parquet",
    params:
        **EVAL_PARAMS,
    log:
        "logs/{dataset}/retrieval/seed-{seed}/eval-{fast_model}.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/eval-{fast_model}.tsv"
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/retrieval_eval.py"


rule retrieval_eval_slow:
    """Slow-only retrieval: every (gallery image, query) pair scored; the re-ranking reference."""
    input:
        unpack(lambda wc: caption_inputs(GALLERY_SPLIT)),
        slow="models/{dataset}/retrieval/seed-{seed}/slow.safetensors",
    output:
        "results/{dataset}/retrieval/seed-{seed}/slow.json",
        ranks="results/{dataset}/retrieval/seed-{seed}/slow.ranks.parquet",
    params:
        **EVAL_PARAMS,
    threads: 2
    log:
        "logs/{dataset}/retrieval/seed-{seed}/eval-slow.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/eval-slow.tsv"
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/retrieval_eval.py"


rule retrieval_eval_single_frame:
    """A video model shown each gallery clip's middle frame only: what time adds, same weights."""
    input:
        unpack(lambda wc: caption_inputs(GALLERY_SPLIT)),
        model="models/{dataset}/retrieval/seed-{seed}/{kind}.safetensors",
    output:
        "results/{dataset}/retrieval/seed-{seed}/{kind}_1frame.json",
    wildcard_constraints:
        kind="fast|slow",
    params:
        **EVAL_PARAMS,
    threads: 2
    log:
        "logs/{dataset}/retrieval/seed-{seed}/eval-{kind}_1frame.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/eval-{kind}_1frame.tsv"
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/retrieval_eval.py"


rule retrieval_rerank:
    """Fast top-K from the index re-scored by h_slow + beta * h_fast."""
    input:
        unpack(lambda wc: caption_inputs(GALLERY_SPLIT)),
        fast=lambda wc: f"models/{wc.dataset}/retrieval/seed-{wc.seed}/{RERANK_FAST}.safetensors",
        index=lambda wc: f"indexes/{wc.dataset}/seed-{wc.seed}/{RERANK_FAST}.faiss",
        slow="models/{dataset}/retrieval/seed-{seed}/slow.safetensors",
    output:
        "results/{dataset}/retrieval/seed-{seed}/rerank_k{k}.json",
        ranks="results/{dataset}/retrieval/seed-{seed}/rerank_k{k}.ranks.parquet",
    params:
        **EVAL_PARAMS,
        beta=lambda wc: RETRIEVAL["rerank"]["beta"],
    log:
        "logs/{dataset}/retrieval/seed-{seed}/rerank_k{k}.log",
    benchmark:
        "benchmarks/runs/{dataset}/retrieval/seed-{seed}/rerank_k{k}.tsv"
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/retrieval_rerank.py"


rule retrieval_report:
    """Every retrieval result of every seed -> results/{dataset}/retrieval.{csv,md} (mean, std)."""
    input:
        lambda wc: retrieval_results(wc.dataset),
    output:
        table="results/{dataset}/retrieval.csv",
        summary="results/{dataset}/retrieval_summary.csv",
        markdown="results/{dataset}/retrieval.md",
    params:
        split=GALLERY_SPLIT,
    log:
        "logs/{dataset}/report/retrieval.log",
    benchmark:
        "benchmarks/runs/{dataset}/report/retrieval.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/retrieval_report.py"
