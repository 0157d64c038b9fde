# Stage 4: fine-tune on each task x data regime x method; evaluate on source and shifted test.


wildcard_constraints:
    task="|".join(TASKS[1:]),
    regime=r"full|lowshot-[0-9.]+",
    method="|".join(METHODS),
    seed=r"\d+",


rule finetune:
    """Fine-tune one student seed's task-agnostic student on one task under one regime with one
    method and fine-tuning seed; evaluate."""
    input:
        unpack(finetune_inputs),
    output:
        model="models/{dataset}/{task}/{regime}/{method}/student-{sseed}/seed-{seed}/model.safetensors",
        metrics="models/{dataset}/{task}/{regime}/{method}/student-{sseed}/seed-{seed}/metrics.json",
        # each test item's score, for the paired comparisons of rule effects
        item_scores="models/{dataset}/{task}/{regime}/{method}/student-{sseed}/seed-{seed}/item_scores.parquet",
    params:
        compute=config["compute"],  # device and precision (train/compute.py)
        # only this task's settings reach its jobs: a per-task edit re-runs that task alone
        training=lambda wc: {**FINETUNE["training"], **FINETUNE["per_task"].get(wc.task, {})},
        # fused comes from mad.distill: both stages distil the same targets
        distill=lambda wc: (
            {**FINETUNE["distill"], "fused": config["mad"]["distill"]["fused"]}
            if wc.method != "baseline"
            else {}
        ),
    threads: 1
    log:
        "logs/{dataset}/finetune/{task}/{regime}/{method}/student-{sseed}/seed-{seed}.log",
    benchmark:
        "benchmarks/runs/{dataset}/finetune/{task}/{regime}/{method}/student-{sseed}/seed-{seed}.tsv"
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=training_mem,
        runtime=240,
    script:
        "../scripts/finetune.py"
