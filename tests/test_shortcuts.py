"""Shortcut detectors: the text-only reference models and the VE generator they keep honest."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vldistill.synthetic import language
from vldistill.synthetic.language import VE_TRUTH, holds, ve_claim
from vldistill.synthetic.scenes import geometry, sample_scene
from vldistill.train.shortcuts import evaluate_text_only, fit_text_only


def scenes(n: int, seed: int, domain: str = "source") -> list:
    rng = np.random.default_rng(seed)
    geo = geometry(64)
    return [sample_scene(rng, domain, 1, 4, geo) for _ in range(n)]


def ve_frame(n: int, seed: int, domain: str = "source") -> pl.DataFrame:
    rng = np.random.default_rng(seed + 1)
    rows = [{"image_id": f"{seed}-{i}", "hypothesis": text, "label": label}
            for i, scene in enumerate(scenes(n, seed, domain))
            for text, label in language.make_ve(scene, rng, 3)]
    return pl.DataFrame(rows)


def test_a_hypothesis_only_classifier_is_near_chance_on_generated_ve() -> None:
    train, val, held_out = ve_frame(800, 0), ve_frame(200, 1), ve_frame(400, 2)
    predict, _ = fit_text_only("ve", train, val)
    assert evaluate_text_only("ve", predict, train)["accuracy"] <= 0.45
    assert evaluate_text_only("ve", predict, held_out)["accuracy"] <= 0.40
    shifted = ve_frame(400, 3, "shifted")
    assert evaluate_text_only("ve", predict, shifted)["accuracy"] <= 0.40


@pytest.mark.parametrize("domain", ["source", "shifted"])
def test_every_ve_label_has_its_truth_value_for_its_scene(domain: str) -> None:
    rng = np.random.default_rng(5)
    kinds = set()
    for scene in scenes(300, 4, domain):
        for label, truth in VE_TRUTH.items():
            claim = ve_claim(scene, rng, label)
            assert holds(claim, scene) is truth, (label, claim, scene)
            kinds.add((label, type(claim).__name__))
    assert len(kinds) == 6  # every label in both templates (relation, size)


def test_neutral_names_an_object_the_scene_lacks_and_entailment_only_present_ones() -> None:
    rng = np.random.default_rng(6)
    for scene in scenes(200, 7):
        present = {(o.color, o.shape) for o in scene.objects}
        for label in VE_TRUTH:
            claim = ve_claim(scene, rng, label)
            named = {(r.color, r.shape) for r in language._refs(claim)}
            assert (named <= present) is (label != "neutral"), (label, claim)


# ---------------------------------------------------------------------------------------------
# text-only reference rows through the stage and the reports


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory):
    from vldistill.synthetic.images import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(SyntheticConfig(counts={"train": 120, "val": 30, "test": 30, "test_shifted": 30}),
             root, seed=3, progress=False)
    return root


@pytest.mark.parametrize("task", ["ve", "vqa", "vcr"])
def test_text_only_metrics_read_like_a_fine_tuning_job(synthetic_root, tmp_path, task) -> None:
    import json

    from vldistill.results.finetune import collect
    from vldistill.stages.shortcuts import text_only

    path = tmp_path / "metrics.json"
    metrics = text_only(task=task, regime="lowshot-50", root=synthetic_root, seed=0,
                        metrics_path=path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(metrics))
    assert metrics["method"] == "text_only" and set(metrics["results"]) == {"test",
                                                                            "test_shifted"}
    assert metrics["n_train_images"] < 120  # the regime's images only
    rows = collect([path], "synthetic")
    assert set(rows["method"]) == {"text_only"}
    assert rows["reference"].is_not_null().all()
    assert set(rows["reference_kind"]) == {"majority" if task == "vqa" else "chance"}


def test_the_vqa_prior_is_the_best_of_its_candidates_on_val(synthetic_root) -> None:
    from vldistill.data.manifest import manifest_path, read_manifest

    train, val = (read_manifest(manifest_path(synthetic_root, s, "vqa"), "vqa")
                  for s in ("train", "val"))
    predict, choice = fit_text_only("vqa", train, val)
    assert choice.val and max(choice.val.values()) == pytest.approx(
        evaluate_text_only("vqa", predict, val)["accuracy"], abs=1e-6)
    assert "question_type_prior" in choice.val


def test_an_answer_only_scorer_finds_a_word_that_marks_the_right_candidate() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        label = int(rng.integers(4))
        answers = [f"the {w} one" for w in rng.choice(["red", "blue", "green", "cyan"], 4)]
        answers[label] = answers[label].replace("one", "clearly one")
        rows.append({"answers": answers, "rationales": ["because"] * 4, "answer_label": label,
                     "rationale_label": label})
    frame = pl.DataFrame(rows)
    predict, _ = fit_text_only("vcr", frame[:150], frame[150:])
    result = evaluate_text_only("vcr", predict, frame[150:])
    assert result["q2a"] == 1.0 and result["qa2r"] == pytest.approx(0.25, abs=0.2)


# ---------------------------------------------------------------------------------------------
# the teachers' ridge reference


def paired(n: int, seed: int, noise: float = 0.05):
    import torch

    g = torch.Generator().manual_seed(seed)
    texts = torch.randn(n, 8, generator=g)
    mix = torch.randn(8, 12, generator=torch.Generator().manual_seed(99))
    return texts, texts @ mix + noise * torch.randn(n, 12, generator=g)


def test_a_ridge_map_retrieves_the_image_a_linear_map_of_its_text_gives() -> None:
    import torch

    from vldistill.eval.retrieval import retrieval_metrics
    from vldistill.retrieval.ridge import LAMBDAS, choose_ridge, fit_ridge

    (tt, ti), (vt, vi), (gt, gi) = paired(400, 0), paired(60, 1), paired(60, 2)
    ridge, table = choose_ridge(tt, ti, vt, vi, torch.arange(60))
    assert len(table) == 2 * len(LAMBDAS)
    assert retrieval_metrics(ridge.scores(gt, gi), torch.arange(60))["R@1"] >= 90.0
    # without the map (identity is impossible: other widths) a random map is near chance
    shuffled = fit_ridge(tt, ti[torch.randperm(400)], "text_to_image", 1.0)
    assert retrieval_metrics(shuffled.scores(gt, gi), torch.arange(60))["R@1"] <= 20.0


def test_the_teacher_ridge_result_is_a_retrieval_reference_row() -> None:
    from vldistill.results.retrieval import markdown_lines, result_rows
    from vldistill.results.summary import ROW_SCHEMA, summarise

    metrics = {"R@1": 10.0, "R@5": 30.0, "R@10": 50.0, "median_rank": 11.0, "n": 40}
    result = {"model": "teacher_ridge", "t2i": metrics, "i2t": metrics, "seed": 0,
              "slow_calls_per_query": 0, "gallery": 40, "queries": 40,
              "hard_negative": {"accuracy": 55.0, "n": 30}}
    rows = pl.DataFrame(result_rows(result, "synthetic", "test"), schema=ROW_SCHEMA)
    assert set(rows["method"]) == {"teacher_ridge"}
    assert "t2i_R@1" in set(rows["metric"]) and "total_ms" not in set(rows["metric"])
    assert any(line.startswith("| teacher_ridge |") for line in markdown_lines(summarise(rows)))
