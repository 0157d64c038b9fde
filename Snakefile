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


# Until the results table exists, the default target is every fine-tuning job's metrics (which
# needs the data, both teacher caches and the student stages) plus the caches themselves.
rule all:
    default_target: True
    input:
        finetune_metrics(),
        expand(
            "features/{dataset}/{modality}-{teacher}/index.parquet",
            zip,
            dataset=[DATASET] * 2,
            modality=["vision", "text"],
            teacher=[teacher_name("vision"), teacher_name("text")],
        ),
