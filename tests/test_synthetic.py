"""Tests of the synthetic scenes benchmark.

Labels are checked independently of the generator: the decoded pixels (connected components,
centre colours) and a small regex checker below, written against the scene JSON, decide what is
true. Every text the checker meets must parse, so a new template cannot slip through unchecked.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from scipy import ndimage

from vldistill.data.manifest import SPLITS, TABLES, VE_LABELS, manifest_path, read_manifest
from vldistill.synthetic.images import SyntheticConfig, generate
from vldistill.synthetic.scenes import COLORS

COUNTS = {"train": 40, "val": 40, "test": 40, "test_shifted": 40}
SOURCE_SPLITS = ("train", "val", "test")

C = "red|green|blue|yellow|purple|cyan"
S = "circle|square|triangle|diamond"
NP = rf"(?:(small|large) )?({C}) ({S})"
REL = "to the left of|left of|to the right of|right of|above|below"
BG = "light grey|dark grey"
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = {w: i for i, w in enumerate(NUMBERS)} | {"no": 0}


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("synthetic")
    cfg = SyntheticConfig(counts=COUNTS)
    summary = generate(cfg, root, seed=7, progress=False)
    frames = {
        split: {table: read_manifest(manifest_path(root, split, table), table) for table in TABLES}
        for split in SPLITS
    }
    images = {
        row["image_id"]: {
            "scene": json.loads(row["scene"]),
            "domain": row["domain"],
            "pixels": np.asarray(Image.open(root / row["image_path"]).convert("RGB")),
        }
        for split in SPLITS
        for row in frames[split]["images"].iter_rows(named=True)
    }
    return {"root": root, "cfg": cfg, "summary": summary, "frames": frames, "images": images}


def rows(bench: dict, table: str, splits: tuple[str, ...] = SPLITS) -> list[dict]:
    return [r for split in splits for r in bench["frames"][split][table].iter_rows(named=True)]


# ---------------------------------------------------------------------------------------------
# an independent checker: pixels and scene JSON decide, regexes read the templates


def components(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    background = pixels[0, 0]  # objects keep a margin, so a corner is always background
    labels, n = ndimage.label(np.any(pixels != background, axis=-1))
    return labels, n


def colour_name(rgb: np.ndarray) -> str:
    matches = [name for name, value in COLORS.items() if tuple(int(v) for v in rgb) == value]
    assert len(matches) == 1, f"pixel {rgb} is no palette colour"
    return matches[0]


def find(scene: dict, color: str, shape: str, size: str | None = None) -> dict | None:
    hits = [
        o
        for o in scene["objects"]
        if o["color"] == color and o["shape"] == shape and size in (None, o["size"])
    ]
    assert len(hits) <= 1, "two objects share a (colour, shape) pair"
    return hits[0] if hits else None


def left(a: dict, b: dict) -> bool:
    return a["col"] < b["col"]


def above(a: dict, b: dict) -> bool:
    return a["row"] < b["row"]


def relation(a: dict | None, rel: str, b: dict | None) -> bool:
    if a is None or b is None:
        return False
    if "left" in rel:
        return left(a, b)
    if "right" in rel:
        return left(b, a)
    return above(a, b) if rel == "above" else above(b, a)


def others(scene: dict, a: dict) -> list[dict]:
    return [o for o in scene["objects"] if o is not a]


def truth(text: str, scene: dict) -> bool | None:
    """Truth of an observable caption or hypothesis; None when no template matches."""
    if m := re.fullmatch(rf"(?:there is )?(?:a|the) {NP} (?:is )?({REL}) (?:a|the) {NP}", text):
        sa, ca, sha, rel, sb, cb, shb = m.groups()
        return relation(find(scene, ca, sha, sa), rel, find(scene, cb, shb, sb))
    if m := re.fullmatch(rf"there is a {NP}", text):
        return find(scene, m[2], m[3], m[1]) is not None
    if m := re.fullmatch(r"there (?:is|are) (\w+) shapes?", text):
        return WORDS[m[1]] == len(scene["objects"])
    if m := re.fullmatch(rf"there (?:is|are) (\w+) ({C}) shapes?", text):
        return WORDS[m[1]] == sum(o["color"] == m[2] for o in scene["objects"])
    if m := re.fullmatch(rf"(\w+) (?:colored )?shapes? on a ({BG}) background", text):
        return WORDS[m[1]] == len(scene["objects"]) and m[2] == scene["background"]
    if m := re.fullmatch(rf"a ({BG}) background with (\w+) shapes?", text):
        return WORDS[m[2]] == len(scene["objects"]) and m[1] == scene["background"]
    return list_truth(text, scene)


def list_truth(text: str, scene: dict) -> bool | None:
    """"[a picture of |an image showing ]a NP, a NP and a NP[ on a BG background]"."""
    body = re.sub(r"^(?:a picture of |an image showing )", "", text)
    background_ok = True
    if m := re.fullmatch(rf"(.*) on a ({BG}) background", body):
        body, background_ok = m[1], m[2] == scene["background"]
    parts = re.split(r", | and ", body)
    matches = [re.fullmatch(rf"a {NP}", p) for p in parts]
    if not all(matches):
        return None
    return background_ok and all(find(scene, m[2], m[3], m[1]) is not None for m in matches)


def hypothesis_truth(text: str, scene: dict) -> bool | None:
    """Truth of a VE hypothesis, whose definite descriptions presuppose their objects: None
    (undecidable) where one names no object of the scene."""
    if m := re.fullmatch(rf"the {NP} is ({REL}) the {NP}", text):
        sa, ca, sha, rel, sb, cb, shb = m.groups()
        a, b = find(scene, ca, sha, sa), find(scene, cb, shb, sb)
        return None if a is None or b is None else relation(a, rel, b)
    if m := re.fullmatch(rf"the {NP} is (small|large)", text):
        obj = find(scene, m[2], m[3], m[1])
        return None if obj is None else obj["size"] == m[4]
    raise AssertionError(f"hypothesis matches no template: {text!r}")


def rationale_truth(text: str, scene: dict, pixels: np.ndarray) -> bool:
    objs = scene["objects"]
    column = rf"the ({C}) ({S}) is in a column further (left|right) than the ({C}) ({S})"
    if m := re.fullmatch(column, text):
        return relation(find(scene, m[1], m[2]), m[3], find(scene, m[4], m[5]))
    if m := re.fullmatch(rf"the ({C}) ({S}) is in a row (higher|lower) than the ({C}) ({S})", text):
        rel = "above" if m[3] == "higher" else "below"
        return relation(find(scene, m[1], m[2]), rel, find(scene, m[4], m[5]))
    if m := re.fullmatch(rf"the ({C}) ({S}) is in the same (row|column) as the ({C}) ({S})", text):
        a, b, key = find(scene, m[1], m[2]), find(scene, m[4], m[5]), m[3][:3]
        return a is not None and b is not None and a[key] == b[key]
    if m := re.fullmatch(
        rf"the ({C}) ({S}) is (higher|lower|further left|further right) than every other shape",
        text,
    ):
        a = find(scene, m[1], m[2])
        rel = {"higher": "above", "lower": "below", "further left": "left"}.get(m[3], "right")
        return a is not None and all(relation(a, rel, o) for o in others(scene, a))
    if m := re.fullmatch(
        rf"the ({C}) ({S}) is (small|large) and every other shape is (small|large)", text
    ):
        a = find(scene, m[1], m[2])
        return (
            a is not None
            and a["size"] == m[3]
            and all(o["size"] == m[4] for o in others(scene, a))
        )
    if m := re.fullmatch(rf"the ({C}) ({S}) is the same size as the ({C}) ({S})", text):
        a, b = find(scene, m[1], m[2]), find(scene, m[3], m[4])
        return a is not None and b is not None and a["size"] == b["size"]
    if m := re.fullmatch(rf"the ({S}) is filled with ({C})", text):
        (obj,) = [o for o in objs if o["shape"] == m[1]]
        return colour_name(pixels[obj["cy"], obj["cx"]]) == m[2]
    if m := re.fullmatch(rf"there is no ({C}) shape in the picture", text):
        return all(o["color"] != m[1] for o in objs)
    if m := re.fullmatch(rf"the ({C}) object has the outline of a ({S})", text):
        (obj,) = [o for o in objs if o["color"] == m[1]]
        return obj["shape"] == m[2]
    if m := re.fullmatch(rf"there is no ({S}) in the picture", text):
        return all(o["shape"] != m[1] for o in objs)
    if m := re.fullmatch(r"the picture shows (\w+) separate shapes?", text):
        return WORDS[m[1]] == components(pixels)[1]
    raise AssertionError(f"rationale matches no template: {text!r}")


def vcr_correct(question: str, scene: dict) -> set[str]:
    """Every answer text that is right for a VCR question."""
    objs = scene["objects"]

    def names(found: list[dict]) -> set[str]:
        return {f"the {o['color']} {o['shape']}" for o in found}

    if m := re.fullmatch(rf"which object is ({REL}) the ({C}) ({S})\?", question):
        x = find(scene, m[2], m[3])
        return names([o for o in objs if o is not x and relation(o, m[1], x)])
    extremes = {
        "which object is highest in the picture?": "above",
        "which object is lowest in the picture?": "below",
        "which object is furthest to the left?": "left",
        "which object is furthest to the right?": "right",
    }
    if question in extremes:
        rel = extremes[question]
        return names([a for a in objs if all(relation(a, rel, o) for o in others(scene, a))])
    if m := re.fullmatch(r"which object is the (largest|biggest|smallest)\?", question):
        size = "small" if m[1] == "smallest" else "large"
        # sizes are binary: the largest is the one large object among small ones
        owners = [o for o in objs if o["size"] == size]
        return names(owners) if len(owners) == 1 and len(objs) >= 2 else set()
    if question == "what color is the only shape?":
        assert len(objs) == 1
        return {objs[0]["color"]}
    if m := re.fullmatch(rf"what color is the ({S})\?", question):
        return {o["color"] for o in objs if o["shape"] == m[1]}
    if m := re.fullmatch(rf"what shape is the ({C}) object\?", question):
        return {o["shape"] for o in objs if o["color"] == m[1]}
    if question == "how many shapes are in the picture?":
        return {NUMBERS[len(objs)]}
    raise AssertionError(f"VCR question matches no template: {question!r}")


def normalise(answer: str) -> str:
    answer = answer.strip().lower().strip(".!?,")
    return str(NUMBERS.index(answer)) if answer in NUMBERS else answer


# ---------------------------------------------------------------------------------------------
# 1. determinism


def files_of(root: Path) -> dict[str, bytes]:
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = SyntheticConfig(counts={"train": 12, "val": 4, "test": 4, "test_shifted": 8})
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(cfg, tmp_path / name, seed=seed, progress=False)
    a, b, c = (files_of(tmp_path / name) for name in "abc")
    assert len(a) == 28 + len(SPLITS) * len(TABLES)
    assert a == b
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in pngs) > len(pngs) // 2


def test_an_image_does_not_depend_on_generation_order(tmp_path: Path) -> None:
    small = SyntheticConfig(counts={"train": 3, "val": 1, "test": 1, "test_shifted": 1})
    large = SyntheticConfig(counts={"train": 9, "val": 1, "test": 1, "test_shifted": 1})
    generate(small, tmp_path / "small", seed=5, progress=False)
    generate(large, tmp_path / "large", seed=5, progress=False)
    for i in range(3):
        path = f"images/train/train-{i:06d}.png"
        assert (tmp_path / "small" / path).read_bytes() == (tmp_path / "large" / path).read_bytes()
    captions = [
        pl.read_parquet(manifest_path(tmp_path / d, "train", "captions")).head(3 * 5)
        for d in ("small", "large")
    ]
    assert captions[0].equals(captions[1])


# ---------------------------------------------------------------------------------------------
# 2. labels are correct


def test_scene_json_matches_pixels(bench: dict) -> None:
    for image_id, image in bench["images"].items():
        scene, pixels = image["scene"], image["pixels"]
        labels, n = components(pixels)
        assert n == len(scene["objects"]), image_id
        # one component per object, holding its centre, in the object's colour throughout
        assert sorted(labels[o["cy"], o["cx"]] for o in scene["objects"]) == list(range(1, n + 1))
        for obj in scene["objects"]:
            component = pixels[labels == labels[obj["cy"], obj["cx"]]]
            assert (component == COLORS[obj["color"]]).all(), image_id


def test_count_answers_match_connected_components(bench: dict) -> None:
    checked = Counter()
    for row in rows(bench, "vqa"):
        if row["question_type"] != "count":
            continue
        image = bench["images"][row["image_id"]]
        labels, n = components(image["pixels"])
        gold = row["multiple_choice_answer"]
        assert gold.isdigit()
        q = row["question"]
        if re.fullmatch(r"how many (?:shapes|objects) are (?:there|in the picture)\?", q):
            expected, kind = n, "all"
        elif m := re.fullmatch(rf"how many ({C}) (?:objects|shapes) are there\?", q):
            # count components drawn in that colour, straight from the pixels
            drawn = [colour_name(image["pixels"][labels == k][0]) for k in range(1, n + 1)]
            expected, kind = drawn.count(m[1]), "color"
        elif m := re.fullmatch(rf"how many ({S})s are there\?", q):
            expected, kind = sum(o["shape"] == m[1] for o in image["scene"]["objects"]), "shape"
        else:
            raise AssertionError(f"count question matches no template: {q!r}")
        assert int(gold) == expected, (row["question_id"], q)
        checked[kind] += 1
    assert checked["all"] > 20 and checked["color"] > 5 and checked["shape"] > 5


def test_color_and_shape_answers(bench: dict) -> None:
    checked = Counter()
    for row in rows(bench, "vqa"):
        image = bench["images"][row["image_id"]]
        objs = image["scene"]["objects"]
        if m := re.fullmatch(rf"what color is the ({S})\?", row["question"]):
            (obj,) = [o for o in objs if o["shape"] == m[1]]  # the shape is unique
            expected = colour_name(image["pixels"][obj["cy"], obj["cx"]])
        elif m := re.fullmatch(rf"what shape is the ({C}) (?:object|one)\?", row["question"]):
            (obj,) = [o for o in objs if o["color"] == m[1]]
            expected = obj["shape"]
        else:
            continue
        assert row["answer_type"] == "other"
        assert row["multiple_choice_answer"] == expected, row["question_id"]
        checked[row["question_type"]] += 1
    assert checked["color"] > 10 and checked["shape"] > 10


def test_yes_no_answers_are_correct(bench: dict) -> None:
    checked = Counter()
    for row in rows(bench, "vqa"):
        if row["answer_type"] != "yes/no":
            continue
        scene = bench["images"][row["image_id"]]["scene"]
        q = row["question"]
        if m := re.fullmatch(rf"is there a ({C}) ({S})(?: in the picture)?\?", q):
            value = find(scene, m[1], m[2]) is not None
        elif m := re.fullmatch(rf"is the ({C}) ({S}) ({REL}) the ({C}) ({S})\?", q):
            value = relation(find(scene, m[1], m[2]), m[3], find(scene, m[4], m[5]))
        else:
            raise AssertionError(f"yes/no question matches no template: {q!r}")
        assert row["multiple_choice_answer"] == ("yes" if value else "no"), row["question_id"]
        checked[row["question_type"]] += 1
    assert checked["exist"] > 20 and checked["relation"] > 20


def test_majority_answer_is_the_normalised_mode(bench: dict) -> None:
    noisy = 0
    for row in rows(bench, "vqa"):
        votes = Counter(normalise(a) for a in row["answers"])
        assert votes[row["multiple_choice_answer"]] > len(row["answers"]) / 2, row["question_id"]
        noisy += len(votes) > 1
    assert noisy > 0  # annotator noise and surface variants do occur
    assert any(a == "two" for r in rows(bench, "vqa") for a in r["answers"])


def test_entailment_true_contradiction_false_neutral_undecidable(bench: dict) -> None:
    expected = {"entailment": True, "contradiction": False, "neutral": None}
    seen = Counter()
    for row in rows(bench, "ve"):
        scene = bench["images"][row["image_id"]]["scene"]
        value = hypothesis_truth(row["hypothesis"], scene)
        assert value is expected[row["label"]], (row["pair_id"], row["hypothesis"], row["label"])
        seen[row["label"], "is large" in row["hypothesis"] or "is small" in row["hypothesis"]] += 1
    assert all(seen[label, size] > 10 for label in expected for size in (True, False)), seen


def test_captions_true_and_hard_negatives_false(bench: dict) -> None:
    relational = multi = 0
    for row in rows(bench, "captions"):
        scene = bench["images"][row["image_id"]]["scene"]
        caption, negative = row["caption"], row["hard_negative"]
        assert truth(caption, scene) is True, (row["caption_id"], caption)
        assert truth(negative, scene) is False, (row["caption_id"], negative)
        # a minimal edit: same length, one or two words changed
        a, b = caption.split(), negative.split()
        assert len(a) == len(b) and 1 <= sum(x != y for x, y in zip(a, b, strict=True)) <= 2
        if len(scene["objects"]) >= 2:
            multi += 1
            relational += bool(re.search(rf" ({REL}) ", caption))
    assert relational > 0.3 * multi


def test_vcr_answers_and_rationales(bench: dict) -> None:
    templates = Counter()
    for row in rows(bench, "vcr"):
        image = bench["images"][row["image_id"]]
        answers, rationales = row["answers"], row["rationales"]
        assert len(set(answers)) == 4 and len(set(rationales)) == 4
        correct = vcr_correct(row["question"], image["scene"])
        assert [a in correct for a in answers] == [i == row["answer_label"] for i in range(4)]
        truths = [rationale_truth(r, image["scene"], image["pixels"]) for r in rationales]
        assert truths == [i == row["rationale_label"] for i in range(4)], row["item_id"]
        assert answers[row["answer_label"]] in rationales[row["rationale_label"]]
        templates[row["question"].split()[1]] += 1
    assert len(templates) >= 2  # object ("which object ...") and attribute ("what color ...")


# ---------------------------------------------------------------------------------------------
# 3. class balance


def test_class_balance(bench: dict) -> None:
    ve = pl.concat([bench["frames"][s]["ve"] for s in SPLITS])
    per_image = ve.group_by("image_id").agg(
        [(pl.col("label") == label).sum().alias(label) for label in VE_LABELS]
    )
    k = bench["cfg"].ve_per_image // len(VE_LABELS)
    assert per_image.height == sum(COUNTS.values())
    assert (per_image.select(VE_LABELS).to_numpy() == k).all()
    vqa = rows(bench, "vqa")
    for qtype in ("exist", "relation"):
        answers = [r["multiple_choice_answer"] for r in vqa if r["question_type"] == qtype]
        assert 0.3 < answers.count("yes") / len(answers) < 0.7, qtype
    vcr = rows(bench, "vcr")
    assert {r["answer_label"] for r in vcr} == {0, 1, 2, 3}
    assert {r["rationale_label"] for r in vcr} == {0, 1, 2, 3}


# ---------------------------------------------------------------------------------------------
# 4. domain split


def test_domains_are_disjoint(bench: dict) -> None:
    def combos(splits: tuple[str, ...]) -> set[tuple[str, str]]:
        return {
            (o["shape"], o["color"])
            for r in rows(bench, "images", splits)
            for o in json.loads(r["scene"])["objects"]
        }

    source, shifted = combos(SOURCE_SPLITS), combos(("test_shifted",))
    assert source and shifted and not source & shifted
    # every shape and colour still occurs on both sides: only their pairing shifts
    assert {s for s, _ in source} == {s for s, _ in shifted}
    assert {c for _, c in source} == {c for _, c in shifted}
    backgrounds = {
        split: {json.loads(s)["background"] for s in bench["frames"][split]["images"]["scene"]}
        for split in SPLITS
    }
    assert all(len(b) == 1 for b in backgrounds.values())
    assert backgrounds["train"] == backgrounds["val"] == backgrounds["test"]
    assert backgrounds["train"] != backgrounds["test_shifted"]
    corner = {image["domain"]: tuple(image["pixels"][0, 0]) for image in bench["images"].values()}
    assert set(corner) == {"source", "shifted"} and corner["source"] != corner["shifted"]
    for split in SPLITS:
        expected = "shifted" if split == "test_shifted" else "source"
        assert set(bench["frames"][split]["images"]["domain"]) == {expected}


# ---------------------------------------------------------------------------------------------
# 5. schema and configuration


def test_manifests_and_ids(bench: dict) -> None:
    cfg, root = bench["cfg"], bench["root"]
    per_image = {
        "captions": (cfg.captions_per_image, "caption_id", "c"),
        "vqa": (cfg.vqa_per_image, "question_id", "q"),
        "ve": (cfg.ve_per_image, "pair_id", "e"),
        "vcr": (cfg.vcr_per_image, "item_id", "r"),
    }
    for split in SPLITS:
        images = bench["frames"][split]["images"]
        assert images["image_id"].to_list() == [f"{split}-{i:06d}" for i in range(COUNTS[split])]
        assert (images["width"] == cfg.image_size).all() and (images["height"] == 64).all()
        for path in images["image_path"]:
            assert path.startswith(f"images/{split}/") and (root / path).is_file()
        for table, (k, id_column, tag) in per_image.items():
            df = bench["frames"][split][table]
            assert df.height == k * COUNTS[split]
            expected = [f"{i}-{tag}{j}" for i in images["image_id"] for j in range(k)]
            assert df[id_column].to_list() == expected
        assert set(bench["frames"][split]["vqa"]["answers"].list.len()) == {
            cfg.answers_per_question
        }
        vcr = bench["frames"][split]["vcr"]
        assert set(vcr["answers"].list.len()) == {4} and set(vcr["rationales"].list.len()) == {4}
    summary = bench["summary"]
    assert summary["counts"]["train"]["captions"] == 5 * COUNTS["train"]
    assert summary["splits"]["val"]["ve_label"]["neutral"] == COUNTS["val"]
    json.dumps(summary)  # the pipeline stores it as JSON


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="ve_per_image"):
        SyntheticConfig(ve_per_image=4)
    with pytest.raises(ValueError, match="bogus_key"):
        SyntheticConfig.from_dict({"image_size": 64, "bogus_key": 1})
    with pytest.raises(ValueError, match="'holdout'"):
        SyntheticConfig(counts={**COUNTS, "holdout": 3})
    with pytest.raises(ValueError, match="max_objects"):
        SyntheticConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=16)
    cfg = SyntheticConfig.from_dict({"image_size": 64, "counts": COUNTS})
    assert cfg.counts == COUNTS and cfg.ve_per_image == 3


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = SyntheticConfig(counts={"train": 2, "val": 1, "test": 1, "test_shifted": 1})
    generate(cfg, tmp_path, seed=0, progress=True)
    captured = capsys.readouterr()
    assert "synthetic scenes" in captured.err and captured.out == ""
