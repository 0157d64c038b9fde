# Stage 3: the student. VL pre-training from scratch, then task-agnostic MAD on the captions.


def teacher_index(modality):
    return f"features/{{dataset}}/{modality}-{teacher_name(modality)}/index.parquet"


rule student_pretrain:
    """Pre-train the cross-modal student: ITM with hard negatives + bidirectional captioning."""
    input:
        manifests(tables=["images", "captions"], splits=["train"]),
        images=MEDIA_DIR,
    output:
        model="models/{dataset}/student/pretrained.safetensors",
        metrics="models/{dataset}/student/pretrained.json",
    params:
        student=config["student"],
        training=config["pretrain"]["training"],
        objective=config["pretrain"].get("objective", {}),
        seed=config["seed"],
    threads: 2
    # on the critical path to every teacher method: schedule before the baselines
    priority: 10
    log:
        "logs/{dataset}/student/pretrain.log",
    benchmark:
        "benchmarks/runs/{dataset}/student/pretrain.tsv"
    resources:
        mem_mb=6000,
        runtime=240,
    script:
        "../scripts/student_pretrain.py"


rule student_mad:
    """Distil the teachers' cached tokens into the pre-trained student (task-agnostic MAD)."""
    input:
        manifests(tables=["images", "captions"], splits=["train"]),
        pretrained="models/{dataset}/student/pretrained.safetensors",
        vision=teacher_index("vision"),
        text=teacher_index("text"),
    output:
        model="models/{dataset}/student/mad.safetensors",
        metrics="models/{dataset}/student/mad.json",
    params:
        training=config["mad"]["training"],
        distill=config["mad"].get("distill", {}),
        seed=config["seed"],
    threads: 2
    # on the critical path to every teacher method: schedule before the baselines
    priority: 10
    log:
        "logs/{dataset}/student/mad.log",
    benchmark:
        "benchmarks/runs/{dataset}/student/mad.tsv"
    resources:
        mem_mb=6000,
        runtime=240,
    script:
        "../scripts/student_mad.py"
