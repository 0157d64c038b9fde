"""Retrieval results as table rows: chance references, seed summary, the Markdown speed-up."""

import json

import polars as pl
import pytest
import torch

from vldistill.results.retrieval import (
    collect,
    markdown_lines,
    model_order,
    result_rows,
    write_report,
)
from vldistill.results.summary import summarise


def result(model: str, seed: int, r1: float, total_ms: float, slow_calls: int) -> dict:
    return {
        "model": model, "seed": seed, "gallery": 50, "queries": 40,
        "t2i": {"R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "median_rank": 7.0, "n": 40},
        **({} if model.startswith("rerank") else
           {"i2t": {"R@1": r1, "R@5": r1, "R@10": r1, "median_rank": 3.0, "n": 30}}),
        "latency_ms_per_query": {"fast": 0.5, "slow": total_ms - 0.5, "total": total_ms},
        "slow_calls_per_query": slow_calls,
    }


def test_rows_carry_n_and_chance_references():
    rows = {r["metric"]: r for r in result_rows(result("slow", 0, 20.0, 100.0, 50), "d", "test")}
    assert rows["t2i_R@1"]["reference"] == pytest.approx(2.0)  # 1 of 50 images
    assert rows["t2i_R@10"]["reference"] == pytest.approx(20.0)
    assert rows["i2t_R@5"]["reference"] == pytest.approx(12.5)  # 5 of 40 captions
    assert rows["t2i_median_rank"]["reference"] == pytest.approx(25.5)
    assert rows["t2i_R@1"]["n"] == 40 and rows["i2t_R@1"]["n"] == 30
    assert rows["slow_calls"]["value"] == 50 and rows["total_ms"]["value"] == 100.0
    reranked = result_rows(result("rerank_k5", 0, 18.0, 10.0, 5), "d", "test")
    assert not any(r["metric"].startswith("i2t") for r in reranked)


def test_an_image_to_text_chance_written_by_the_evaluation_is_the_reference():
    """5 captions of each of 8 images: a random order finds one of an image's 5 among 40 at
    R@1 with probability 5/40, not 1/40; the evaluation writes that figure."""
    from vldistill.eval.retrieval import chance_metrics

    gold = torch.arange(40)[None, :] // 5 == torch.arange(8)[:, None]
    chance = chance_metrics(gold)
    assert chance["R@1"] == pytest.approx(12.5) and chance["median_rank"] == pytest.approx(41 / 6)
    out = result("slow", 0, 20.0, 100.0, 50)
    out["i2t"]["chance"] = chance
    rows = {r["metric"]: r for r in result_rows(out, "d", "test")}
    assert rows["i2t_R@1"]["reference"] == pytest.approx(12.5)
    assert rows["i2t_median_rank"]["reference"] == pytest.approx(41 / 6)
    assert rows["i2t_median_rank"]["reference_kind"] == "random"
    assert "i2t_chance" not in rows


def test_models_sort_fast_first_and_re_rankers_by_k():
    models = ["rerank_k20", "slow", "rerank_k5", "fast_distilled", "fast"]
    assert sorted(models, key=model_order) == ["fast", "fast_distilled", "slow", "rerank_k5",
                                               "rerank_k20"]
    with pytest.raises(ValueError, match="unknown retrieval model"):
        model_order("medium")


def test_summary_over_seeds_and_speed_up_over_slow(tmp_path):
    paths = []
    for seed, r1 in ((0, 20.0), (1, 22.0)):
        for model, total, calls in (("slow", 100.0, 50), ("rerank_k5", 10.0, 5)):
            path = tmp_path / f"{model}-{seed}.json"
            path.write_text(json.dumps(result(model, seed, r1, total, calls)))
            paths.append(path)
    summary = summarise(collect(paths, "d", "test"))
    r1 = summary.filter((pl.col("method") == "slow") & (pl.col("metric") == "t2i_R@1"))
    assert r1["mean"].item() == pytest.approx(21.0) and r1["seeds"].item() == 2
    assert r1["std"].item() == pytest.approx(2 ** 0.5)
    text = "\n".join(markdown_lines(summary))
    assert "| rerank_k5 |" in text and "10.0x" in text  # 100 ms / 10 ms
    assert text.index("| slow |") < text.index("| rerank_k5 |")
    out = write_report(paths, "d", "test", csv_path=tmp_path / "r.csv",
                       summary_path=tmp_path / "s.csv", markdown_path=tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == out and len(pl.read_csv(tmp_path / "r.csv")) > 0


def test_a_file_that_is_not_a_retrieval_result_names_itself(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "slow"}))
    with pytest.raises(ValueError, match="bad.json: not a retrieval result"):
        collect([bad], "d", "test")


def test_the_caption_ceiling_becomes_its_own_rows():
    from vldistill.stages.retrieval import caption_ceiling

    ceiling = caption_ceiling(torch.tensor([1, 2, 4]))
    assert ceiling["R@1"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 4) / 3)
    assert ceiling["R@5"] == pytest.approx(100.0) and ceiling["n"] == 3
    slow = {**result("slow", 0, 20.0, 100.0, 50), "t2i_ceiling": ceiling}
    rows = [r for r in result_rows(slow, "d", "test") if r["method"] == "ceiling"]
    assert {r["metric"] for r in rows} == {"t2i_R@1", "t2i_R@5", "t2i_R@10"}
    assert sorted(["slow", "ceiling", "fast"], key=model_order)[0] == "ceiling"



def test_hard_negative_accuracy_becomes_a_row_against_chance():
    fast = {**result("fast", 0, 20.0, 1.0, 0), "hard_negative": {"accuracy": 62.5, "n": 40}}
    (row,) = [r for r in result_rows(fast, "d", "test") if r["metric"] == "hard_negative_acc"]
    assert (row["value"], row["n"], row["reference"], row["reference_kind"]) == \
        (62.5, 40, 50.0, "chance")
    text = "\n".join(markdown_lines(summarise(pl.DataFrame(
        result_rows(fast, "d", "test"), schema=collect([], "d", "test").schema))))
    assert "hard neg" in text and "62.5" in text and "chance 50" in text
