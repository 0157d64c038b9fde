"""The results table from seed summaries: long rows, the paper-style Markdown, metrics.json and
the plots, on a small hand-made set of summaries."""

import json

import polars as pl
import pytest

from vldistill.results import plots
from vldistill.results.finetune import write_report as write_finetune_report
from vldistill.results.retrieval import write_report as write_retrieval_report
from vldistill.results.summary import KEYS, summarise
from vldistill.results.table import build_table, markdown, metrics_json, read_table, write_table


def finetune_metrics(task, regime, method, seed, value):
    metric = {"vqa": "accuracy", "ve": "accuracy", "vcr": "q2ar"}[task]
    result = {"n": 90, metric: value, "majority_baseline": 0.2, "chance": {metric: 1 / 3}}
    if task == "vcr":
        result.update(q2a=value, qa2r=value, chance={"q2a": 0.25, "qa2r": 0.25, "q2ar": 1 / 16})
    return {"task": task, "regime": regime, "method": method, "seed": seed,
            "results": {"test": result, "test_shifted": {**result, metric: value / 2}}}


def retrieval_result(model, seed, r1, total):
    return {"model": model, "seed": seed, "gallery": 100, "queries": 100,
            "t2i": {"R@1": r1, "R@5": r1 + 5, "R@10": r1 + 9, "median_rank": 9.0, "n": 100},
            "latency_ms_per_query": {"fast": 0.4, "slow": total - 0.4, "total": total},
            "slow_calls_per_query": {"fast": 0, "slow": 100}.get(model, 10)}


@pytest.fixture
def summaries(tmp_path):
    metrics = []
    for task in ("vqa", "ve", "vcr"):
        for regime, base in (("lowshot-1", 0.3), ("lowshot-10", 0.4), ("full", 0.5)):
            for method, gain in (("baseline", 0.0), ("mad", 0.05)):
                for seed in (0, 1):
                    path = tmp_path / f"{task}-{regime}-{method}-{seed}.json"
                    path.write_text(json.dumps(
                        finetune_metrics(task, regime, method, seed, base + gain + seed / 100)))
                    metrics.append(path)
    write_finetune_report(metrics, "d", csv_path=tmp_path / "f.csv",
                          summary_path=tmp_path / "f_summary.csv", markdown_path=tmp_path / "f.md")
    results = []
    for model, r1, total in (("fast", 10.0, 0.5), ("fast_distilled", 12.0, 0.5),
                             ("slow", 30.0, 50.0), ("rerank_k10", 25.0, 5.0)):
        for seed in (0, 1):
            path = tmp_path / f"{model}-{seed}.json"
            path.write_text(json.dumps(retrieval_result(model, seed, r1 + seed, total)))
            results.append(path)
    write_retrieval_report(results, "d", "test", csv_path=tmp_path / "r.csv",
                           summary_path=tmp_path / "r_summary.csv", markdown_path=tmp_path / "r.md")
    return [tmp_path / "f_summary.csv", tmp_path / "r_summary.csv"]


def test_the_table_has_one_row_per_cell_with_value_spread_and_n(summaries):
    table = build_table(summaries)
    keys = ["dataset", "task", "regime", "split", "method", "metric"]
    assert table.select(keys).is_unique().all()
    cell = table.filter((pl.col("task") == "vqa") & (pl.col("regime") == "full")
                        & (pl.col("split") == "test") & (pl.col("method") == "mad"))
    assert cell["value"].item() == pytest.approx(0.555)  # mean of 0.55 and 0.56
    assert cell["spread"].item() == pytest.approx(0.01 / 2 ** 0.5)
    assert cell["seeds"].item() == 2 and cell["n"].item() == 90
    assert cell["reference"].item() == pytest.approx(0.2)
    assert set(table["task"]) == {"vqa", "ve", "vcr", "retrieval"}


def test_markdown_pivots_methods_against_regime_and_split(summaries):
    text = markdown(build_table(summaries))
    assert "| method | 1% source | 10% source | full source | 1% shifted |" in text
    assert "| mad | 0.355 ± 0.007 |" in text
    assert "| *majority* |" in text and "| *chance* |" in text and "| *n* | 90 |" in text
    assert "| slow |" in text and "10.0x" in text  # 50 ms / 5 ms


def test_metrics_json_nests_every_value(summaries):
    table = build_table(summaries)
    nested = metrics_json(table)
    assert nested["d"]["vqa"]["full"]["test"]["mad"]["accuracy"] == pytest.approx(0.555)
    assert nested["d"]["retrieval"]["full"]["test"]["slow"]["t2i_R@1"] == pytest.approx(30.5)


def test_written_table_reads_back_with_its_types_and_plots_render(summaries, tmp_path):
    whole = write_table(summaries, csv_path=tmp_path / "t.csv", timings_path=tmp_path / "ms.csv",
                        markdown_path=tmp_path / "t.md", metrics_path=tmp_path / "m.json")
    quality, timings = read_table(tmp_path / "t.csv"), read_table(tmp_path / "ms.csv")
    assert quality.schema["spread"] == pl.Float64
    # timings leave the table (they are not reproducible) but nothing is lost
    assert not quality["metric"].str.ends_with("_ms").any()
    assert timings["metric"].str.ends_with("_ms").all() and len(timings) > 0
    table = pl.concat([quality, timings]).sort(list(KEYS))
    assert table.equals(whole.sort(list(KEYS)))
    assert "total_ms" not in (tmp_path / "m.json").read_text()
    assert "Fast ms" in (tmp_path / "t.md").read_text()
    for name in ("lowshot", "recall_vs_k", "accuracy_vs_latency"):
        getattr(plots, f"plot_{name}")(table, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_single_seed_spread_is_empty_and_bad_summaries_name_the_file(tmp_path, summaries):
    one = summarise(pl.read_csv(tmp_path / "f.csv").filter(pl.col("seed") == 0))
    one.write_csv(tmp_path / "one.csv")
    assert build_table([tmp_path / "one.csv"])["spread"].null_count() == len(one)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: not a results summary"):
        build_table([bad])


def test_the_markdown_summarises_the_effects_and_links_their_table(summaries, tmp_path):
    from vldistill.results.effects import EFFECT_SCHEMA

    rows = [("mad - baseline", "test", 0.05, 0.01, 0.09, True),
            ("mad - baseline", "test_shifted", 0.02, -0.03, 0.07, False),
            ("rerank_k10 - slow", "test", -5.0, -9.0, -1.0, True)]
    pl.DataFrame([{"effect": e, "dataset": "d", "task": "ve", "regime": "full", "split": s,
                   "metric": "accuracy", "difference": d, "ci_low": lo, "ci_high": hi,
                   "n": 90, "seeds": 2, "excludes_zero": x} for e, s, d, lo, hi, x in rows],
                 schema=EFFECT_SCHEMA).write_csv(tmp_path / "effects.csv")
    write_table(summaries, csv_path=tmp_path / "t.csv", timings_path=tmp_path / "ms.csv",
                markdown_path=tmp_path / "t.md", metrics_path=tmp_path / "m.json",
                effects_path=tmp_path / "effects.csv")
    text = (tmp_path / "t.md").read_text()
    assert "## Effects" in text and "[effects.md](effects.md)" in text
    assert "- mad - baseline: 1 of 2 intervals exclude 0" in text
    assert "- rerank_k10 - slow: 1 of 1 intervals exclude 0" in text
