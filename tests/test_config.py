import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow

from vldistill.config import ConfigError, check_config, load_schema


@pytest.fixture(scope="module")
def schema(repo):
    return load_schema(repo / "schemas" / "config.schema.yaml")


@pytest.fixture()
def default(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def errors_of(config, schema) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(config, schema)
    return str(info.value)


@pytest.mark.parametrize("overlay", sorted(p.name for p in
                                            (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_embedded_default_and_every_overlay_config_are_valid(repo, schema, default, overlay):
    check_config(default, schema)
    merged = copy.deepcopy(default)
    for key, value in yaml.safe_load((repo / "configs" / overlay).read_text()).items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    check_config(merged, schema)


def overlays_with_a_fine_tuning_budget() -> list[str]:
    configs = Path(__file__).parents[1] / "configs"
    return sorted(p.name for p in configs.glob("*.yaml")
                  if "training" in (yaml.safe_load(p.read_text()).get("finetune") or {}))


@pytest.mark.parametrize("overlay", overlays_with_a_fine_tuning_budget())
def test_an_overlay_that_sets_a_fine_tuning_budget_gets_it_for_each_of_its_tasks(
        repo, default, overlay):
    """Snakemake merges a --configfile key by key, so an overlay's ``per_task: {}`` cannot clear
    the default's per-task overrides: each task must train with the overlay's own budget."""
    from snakemake.utils import update_config

    own = yaml.safe_load((repo / "configs" / overlay).read_text())
    training = own["finetune"]["training"]
    merged = copy.deepcopy(default)
    update_config(merged, own)
    finetune = merged["finetune"]
    for task in finetune["tasks"]:
        effective = {**finetune["training"], **finetune["per_task"].get(task, {})}
        meant = {**training, **own["finetune"].get("per_task", {}).get(task, {})}
        assert effective == {**finetune["training"], **meant}, (overlay, task)


def test_unknown_key_is_named_with_the_allowed_ones(schema, default):
    default["teachers"]["vision"]["imagesize"] = 96
    message = errors_of(default, schema)
    assert "teachers.vision: unknown key(s) ['imagesize']" in message
    assert "'image_size'" in message


def test_wrong_type_names_key_and_expected_type(schema, default):
    default["synthetic"]["counts"]["train"] = "many"
    assert "synthetic.counts.train: got 'many'; expected type integer" in errors_of(default, schema)


def test_unknown_teacher_lists_the_valid_names(schema, default):
    default["teachers"]["text"]["name"] = "bert-large"
    message = errors_of(default, schema)
    assert "teachers.text.name: got 'bert-large'; expected one of ['minilm', 'hf', 'open_clip']" \
        in message


def test_every_problem_is_reported_at_once(schema, default):
    default["seed"] = -1
    default["features"]["shards"] = 0
    message = errors_of(default, schema)
    assert "2 problem(s)" in message
    assert "seed:" in message and "features.shards:" in message


def test_unbalanced_entailment_count_is_rejected(schema, default):
    default["synthetic"]["ve_per_image"] = 4
    assert "synthetic.ve_per_image" in errors_of(default, schema)


def test_cross_key_rules(schema, default):
    default["synthetic"]["min_objects"] = 4
    default["synthetic"]["max_objects"] = 2
    assert "synthetic.min_objects: must not exceed" in errors_of(default, schema)
    default["synthetic"]["min_objects"] = 1
    default["teachers"]["vision"] = {"name": "open_clip"}
    assert "teachers.vision.model: required" in errors_of(default, schema)


IMPOSSIBLE = [
    # (what the user wrote, the message that must come back)
    ("retrieval: {rerank: {ks: [1, 5000]}}",
     "retrieval.rerank.ks[1]: re-ranking the top 5000 needs at least 5000 gallery images, but "
     "the 'test' gallery has synthetic.counts.test = 300"),
    ("finetune: {regimes: [full, lowshot-0]}",
     "finetune.regimes[1]: got 'lowshot-0'; expected 'full' or 'lowshot-<percent of training "
     "images>' with 0 < percent <= 100"),
    ("teachers: {vision: {name: resnet50}}",
     "teachers.vision.name: got 'resnet50'; expected one of ['efficientnet_lite0', 'open_clip']"),
    ("retrieval: {index: {factory: 'IVF1024,Flat'}}",
     "retrieval.index.factory: IVF1024 needs at least 1024 vectors"),
    ("retrieval: {index: {factory: HNSW32, shards: 4}}",
     "retrieval.index.shards: 4 shards of a graph index (HNSW32) cannot be merged"),
    ("retrieval: {captions_per_image: 9}",
     "retrieval.captions_per_image: 9 queries per image, but the generator writes "
     "synthetic.captions_per_image = 5"),
    ("dataset: {skip_bad_examples: sometimes}",
     "dataset.skip_bad_examples: got 'sometimes'; expected type boolean"),
    ("finetune: {trainig: {steps: 5}}", "finetune: unknown key(s) ['trainig']"),
    ("teachers:\n  vision: {name: efficientnet_lite0, image_size: huge}",
     "teachers.vision.image_size: got 'huge'; expected type integer"),
]


@pytest.mark.parametrize("override, message", IMPOSSIBLE, ids=[m.split(":")[0] for _, m in
                                                               IMPOSSIBLE])
def test_impossible_config_is_rejected_naming_the_key(schema, default, override, message):
    from snakemake.utils import update_config
    update_config(default, yaml.safe_load(override))
    assert message in errors_of(default, schema)


@pytest.mark.parametrize("override, message", [IMPOSSIBLE[0], IMPOSSIBLE[1]],
                         ids=["rerank-k", "lowshot-0"])
def test_bad_config_fails_before_any_job_runs(repo, tmp_path, override, message):
    """Snakemake itself refuses the config (a real run, not a dry run) and nothing is created."""
    workdir = copy_workflow(tmp_path / "work")
    (workdir / "bad.yaml").write_text(override + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "bad.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    for artifacts in ("data", "features", "models", "results", "logs"):
        assert not (workdir / artifacts).exists()


VQA_ONLY = """
dataset: {name: mine, source: files}
image_roots: {coco: [/data/coco/train2014]}
sources:
  - {format: vqa_v2, images: coco, annotations: {train: raw/q.json}}
finetune: {tasks: [vqa, ve]}
"""


def test_sources_that_cannot_feed_a_stage_are_refused_with_the_ways_out(schema, default):
    """A VQA-only dataset used to fail minutes into pre-training with an internal message; the
    check names each stage that lacks its data, what the sources give and what to do."""
    from snakemake.utils import update_config

    update_config(default, yaml.safe_load(VQA_ONLY))
    message = errors_of(default, schema)
    assert ("sources: a run pre-trains its student on captions, but this dataset's sources "
            "give vqa. Add a captions source (format karpathy") in message
    assert "or set pretrain.reuse to another run's students" in message
    assert "retrieval: Fast and Slow retrieval search images by their captions" in message
    assert "or remove the retrieval section" in message
    assert "finetune.tasks: 've' needs a snli_ve source, but the sources give vqa. Add one, or " \
        "drop 've' from finetune.tasks" in message
    assert "'vqa' needs" not in message  # the VQA source feeds the VQA task


def test_a_vqa_only_dataset_can_fine_tune_another_runs_students(schema, default):
    from snakemake.utils import update_config

    update_config(default, yaml.safe_load(VQA_ONLY))
    default["finetune"]["tasks"] = ["vqa"]
    default.pop("retrieval")
    assert "captions" in errors_of(default, schema)
    default["pretrain"]["reuse"] = "models/coco/student"
    check_config(default, schema)  # no captions needed: nothing is pre-trained here
    default["pretrain"]["reuse"] = "models/mine/student/"
    assert "pretrain.reuse: 'models/mine/student/' is this run's own student folder" in \
        errors_of(default, schema)


def test_a_table_without_training_rows_fails_the_data_rule_naming_the_stage(tmp_path):
    from vldistill.stages.data import require_training_rows

    counts = {"train": {"images": 10, "captions": 0, "vqa": 40},
              "test": {"images": 5, "captions": 25, "vqa": 0}}
    require_training_rows(counts, ["vqa"], tmp_path)  # the vqa task has its rows
    with pytest.raises(ValueError) as info:
        require_training_rows(counts, ["captions", "vqa"], tmp_path / "mine")
    message = str(info.value)
    assert "pre-training (and retrieval) needs captions in the train split, but the manifests " \
        "hold none (train: images 10, captions 0, vqa 40; test: images 5, captions 25, vqa 0)" \
        in message
    assert "the vqa task" not in message
    assert "sources[].splits" in message


def test_retrieval_reuse_must_name_another_runs_folder(schema, default):
    default["retrieval"]["reuse"] = "models/tiny/retrieval"
    check_config(default, schema)  # another dataset's models: fine
    default["retrieval"]["reuse"] = f"./models/{default['dataset']['name']}/retrieval"
    assert "retrieval.reuse:" in errors_of(default, schema)
    assert "this run's own retrieval folder" in errors_of(default, schema)
