# vldistill: one DAG from data to the results table.
# Run: snakemake --cores all            (the default target below)
# Stages live in rules/*.smk, one file per stage; logic lives in src/vldistill.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/teacher.smk"
include: "rules/student.smk"
include: "rules/finetune.smk"
include: "rules/report.smk"
include: "rules/retrieval.smk"


# Until the results table exists, the default target is the fine-tuning report (which needs the
# data, both teacher caches, the student stages and every fine-tuning job) plus the caches.
rule all:
    default_target: True
    input:
        f"results/{DATASET}/finetune.md",
        retrieval_outputs(),
        expand(
            "features/{dataset}/{modality}-{teacher}/index.parquet",
            zip,
            dataset=[DATASET] * 2,
            modality=["vision", "text"],
            teacher=[teacher_name("vision"), teacher_name("text")],
        ),
