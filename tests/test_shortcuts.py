"""Shortcut detectors: the text-only reference models and the VE generator they keep honest."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vldistill.data import language
from vldistill.data.language import VE_TRUTH, holds, ve_claim
from vldistill.data.scenes import geometry, sample_scene
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
