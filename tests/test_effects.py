"""Paired effects: bootstrap intervals, strict pairing, and the effects table from run files."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from vldistill.eval.retrieval import Ranks
from vldistill.results.effects import (
    BootstrapConfig,
    compare,
    paired_bootstrap,
    paired_differences,
    read_effects,
    write_effects,
)
from vldistill.results.ranks import write_query_ranks

CFG = BootstrapConfig(resamples=500, level=0.95, seed=0)


def test_the_interval_of_a_known_difference_covers_it_about_as_often_as_its_level():
    rng = np.random.default_rng(1)
    covered = [
        (e.ci_low <= 0.3 <= e.ci_high)
        for e in (paired_bootstrap(rng.normal(0.3, 1.0, size=100), CFG) for _ in range(200))]
    assert 0.88 <= np.mean(covered) <= 0.99
    effect = paired_bootstrap(rng.normal(0.3, 1.0, size=400), CFG)
    assert effect.ci_low < 0.3 < effect.ci_high and effect.excludes_zero
    assert effect.n == 400 and effect.seeds == 1


def test_a_zero_effect_has_an_interval_that_includes_zero():
    rng = np.random.default_rng(2)
    a, b = rng.binomial(1, 0.6, size=(2, 300)).astype(float)
    effect = paired_bootstrap(a - b, CFG)
    assert effect.ci_low < 0 < effect.ci_high and not effect.excludes_zero
    same = paired_bootstrap(np.zeros(20), CFG)  # identical predictions: no difference at all
    assert (same.difference, same.ci_low, same.ci_high, same.excludes_zero) == (0, 0, 0, False)


def test_the_interval_is_seeded_and_seeds_that_disagree_widen_it():
    rng = np.random.default_rng(3)
    items = rng.normal(0.2, 1.0, size=200)
    agree = np.stack([items, items, items])
    disagree = agree + np.array([[-1.0], [0.0], [1.0]])  # the same mean, seeds far apart
    one, other = paired_bootstrap(disagree, CFG), paired_bootstrap(disagree, CFG)
    assert one == other and one.seeds == 3 and one.n == 200
    narrow = paired_bootstrap(agree, CFG)
    assert one.difference == pytest.approx(narrow.difference)
    assert one.ci_high - one.ci_low > 2 * (narrow.ci_high - narrow.ci_low)


def scores(unit: str, items: list[str], values: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"unit": [unit] * len(items), "item": items, "score": values})


def test_pairing_is_by_item_id_and_fails_when_items_or_seeds_differ():
    a = scores("s0", ["q1", "q2", "q3"], [1.0, 0.0, 1.0])
    b = scores("s0", ["q3", "q1", "q2"], [0.0, 0.0, 0.0])  # another order, same items
    assert paired_differences(a, b).tolist() == [[1.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match=r"different items: 1 only in A \(e.g. \['q2'\]\)"):
        paired_differences(a, b.head(2))
    with pytest.raises(ValueError, match="different seeds"):
        paired_differences(a, b.with_columns(pl.lit("s1").alias("unit")))
    with pytest.raises(ValueError, match="twice"):
        paired_differences(pl.concat([a, a]), b)
    two_seeds = pl.concat([a, scores("s1", ["q1", "q2"], [1.0, 1.0])])
    with pytest.raises(ValueError, match="same items under every seed"):
        paired_differences(two_seeds, pl.concat([b, scores("s1", ["q1", "q2"], [0.0, 0.0])]))


def test_runs_pair_on_the_seeds_both_methods_have_and_ambiguity_fails():
    def rows(method, seeds, values):
        return [{"dataset": "d", "task": "ve", "regime": "full", "split": "test",
                 "method": method, "metric": "accuracy", "seeds": json.dumps(seeds),
                 "item": f"p{i}", "score": v} for i, v in enumerate(values)]

    # a stage only MAD's runs record (here "mad") is left out: they pair on the others
    outcomes = pl.DataFrame([
        *rows("baseline", {"pretrain": 0, "finetune": 0}, [0, 0, 1, 0]),
        *rows("baseline", {"pretrain": 0, "finetune": 1}, [0, 1, 0, 0]),
        *rows("mad", {"pretrain": 0, "mad": 0, "finetune": 0}, [1, 0, 1, 1]),
        *rows("mad", {"pretrain": 0, "mad": 0, "finetune": 1}, [1, 1, 1, 0]),
    ])
    (row,) = compare(outcomes, "mad", "baseline", CFG)
    assert row["difference"] == pytest.approx(4 / 8) and row["seeds"] == 2 and row["n"] == 4
    # MAD's runs name their seed another way: both runs of a method share the common seeds
    renamed = outcomes.with_columns(pl.when(pl.col("method") == "mad").then(
        pl.col("seeds").str.replace('"finetune"', '"other"')).otherwise(pl.col("seeds")))
    with pytest.raises(ValueError, match="ambiguous"):
        compare(renamed, "mad", "baseline", CFG)


def write_run(tmp_path, name: str, record: dict, table: pl.DataFrame, suffix: str):
    json_path, table_path = tmp_path / f"{name}.json", tmp_path / f"{name}{suffix}"
    json_path.write_text(json.dumps(record))
    table.write_parquet(table_path)
    return json_path, table_path


def test_run_files_give_one_row_per_effect_cell_with_its_interval(tmp_path):
    seeds = {"data": 0, "pretrain": 0, "finetune": 0}
    finetune = []
    for method, right in (("baseline", [1, 0, 0, 0]), ("mad", [1, 1, 1, 0])):
        items = pl.DataFrame({
            "split": ["test"] * 4 + ["test_shifted"] * 4, "item": [f"p{i}" for i in range(8)],
            "metric": ["accuracy"] * 8, "score": [float(r) for r in right * 2]})
        finetune.append(write_run(tmp_path, f"ve-{method}", {
            "task": "ve", "regime": "full", "method": method, "seed": 0,
            "seeds": {**seeds, **({"mad": 0} if method == "mad" else {})}}, items,
            ".item_scores.parquet"))
    # (wrong images above the gold one, wrong ones tied with it) per query
    places = {"fast": [(2, 0), (0, 0), (6, 0), (1, 0)], "fast_distilled": [(0, 0), (0, 1), (1, 0),
                                                                          (1, 0)],
              "slow": [(0, 0), (1, 0), (0, 0), (8, 0)], "rerank_k4": [(0, 0), (0, 0), (0, 0),
                                                                    (8, 0)]}
    retrieval = []
    for model, counts in places.items():
        result = tmp_path / f"{model}.json"
        result.write_text(json.dumps({"model": model, "seed": 0,
                                      "seeds": {"data": 0, "retrieval": 0}}))
        higher, tied = (torch.tensor(c) for c in zip(*counts, strict=True))
        write_query_ranks(["c1", "c2", "c3", "c4"], Ranks(higher, tied, torch.ones(4).long()),
                          tmp_path / f"{model}.ranks.parquet")
        retrieval.append((result, tmp_path / f"{model}.ranks.parquet"))
    csv, md = tmp_path / "effects.csv", tmp_path / "effects.md"
    written = write_effects(finetune_runs=finetune, retrieval_runs=retrieval, dataset="tiny",
                            retrieval_split="test", config={"resamples": 200, "level": 0.9,
                                                            "seed": 0},
                            csv_path=csv, markdown_path=md)
    effects = read_effects(csv)
    assert effects.equals(written)
    assert effects.columns == ["effect", "dataset", "task", "regime", "split", "metric",
                               "difference", "ci_low", "ci_high", "n", "seeds", "excludes_zero"]
    got = {(r["effect"], r["split"], r["metric"]): r["difference"]
           for r in effects.iter_rows(named=True)}
    assert got == pytest.approx({
        ("mad - baseline", "test", "accuracy"): 0.5,
        ("mad - baseline", "test_shifted", "accuracy"): 0.5,
        # hits at K: fast 1/4, 3/4, 4/4; distilled 1.5/4 (a tie of two at the top counts
        # half at K = 1), 4/4, 4/4 (percentage points)
        ("fast_distilled - fast", "test", "t2i_R@1"): 12.5,
        ("fast_distilled - fast", "test", "t2i_R@5"): 25.0,
        ("fast_distilled - fast", "test", "t2i_R@10"): 0.0,
        ("rerank_k4 - slow", "test", "t2i_R@1"): 25.0,
        ("rerank_k4 - slow", "test", "t2i_R@5"): 0.0,
        ("rerank_k4 - slow", "test", "t2i_R@10"): 0.0,
    })
    assert (effects["n"] == 4).all() and (effects["seeds"] == 1).all()
    assert (effects["ci_low"] <= effects["difference"]).all()
    assert (effects["difference"] <= effects["ci_high"]).all()
    assert effects.filter(pl.col("difference") == 0)["excludes_zero"].not_().all()
    text = md.read_text()
    assert "| effect | regime | split | metric | difference | 90 % CI | n | seeds |" in text
    assert "| mad - baseline | full | test | accuracy | +0.500 |" in text
    assert "200 resamples" in text


def test_no_methods_to_compare_writes_an_empty_table(tmp_path):
    effects = write_effects(finetune_runs=[], retrieval_runs=[], dataset="d",
                            retrieval_split="test",
                            config={"resamples": 10, "level": 0.95, "seed": 0},
                            csv_path=tmp_path / "e.csv", markdown_path=tmp_path / "e.md")
    assert effects.is_empty() and read_effects(tmp_path / "e.csv").is_empty()
    assert "No effect to report" in (tmp_path / "e.md").read_text()
    with pytest.raises(ValueError, match="effects: unknown key"):
        BootstrapConfig.from_dict({"resamples": 10, "level": 0.95, "seed": 0, "x": 1})
