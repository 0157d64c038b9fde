# Stage 4: fine-tune on each task x data regime x method; evaluate on source and shifted test.

FINETUNE = config["finetune"]


wildcard_constraints:
    task="|".join(TASKS[1:]),
    regime=r"full|lowshot-[0-9.]+",
    method="|".join(METHODS),
    seed=r"\d+",


def finetune_inputs(wildcards):
    # every method starts from the task-agnostic student of its own variant (distill/agnostic.py)
    inputs = {
        "manifests": manifests(
            tables=["images", wildcards.task], splits=["train", "val", "test", "test_shifted"]
        ),
        "start": student_path(AGNOSTIC_START[wildcards.method], wildcards.sseed),
    }
    if wildcards.method != "baseline":
        inputs["vision"] = teacher_index("vision")
        inputs["text"] = teacher_index("text")
    return inputs


def finetune_training(wildcards):
    # Only this task's settings reach its jobs: a per-task edit re-runs that task alone.
    return {**FINETUNE["training"], **FINETUNE.get("per_task", {}).get(wildcards.task, {})}


def finetune_metrics(dataset=DATASET):
    return expand(
        "models/{dataset}/{task}/{regime}/{method}/student-{sseed}/seed-{seed}/metrics.json",
        dataset=dataset,
        sseed=STUDENT_SEEDS,
        task=FINETUNE["tasks"],
        regime=FINETUNE["regimes"],
        method=FINETUNE["methods"],
        seed=FINETUNE["seeds"],
    )


def finetune_item_scores(dataset=DATASET):
    """The per-item scores beside each of finetune_metrics(), in the same order."""
    return [path.removesuffix("metrics.json") + "item_scores.parquet"
            for path in finetune_metrics(dataset)]


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
        training=finetune_training,
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
        mem_mb=6000,
        runtime=240,
    script:
        "../scripts/finetune.py"
