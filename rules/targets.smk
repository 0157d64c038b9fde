# Named targets, one per artifact folder, for the DVC stages in dvc.yaml (each stage asks
# Snakemake for its folder; Snakemake decides which jobs that needs).


rule data_all:
    """data/<dataset>/: manifests, images, their pixel files and the teachers' text corpus."""
    input:
        expand(manifests(), dataset=DATASET),
        f"data/{DATASET}/{MEDIA}",
        f"data/{DATASET}/summary.json",
        f"data/{DATASET}/texts.parquet",
        # the pixel files of the splits the students read
        expand(pixel_files(SPLITS), dataset=DATASET),


rule features_all:
    """features/<dataset>/: both teachers' caches."""
    input:
        [dataset_path(teacher_index(modality)) for modality in ("vision", "text")],


rule models_all:
    """models/<dataset>/: the students, every fine-tuned model and every retrieval model."""
    input:
        expand(student_path("pretrained", "{sseed}"), dataset=DATASET, sseed=STUDENT_SEEDS),
        expand(student_path("{variant}", "{sseed}"), dataset=DATASET, sseed=STUDENT_SEEDS,
               variant=sorted({AGNOSTIC_START[m] for m in FINETUNE["methods"]})),
        finetune_metrics(),
        text_only_metrics(),
        expand("models/{dataset}/retrieval/seed-{seed}/{model}.safetensors", dataset=DATASET,
               seed=RETRIEVAL_SEEDS, model=[*FAST_MODELS, "slow"]) if RETRIEVAL else [],


rule indexes_all:
    """indexes/<dataset>/: the faiss index of each Fast model."""
    input:
        expand("indexes/{dataset}/seed-{seed}/{model}.faiss", dataset=DATASET,
               seed=RETRIEVAL_SEEDS, model=FAST_MODELS) if RETRIEVAL else [],
