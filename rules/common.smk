# Shared by every stage: config validation, names of things, and every stage's input
# functions and path helpers (one section per rules/<stage>.smk, in include order), so the
# stage files hold rules only.

import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vldistill.code_version import code_hash
from vldistill.config import check_config, load_schema
from vldistill.data.manifest import SPLITS, TABLES, TASKS
from vldistill.distill.methods import AGNOSTIC_START, AGNOSTIC_VARIANTS, METHODS
from vldistill.workflow import training_mem_mb

SCHEMA = "../schemas/config.schema.yaml"

# Fail at DAG time, before any job runs, naming every wrong key. Our checker runs first so the
# message is one readable list; Snakemake's validate() then fills in the schema's defaults.
try:
    check_config(config, load_schema(workflow.source_path(SCHEMA)))
except ValueError as error:
    raise WorkflowError(str(error)) from None
validate(config, SCHEMA)

DATASET = config["dataset"]["name"]
# the folder of a dataset's pictures: clips for the synthetic video scenes, images otherwise
MEDIA = "videos" if config["dataset"]["source"] == "synthetic_video" else "images"
MEDIA_DIR = f"data/{{dataset}}/{MEDIA}"
N_SHARDS = config["features"]["shards"]
# GPUs a training job asks for: one when the config says `compute.device: cuda` (run locally
# with `--resources gpu=<GPUs on the machine>` so no more jobs start than there are GPUs; the
# SLURM profile asks per rule), none otherwise ("auto" uses a GPU only where a job sees one).
TRAINING_GPUS = 1 if config["compute"]["device"] == "cuda" else 0
CACHE_GPUS = 1 if config["features"]["device"] == "cuda" else 0
FEATURE_SPLITS = config["features"]["splits"]


# A run builds its own dataset's files only: another dataset's (e.g. the students that
# pretrain.reuse imports) are inputs, never rebuilt under this run's settings.
wildcard_constraints:
    dataset=re.escape(DATASET),
    modality="vision|text",
    teacher=r"[A-Za-z0-9_.]+",
    shard=r"\d+",
    n=r"\d+",


def pixel_files(splits):
    """The splits' pixel files, written by the pixels rule: every student-side job reads its
    images from them."""
    return [f"data/{{dataset}}/pixels/{split}.npy" for split in splits]


def training_mem(wildcards, input, attempt):
    """mem_mb of a training job, from the sizes of the tables and models it loads
    (vldistill.workflow.training_mem_mb); evaluated once its inputs exist."""
    return training_mem_mb(dict(zip(map(str, input), input.size_files_mb)), attempt)


def teacher_name(modality):
    return config["teachers"][modality]["name"]


def manifests(tables=TABLES, splits=SPLITS):
    return expand(
        "data/{{dataset}}/manifest/{split}/{table}.parquet", split=splits, table=tables
    )


# ---- download (rules/download.smk) ------------------------------------------------------

DOWNLOADS = config.get("downloads") or {}
MANUAL = config.get("manual") or {}


def _names_pattern(names):
    # exact names only, so the three rules' outputs can never be mistaken for one another;
    # "(?!)" matches nothing when the config lists none
    return "|".join(re.escape(name) for name in sorted(names)) or "(?!)"


# Each entry owns one path under data/<dataset>/raw/; two owning the same path is a config error.
_RAW_OUTPUTS = [
    *DOWNLOADS,
    *(f"{name}.d" for name, entry in DOWNLOADS.items() if entry.get("extract")),
    *(f"{name}.placed.json" for name in MANUAL),
]


_CLASHES = sorted({path for path in _RAW_OUTPUTS if _RAW_OUTPUTS.count(path) > 1})


# ---- data (rules/data.smk) --------------------------------------------------------------

SOURCE = config["dataset"]["source"]


def raw_inputs(wildcards):
    """What a real dataset is read from: every download (extracted when asked) and every
    hand-placed folder's check, so the data rule runs after them."""
    downloads = config.get("downloads") or {}
    return [
        *(f"data/{wildcards.dataset}/raw/{name}{'.d' if entry.get('extract') else ''}"
          for name, entry in downloads.items()),
        *(f"data/{wildcards.dataset}/raw/{name}.placed.json" for name in config.get("manual") or {}),
    ]


# ---- teacher (rules/teacher.smk) --------------------------------------------------------

def teacher_items(wildcards):
    if wildcards.modality == "vision":
        return {
            "manifests": manifests(tables=["images"], splits=FEATURE_SPLITS),
            "images": MEDIA_DIR,
        }
    return {"corpus": "data/{dataset}/texts.parquet"}


def shard_files(wildcards, pattern):
    return expand(
        pattern,
        dataset=wildcards.dataset,
        modality=wildcards.modality,
        teacher=wildcards.teacher,
        shard=[f"{i:03d}" for i in range(N_SHARDS)],
        n=f"{N_SHARDS:03d}",
    )


# ---- student (rules/student.smk) --------------------------------------------------------

STUDENT_SEEDS = config["pretrain"]["seeds"]
# another run's student folder to import instead of training here (None: train here)
STUDENT_REUSE = config["pretrain"]["reuse"]


def teacher_index(modality):
    return f"features/{{dataset}}/{modality}-{teacher_name(modality)}/index.parquet"


def student_path(variant, sseed="{sseed}"):
    """A task-agnostic student's checkpoint ("pretrained" for the pre-trained one)."""
    name = "pretrained" if variant == "pretrained" else f"agnostic-{variant}"
    return f"models/{{dataset}}/student/seed-{sseed}/{name}.safetensors"


def agnostic_inputs(wildcards):
    inputs = {"pretrained": student_path("pretrained", wildcards.sseed),
              "pixels": pixel_files(["train"])}
    if wildcards.variant != "plain":
        inputs["vision"] = teacher_index("vision")
        inputs["text"] = teacher_index("text")
    return inputs


# ---- finetune (rules/finetune.smk) ------------------------------------------------------

FINETUNE = config["finetune"]


def finetune_inputs(wildcards):
    # every method starts from the task-agnostic student of its own variant (distill/agnostic.py)
    inputs = {
        "manifests": manifests(
            tables=["images", wildcards.task], splits=["train", "val", "test", "test_shifted"]
        ),
        "start": student_path(AGNOSTIC_START[wildcards.method], wildcards.sseed),
        "pixels": pixel_files(["train", "val", "test", "test_shifted"]),
    }
    if wildcards.method != "baseline":
        inputs["vision"] = teacher_index("vision")
        inputs["text"] = teacher_index("text")
    return inputs


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
    return [f"{path.removesuffix('metrics.json')}item_scores.parquet"
            for path in finetune_metrics(dataset)]


# ---- retrieval (rules/retrieval.smk) ----------------------------------------------------

# optional (absent: no retrieval); when present the schema has filled its defaults
RETRIEVAL = config.get("retrieval", {})
FAST_MODELS = ["fast", "fast_distilled"]
GALLERY_SPLIT = RETRIEVAL["split"] if RETRIEVAL else None
# what every evaluation job is given: the gallery split and how many queries per image
EVAL_PARAMS = {"split": GALLERY_SPLIT,
               "captions_per_image": RETRIEVAL["captions_per_image"],
               "max_queries": RETRIEVAL["max_queries"],
               "compute": config["compute"]} if RETRIEVAL else {}  # device and precision
RETRIEVAL_SEEDS = RETRIEVAL["seeds"] if RETRIEVAL else []
RETRIEVAL_REUSE = RETRIEVAL["reuse"] if RETRIEVAL else None  # another run's Slow and Fast
RERANK_FAST = RETRIEVAL["rerank"]["fast"] if RETRIEVAL else None  # whose top-K Slow re-ranks
# a gallery index built by this many jobs and merged (1: one job builds it)
INDEX_SHARDS = RETRIEVAL["index"]["shards"] if RETRIEVAL else 1
INDEX_PARTS = "indexes/{dataset}/seed-{seed}/{fast_model}.shards"


def index_inputs(wc):
    """What one Fast model's gallery index is built from: the gallery and the model, or, when
    sharded, every shard index in shard order (gallery order)."""
    if INDEX_SHARDS == 1:
        return {**caption_inputs(GALLERY_SPLIT),
                "fast": "models/{dataset}/retrieval/seed-{seed}/{fast_model}.safetensors".format(
                    **wc)}
    return {"shards": [f"{INDEX_PARTS}/{shard}-of-{INDEX_SHARDS}.faiss".format(**wc)
                       for shard in range(INDEX_SHARDS)]}


def student_start(init):
    """The student a retrieval model starts from (the first student seed's); None = scratch."""
    if init == "scratch":
        return None
    return student_path(init if init == "pretrained" else "mad", STUDENT_SEEDS[0])


def start_input(part):
    start = student_start(RETRIEVAL[part]["init"])
    return {"start": start} if start else {}


def caption_inputs(split):
    return {"manifests": manifests(tables=["images", "captions"], splits=[split]),
            "pixels": pixel_files([split])}


VIDEO = config["student"]["frames"] > 1


def retrieval_models():
    """Every evaluated retrieval model: both Fast models, Slow and one re-ranker per K; on video
    also Fast and Slow shown one frame per clip (the single-frame baseline); on images the
    teachers' ridge reference (rules/shortcuts.smk)."""
    return [*FAST_MODELS, "slow", *(f"rerank_k{k}" for k in RETRIEVAL["rerank"]["ks"]),
            *(["fast_1frame", "slow_1frame"] if VIDEO else ["teacher_ridge"])]


def retrieval_results(dataset=DATASET):
    return expand("results/{dataset}/retrieval/seed-{seed}/{model}.json", dataset=dataset,
                  seed=RETRIEVAL_SEEDS, model=retrieval_models())


# the models whose per-query gold ranks the paired comparisons of rule effects read
RANKED_MODELS = [*FAST_MODELS, "slow",
                 *(f"rerank_k{k}" for k in (RETRIEVAL["rerank"]["ks"] if RETRIEVAL else []))]


def ranked_results(suffix, dataset=DATASET):
    """Each ranked model's result JSON (``suffix`` ".json") or per-query gold ranks
    (".ranks.parquet") for every seed; the same order for either suffix."""
    if not RETRIEVAL:
        return []
    return expand(f"results/{{dataset}}/retrieval/seed-{{seed}}/{{model}}{suffix}",
                  dataset=dataset, seed=RETRIEVAL_SEEDS, model=RANKED_MODELS)


# ---- shortcuts (rules/shortcuts.smk) ----------------------------------------------------

REFERENCE_EVAL_SPLITS = ["test", "test_shifted"]  # the fine-tuning jobs' evaluation splits


def text_only_metrics(dataset=DATASET):
    return expand(
        "models/{dataset}/{task}/{regime}/text_only/seed-{seed}/metrics.json",
        dataset=dataset,
        task=FINETUNE["tasks"],
        regime=FINETUNE["regimes"],
        seed=FINETUNE["seeds"],
    )


# ---- report (rules/report.smk) ----------------------------------------------------------

def table_summaries(dataset=DATASET):
    """The seed summaries the results table gathers: fine-tuning, and retrieval when enabled."""
    summaries = [f"results/{dataset}/finetune_summary.csv"] if FINETUNE["tasks"] else []
    if RETRIEVAL:
        summaries.append(f"results/{dataset}/retrieval_summary.csv")
    return summaries


PLOTS = [*(["lowshot"] if FINETUNE["tasks"] else []),
         *(["recall_vs_k", "accuracy_vs_latency"] if RETRIEVAL else [])]


def training_metrics(dataset=DATASET):
    """The metrics (with per-step history) of every training job of the first student,
    fine-tuning and retrieval seed: the training curves show one run, not a tangle of seeds."""
    sseed = STUDENT_SEEDS[0]
    # only the students something else in the DAG starts from: plotting must not train more
    students = {"pretrained", *(AGNOSTIC_START[m] for m in FINETUNE["methods"])} \
        if FINETUNE["tasks"] else set()
    for part in ("slow", "fast") if RETRIEVAL and not RETRIEVAL_REUSE else ():
        if RETRIEVAL[part]["init"] != "scratch":
            students.add("pretrained" if RETRIEVAL[part]["init"] == "pretrained" else "mad")
    return [
        *(student_path(variant, sseed).format(dataset=dataset).removesuffix(".safetensors")
          + ".json" for variant in sorted(students)),
        *(expand("models/{dataset}/{task}/{regime}/{method}/student-{sseed}/seed-{seed}/"
                 "metrics.json", dataset=dataset, sseed=sseed, task=FINETUNE["tasks"],
                 regime=FINETUNE["regimes"], method=FINETUNE["methods"],
                 seed=FINETUNE["seeds"][0]) if FINETUNE["tasks"] else []),
        *(expand("models/{dataset}/retrieval/seed-{seed}/{model}.json", dataset=dataset,
                 seed=RETRIEVAL_SEEDS[0], model=["slow", *FAST_MODELS]) if RETRIEVAL else []),
    ]


# what a reader sees of each ranked model: a few fixed queries and their top images
PANELS = [f"retrieval_panel_{model}" for model in RANKED_MODELS] if RETRIEVAL else []
FIGURES = [f"results/plots/{name}.png" for name in ["training_curves", *PANELS]]


BUILT_FROM = {
    "dataset": DATASET,
    "source": config["dataset"]["source"],
    "student_seeds": STUDENT_SEEDS,
    **({"tasks": FINETUNE["tasks"], "regimes": FINETUNE["regimes"],
        "methods": FINETUNE["methods"], "seeds": FINETUNE["seeds"]} if FINETUNE["tasks"] else
       {"tasks": []}),
    "retrieval": {"seeds": RETRIEVAL_SEEDS, "split": GALLERY_SPLIT} if RETRIEVAL else "off",
}


# ---- targets (rules/targets.smk) --------------------------------------------------------

def dataset_path(pattern):
    return pattern.format(dataset=DATASET)
