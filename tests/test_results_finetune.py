import json

import pytest

from vldistill.results.finetune import collect, markdown, metric_rows
from vldistill.results.summary import summarise


def job(task, method, seed, value, regime="full"):
    if task == "vqa":
        result = {"accuracy": value, "n": 30, "majority_baseline": 0.2}
    elif task == "ve":
        result = {"accuracy": value, "n": 30, "chance": {"accuracy": 1 / 3}}
    else:
        result = {"q2a": value, "qa2r": value / 2, "q2ar": value / 4, "n": 10,
                  "chance": {"q2a": 0.25, "qa2r": 0.25, "q2ar": 0.0625}}
    return {"task": task, "regime": regime, "method": method, "seed": seed,
            "results": {"test": result, "test_shifted": result}}


def write(tmp_path, metrics):
    paths = []
    for i, m in enumerate(metrics):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(m))
        paths.append(path)
    return paths


def test_each_task_gives_its_official_metrics_with_the_reference_beside_them():
    vqa = metric_rows(job("vqa", "kd", 0, 0.5), "d")
    assert [(r["metric"], r["reference"], r["reference_kind"]) for r in vqa] == \
        [("accuracy", 0.2, "majority")] * 2
    vcr = metric_rows(job("vcr", "mad", 0, 0.4), "d")
    assert {(r["metric"], r["reference"]) for r in vcr} == \
        {("q2a", 0.25), ("qa2r", 0.25), ("q2ar", 0.0625)}
    assert {r["n"] for r in vcr} == {10}


def test_summary_is_the_mean_and_sample_std_over_seeds(tmp_path):
    paths = write(tmp_path, [job("ve", "mad", s, v) for s, v in enumerate([0.5, 0.6, 0.7])]
                  + [job("ve", "baseline", 0, 0.4)])
    summary = summarise(collect(paths, "d"))
    mad = summary.filter((summary["method"] == "mad") & (summary["split"] == "test")).row(
        0, named=True)
    assert mad["mean"] == pytest.approx(0.6) and mad["std"] == pytest.approx(0.1)
    assert mad["seeds"] == 3 and mad["n"] == 30
    baseline = summary.filter(summary["method"] == "baseline").row(0, named=True)
    assert baseline["std"] is None and baseline["seeds"] == 1


def test_markdown_puts_methods_in_columns_and_orders_regimes_by_fraction(tmp_path):
    paths = write(tmp_path, [job("vqa", m, 0, v, regime=r)
                             for r in ("full", "lowshot-10", "lowshot-1")
                             for m, v in (("mad", 0.5), ("baseline", 0.4))])
    text = markdown(summarise(collect(paths, "d")))
    lines = [line for line in text.splitlines() if line.startswith("| accuracy")]
    assert text.splitlines()[2].startswith("| metric | regime | split | baseline | mad |")
    assert [line.split(" | ")[1] for line in lines[::2]] == ["lowshot-1", "lowshot-10", "full"]
    assert "| 0.400 | 0.500 | 0.200 (majority) | 30 |" in lines[0]


def test_a_file_that_is_not_a_metrics_file_is_named(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"task": "vqa"}))
    with pytest.raises(ValueError, match="metrics.json"):
        collect([bad], "d")
