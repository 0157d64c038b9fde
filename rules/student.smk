# Stage 3: the student. VL pre-training from scratch, then the task-agnostic students
# (distill/agnostic.py): one per variant, all at the MAD stage's budget. Each student seed
# (pretrain.seeds) is its own chain, so the variance the task-agnostic stages add is measured.
# With pretrain.reuse both come from another run instead (student_import): trained once,
# fine-tuned on many datasets.


wildcard_constraints:
    sseed=r"\d+",
    variant="|".join(AGNOSTIC_VARIANTS),


if STUDENT_REUSE:

    localrules:
        student_import,

    rule student_import:
        """Another run's student (pre-trained or task-agnostic), with its provenance recorded."""
        input:
            model=f"{STUDENT_REUSE}/seed-{{sseed}}/{{name}}.safetensors",
            metrics=f"{STUDENT_REUSE}/seed-{{sseed}}/{{name}}.json",
        output:
            model="models/{dataset}/student/seed-{sseed}/{name}.safetensors",
            metrics="models/{dataset}/student/seed-{sseed}/{name}.json",
        wildcard_constraints:
            name="pretrained|" + "|".join(f"agnostic-{v}" for v in AGNOSTIC_VARIANTS),
        params:
            student=config["student"],
        log:
            "logs/{dataset}/student/seed-{sseed}/import-{name}.log",
        benchmark:
            "benchmarks/runs/{dataset}/student/seed-{sseed}/import-{name}.tsv"
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/student_import.py"

else:

    rule student_pretrain:
        """Pre-train the cross-modal student: ITC, ITM on checked-false hard negatives, captioning."""
        input:
            manifests(tables=["images", "captions"], splits=["train", "val"]),
            pixels=pixel_files(["train", "val"]),
            # pretrained unimodal towers to start from (pretrain.init), if any
            **{f"init_{tower}": path for tower, path in config["pretrain"]["init"].items()
               if path},
        output:
            model="models/{dataset}/student/seed-{sseed}/pretrained.safetensors",
            metrics="models/{dataset}/student/seed-{sseed}/pretrained.json",
        params:
            compute=config["compute"],  # device and precision (train/compute.py)
            student=config["student"],
            training=config["pretrain"]["training"],
            objective=config["pretrain"]["objective"],
            validation=config["pretrain"]["validation"],
            # only when set: runs from scratch keep their params, so nothing re-runs for them
            **({"init": config["pretrain"]["init"]} if any(config["pretrain"]["init"].values())
               else {}),
        threads: 2
        # on the critical path to every method: schedule first
        priority: 10
        log:
            "logs/{dataset}/student/seed-{sseed}/pretrain.log",
        benchmark:
            "benchmarks/runs/{dataset}/student/seed-{sseed}/pretrain.tsv"
        resources:
            gpu=TRAINING_GPUS,
            mem_mb=training_mem,
            runtime=240,
        script:
            "../scripts/student_pretrain.py"


    rule student_task_agnostic:
        """One task-agnostic student: the pre-training objective for the MAD stage's steps, with
        (mad, mad-ts) or without (plain) distillation of the teachers' cached tokens."""
        input:
            manifests(tables=["images", "captions"], splits=["train"]),
            unpack(agnostic_inputs),
        output:
            model="models/{dataset}/student/seed-{sseed}/agnostic-{variant}.safetensors",
            metrics="models/{dataset}/student/seed-{sseed}/agnostic-{variant}.json",
        params:
            compute=config["compute"],  # device and precision (train/compute.py)
            training=config["mad"]["training"],
            distill=lambda wc: config["mad"]["distill"] if wc.variant != "plain" else {},
            objective=config["pretrain"]["objective"],
        threads: 2
        # on the critical path to every method: schedule before fine-tuning
        priority: 10
        log:
            "logs/{dataset}/student/seed-{sseed}/agnostic-{variant}.log",
        benchmark:
            "benchmarks/runs/{dataset}/student/seed-{sseed}/agnostic-{variant}.tsv"
        resources:
            gpu=TRAINING_GPUS,
            mem_mb=training_mem,
            runtime=240,
        script:
            "../scripts/student_task_agnostic.py"
