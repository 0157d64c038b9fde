# Shared by every stage: config validation, names of things, small helpers.

from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vldistill.code_version import code_hash
from vldistill.config import check_config, load_schema
from vldistill.data.manifest import SPLITS, TABLES, TASKS
from vldistill.distill.methods import AGNOSTIC_START, AGNOSTIC_VARIANTS, METHODS

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
FEATURE_SPLITS = config["features"]["splits"]


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    modality="vision|text",
    teacher=r"[A-Za-z0-9_.]+",
    shard=r"\d+",
    n=r"\d+",


def teacher_name(modality):
    return config["teachers"][modality]["name"]


def manifests(tables=TABLES, splits=SPLITS):
    return expand(
        "data/{{dataset}}/manifest/{split}/{table}.parquet", split=splits, table=tables
    )
