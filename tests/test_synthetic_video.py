"""Tests of the synthetic moving-scenes video generator.

Captions are checked independently of the generator: the decoded pixels of every frame (connected
components, their colour, shape, size and centre) and a regex reader of the templates decide what
is true. Every caption and hard negative must parse, so a new template cannot slip through
unchecked. Clips are written as .npy arrays here; the real container writer is tested with the
video I/O module.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from vldistill.data.manifest import SPLITS, TABLES, manifest_path, read_manifest
from vldistill.synthetic.scenes import BACKGROUND_RGB, COLORS, domain_combos, geometry
from vldistill.synthetic.video import (
    MOTION_EVENTS,
    Actor,
    Script,
    SyntheticVideoConfig,
    clip_rng,
    generate_video,
    make_clip,
    negative_script,
    render_clip,
    sample_script,
)

COUNTS = {"train": 30, "val": 6, "test": 6, "test_shifted": 30}
SEED = 11

C = "red|green|blue|yellow|purple|cyan"
S = "circle|square|triangle|diamond"
NAME = rf"(?:(small|large) )?({C}) ({S})"
D = "left|right|up|down"
PHASE = rf"moves (?:{D})|stands still|pauses|stays in place"
VERB = "appears|comes into view|shows up|disappears|goes out of view|vanishes"
APPEARS = {"appears", "comes into view", "shows up"}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SLIDES = {"to the left": "left", "to the right": "right", "upwards": "up", "downwards": "down"}
TRAVELS = {("right", "left"): "left", ("left", "right"): "right",
           ("bottom", "top"): "up", ("top", "bottom"): "down"}


def write_npy(frames: np.ndarray, path: Path, fps: int) -> None:
    """The writer contract with a trivial container; records fps so the test can check it."""
    assert fps == 8
    np.save(path, frames, allow_pickle=False)


def generate(root: Path, seed: int = SEED, **overrides) -> dict:
    cfg = SyntheticVideoConfig(**{"counts": COUNTS, "extension": ".npy", **overrides})
    return generate_video(cfg, root, seed, write_npy, progress=False)


def load(root: Path) -> dict:
    frames = {
        split: {table: read_manifest(manifest_path(root, split, table), table) for table in TABLES}
        for split in SPLITS
    }
    clips = {
        row["image_id"]: {
            "row": row,
            "script": Script.from_json(row["scene"]),
            "frames": np.load(root / row["image_path"]),
        }
        for split in SPLITS
        for row in frames[split]["images"].iter_rows(named=True)
    }
    return {"frames": frames, "clips": clips}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("video")
    summary = generate(root)
    return {"root": root, "summary": summary, **load(root)}


def caption_rows(bench: dict) -> list[dict]:
    return [r for split in SPLITS for r in bench["frames"][split]["captions"].iter_rows(named=True)]


# ---------------------------------------------------------------------------------------------
# an independent reader: pixels decide, regexes read the templates


def decode(frames: np.ndarray, image_size: int = 64) -> list[dict[tuple[str, str], dict]]:
    """Per frame: (colour, shape) -> {"x", "y", "size"} of every object drawn."""
    small = geometry(image_size).radius_small
    background = frames[0, 0, 0]  # objects keep a margin, so a corner is always background
    assert tuple(int(v) for v in background) in BACKGROUND_RGB.values()
    out = []
    for frame in frames:
        labels, n = ndimage.label(np.any(frame != background, axis=-1))
        objects = {}
        for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[rows, cols] == k
            y, x = (rows.start + rows.stop - 1) // 2, (cols.start + cols.stop - 1) // 2
            (color,) = [c for c, rgb in COLORS.items() if tuple(int(v) for v in frame[y, x]) == rgb]
            if mask.all():
                shape = "square"
            elif not (mask == mask[::-1]).all():
                shape = "triangle"
            else:
                shape = "circle" if mask.mean() > 0.65 else "diamond"
            size = "large" if mask.shape[0] > 2 * small + 1 else "small"
            assert (color, shape) not in objects, "two objects share a (colour, shape) pair"
            objects[color, shape] = {"x": x, "y": y, "size": size}
        assert len(objects) == n
        out.append(objects)
    return out


def track(clip: list[dict], size: str | None, color: str, shape: str) -> list[dict | None]:
    states = [frame.get((color, shape)) for frame in clip]
    if size is not None:
        assert all(s is None or s["size"] == size for s in states), "size word is wrong"
    return states


def step(a: dict, b: dict) -> str:
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    if dx == dy == 0:
        return "still"
    if dy == 0:
        return "left" if dx < 0 else "right"
    if dx == 0:
        return "up" if dy < 0 else "down"
    return "diagonal"


def steps(states: list[dict | None]) -> list[str] | None:
    if any(s is None for s in states):
        return None
    return [step(a, b) for a, b in zip(states, states[1:], strict=False)]


def two_runs(seq: list, first: object, second: object) -> bool:
    """``seq`` is a non-empty run of ``first`` followed by a non-empty run of ``second``."""
    return first != second and any(
        seq == [first] * i + [second] * (len(seq) - i) for i in range(1, len(seq))
    )


def phase(text: str) -> str:
    return text.removeprefix("moves ") if text.startswith("moves ") else "still"


def order(clip: list[dict], first: tuple, second: tuple, verb: str) -> bool:
    """``first`` appears (disappears) strictly before ``second``; neither is there throughout."""
    a = [s is not None for s in track(clip, *first)]
    b = [s is not None for s in track(clip, *second)]
    if verb not in APPEARS:
        a, b = [not v for v in a], [not v for v in b]
    return two_runs(a, False, True) and two_runs(b, False, True) and a.index(True) < b.index(True)


def truth(text: str, clip: list[dict]) -> bool:
    """Truth of a caption about decoded frames; fails on a text no template reads."""
    text = re.sub(r"^(?:a clip where |a video in which )", "", text)
    if m := re.fullmatch(rf"the {NAME} (?:moves|goes) ({D})", text):
        return steps(track(clip, *m.groups()[:3])) == [m[4]] * (len(clip) - 1)
    if m := re.fullmatch(rf"the {NAME} slides ({'|'.join(SLIDES)})", text):
        return steps(track(clip, *m.groups()[:3])) == [SLIDES[m[4]]] * (len(clip) - 1)
    if m := re.fullmatch(rf"the {NAME} travels from (\w+) to (\w+)", text):
        direction = TRAVELS[m[4], m[5]]
        return steps(track(clip, *m.groups()[:3])) == [direction] * (len(clip) - 1)
    for pattern in (rf"the {NAME} ({PHASE}) and then ({PHASE})",
                    rf"first the {NAME} ({PHASE}), then it ({PHASE})",
                    rf"the {NAME} ({PHASE}) before it ({PHASE})",
                    rf"the {NAME} ({PHASE}), then ({PHASE})"):
        if m := re.fullmatch(pattern, text):
            moves = steps(track(clip, *m.groups()[:3]))
            return moves is not None and two_runs(moves, phase(m[4]), phase(m[5]))
    if m := re.fullmatch(rf"the {NAME} goes ({D}) and comes back", text):
        moves = steps(track(clip, *m.groups()[:3]))
        return moves is not None and two_runs(moves, m[4], OPPOSITE[m[4]])
    if m := re.fullmatch(rf"(?:the|a) {NAME} (?:suddenly )?({VERB})(?: during the clip)?", text):
        present = [s is not None for s in track(clip, *m.groups()[:3])]
        return two_runs(present, m[4] not in APPEARS, m[4] in APPEARS)
    for pattern, swap in ((rf"first the {NAME} ({VERB}), then the {NAME}", False),
                          (rf"the {NAME} ({VERB}) after the {NAME}", True),
                          (rf"the {NAME} ({VERB}) before the {NAME}", False),
                          (rf"the {NAME} ({VERB}) first, then the {NAME}", False)):
        if m := re.fullmatch(pattern, text):
            a, b = m.groups()[:3], m.groups()[4:]
            return order(clip, *((b, a) if swap else (a, b)), m[4])
    for pattern in (rf"the (?:(small|large) )?({S}) turns from ({C}) to ({C})",
                    rf"the (?:(small|large) )?({S}) changes colour from ({C}) to ({C})",
                    rf"the (?:(small|large) )?({S}) is ({C}) at first and ({C}) later",
                    rf"the (?:(small|large) )?({C}) ({S}) turns ({C})"):
        if m := re.fullmatch(pattern, text):
            size, *rest = m.groups()
            shape, before, after = (rest[1], rest[0], rest[2]) if rest[0] in COLORS else rest
            return colour_change(clip, size, shape, before, after)
    raise AssertionError(f"caption matches no template: {text!r}")


def colour_change(clip: list[dict], size: str | None, shape: str, before: str, after: str) -> bool:
    colours = []
    for frame in clip:
        hits = [(c, s) for (c, sh), s in frame.items() if sh == shape]
        assert len(hits) == 1, f"'the {shape}' does not name one object"
        assert size is None or hits[0][1]["size"] == size
        colours.append(hits[0][0])
    return two_runs(colours, before, after)


# ---------------------------------------------------------------------------------------------
# configuration


def test_config_defaults_and_from_dict() -> None:
    cfg = SyntheticVideoConfig.from_dict({"n_frames": 16, "extension": ".npy"})
    assert (cfg.image_size, cfg.n_frames, cfg.fps, cfg.extension) == (64, 16, 8, ".npy")
    assert set(cfg.counts) == set(SPLITS)
    with pytest.raises(ValueError, match=r"synthetic_video: unknown key\(s\) \['frames'\]"):
        SyntheticVideoConfig.from_dict({"frames": 8})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_frames": 6}, "n_frames"),
        ({"n_frames": 9}, "even"),
        ({"n_frames": 18}, "n_frames"),
        ({"n_frames": True}, "n_frames"),
        ({"fps": 0}, "fps"),
        ({"image_size": 16}, "image_size"),
        ({"max_objects": 4}, "max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"min_objects": 0}, "min_objects"),
        ({"captions_per_clip": -1}, "captions_per_clip"),
        ({"extension": "mkv"}, "extension"),
        ({"extension": "./x.mkv"}, "extension"),
        ({"counts": {"train": 1, "val": 1, "test": 1}}, "lacks split 'test_shifted'"),
        ({"counts": {**COUNTS, "dev": 1}}, "unknown split 'dev'"),
        ({"counts": {**COUNTS, "val": -1}}, "counts"),
    ],
)
def test_config_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticVideoConfig(**kwargs)


def test_config_keeps_a_private_copy_of_counts() -> None:
    counts = dict(COUNTS)
    cfg = SyntheticVideoConfig(counts=counts)
    counts["train"] = 99
    assert cfg.counts["train"] == COUNTS["train"]


# ---------------------------------------------------------------------------------------------
# determinism and independence


def test_same_seed_same_bytes_other_seed_differs(bench: dict, tmp_path: Path) -> None:
    again, other = load_generated(tmp_path / "again", SEED), load_generated(tmp_path / "other", 12)
    for clip_id, clip in bench["clips"].items():
        assert np.array_equal(again["clips"][clip_id]["frames"], clip["frames"])
        assert again["clips"][clip_id]["row"] == clip["row"]
    for split in SPLITS:
        assert again["frames"][split]["captions"].equals(bench["frames"][split]["captions"])
    differ = [
        clip_id for clip_id, clip in bench["clips"].items()
        if not np.array_equal(other["clips"][clip_id]["frames"], clip["frames"])
    ]
    assert len(differ) > 0.8 * len(bench["clips"])
    assert not other["frames"]["train"]["captions"].equals(bench["frames"]["train"]["captions"])


def load_generated(root: Path, seed: int, **overrides) -> dict:
    generate(root, seed, **overrides)
    return load(root)


def test_each_clip_is_independent_of_generation_order(bench: dict, tmp_path: Path) -> None:
    fewer = {"train": 3, "val": 0, "test": 0, "test_shifted": 5}
    small = load_generated(tmp_path, SEED, counts=fewer, captions_per_clip=2)
    assert len(small["clips"]) == 8
    for clip_id, clip in small["clips"].items():
        full = bench["clips"][clip_id]
        # captions come from their own stream: fewer captions change no frame and no script
        assert np.array_equal(clip["frames"], full["frames"])
        assert clip["row"] == full["row"]
        assert clip_id == clip["row"]["image_id"]
    cfg = SyntheticVideoConfig(counts=COUNTS, extension=".npy")
    clip = make_clip(cfg, SEED, "test_shifted", 4)
    assert clip.script == bench["clips"]["test_shifted-000004"]["script"]
    captions = bench["frames"]["test_shifted"]["captions"]
    expected = captions.filter(captions["image_id"] == "test_shifted-000004")
    assert clip.captions == list(zip(expected["caption"], expected["hard_negative"], strict=True))


# ---------------------------------------------------------------------------------------------
# frames


def test_frames_are_the_rendered_scripts(bench: dict) -> None:
    for clip in bench["clips"].values():
        frames = clip["frames"]
        assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
        assert np.array_equal(frames, render_clip(clip["script"], 64))


def test_motion_is_monotonic_and_stops() -> None:
    geo = geometry(64)
    red = Actor("circle", "red", "small", x=geo.centres[2], y=geo.centres[1])
    blue = Actor("square", "blue", "large", x=geo.centres[0], y=geo.centres[0])
    base = Script(event="move", n_frames=10, domain="source", background="light grey",
                  actors=(red, blue), subjects=(0,), direction="left", distance=40)
    clip = decode(render_clip(base, 64))
    xs = [frame["red", "circle"]["x"] for frame in clip]
    assert xs[0] == red.x and xs[-1] == red.x - 40
    assert all(b < a for a, b in zip(xs, xs[1:], strict=False))
    assert {frame["red", "circle"]["y"] for frame in clip} == {red.y}
    assert all(frame["blue", "square"] == clip[0]["blue", "square"] for frame in clip)

    stop = replace(base, event="move_stop", onsets=(4,))
    xs = [frame["red", "circle"]["x"] for frame in decode(render_clip(stop, 64))]
    assert all(b < a for a, b in zip(xs[:5], xs[1:5], strict=False))
    assert xs[4:] == [red.x - 40] * 6

    dual = negative_script(stop)
    assert (dual.event, dual.direction, dual.onsets) == ("stop_move", "right", (5,))
    xs_dual = [frame["red", "circle"]["x"] for frame in decode(render_clip(dual, 64))]
    assert xs_dual == xs[::-1]


# ---------------------------------------------------------------------------------------------
# captions and hard negatives


def test_captions_are_true_and_negatives_false(bench: dict) -> None:
    decoded = {clip_id: decode(c["frames"]) for clip_id, c in bench["clips"].items()}
    duals = {
        clip_id: decode(render_clip(negative_script(c["script"]), 64))
        for clip_id, c in bench["clips"].items()
    }
    for row in caption_rows(bench):
        clip, dual = decoded[row["image_id"]], duals[row["image_id"]]
        assert truth(row["caption"], clip), row
        assert not truth(row["hard_negative"], clip), row
        # the negative is exactly what the dual script shows, and the caption is false there
        assert truth(row["hard_negative"], dual), row
        assert not truth(row["caption"], dual), row


def test_single_frames_cannot_tell_a_caption_from_its_negative(bench: dict) -> None:
    """The negative is true of the dual clip, which shows the clip's frames in another order:
    identical multisets of frames, so every single-frame (or bag-of-frames) score is equal."""

    def frame_multiset(frames: np.ndarray) -> list[bytes]:
        return sorted(frame.tobytes() for frame in frames)

    geo = geometry(64)
    scripts = [c["script"] for c in bench["clips"].values()]
    for n_frames in (8, 10, 12, 14, 16):
        for domain in ("source", "shifted"):
            for index in range(20):
                rng = clip_rng(n_frames, domain, index, "script")
                scripts.append(sample_script(rng, domain, n_frames, 1, 3, geo))
    for script in scripts:
        dual = negative_script(script)
        assert dual != script and negative_script(dual) == script
        frames, dual_frames = render_clip(script, 64), render_clip(dual, 64)
        assert frame_multiset(frames) == frame_multiset(dual_frames), script
        assert not np.array_equal(frames, dual_frames), script  # the order does differ
    assert len({s.event for s in scripts}) == 9


def test_dual_pairs_put_each_clips_time_reversed_twin_beside_it(bench: dict) -> None:
    """Clip 2k + 1 is the dual of clip 2k: the same frames in another order, its captions the
    other's hard negatives, so a gallery holding both can only be ranked right by reading time."""
    def pairs(captions, clip_id: str) -> list[tuple[str, str]]:
        rows = captions.filter(captions["image_id"] == clip_id)
        return list(zip(rows["caption"], rows["hard_negative"], strict=True))

    for split in SPLITS:
        captions = bench["frames"][split]["captions"]
        for index in range(0, COUNTS[split] - 1, 2):
            first, second = f"{split}-{index:06d}", f"{split}-{index + 1:06d}"
            one, two = bench["clips"][first], bench["clips"][second]
            assert two["script"] == negative_script(one["script"])
            assert sorted(f.tobytes() for f in one["frames"]) == \
                sorted(f.tobytes() for f in two["frames"])
            assert pairs(captions, second) == [(n, c) for c, n in pairs(captions, first)]


def test_without_dual_pairs_every_clip_draws_its_own_script(tmp_path: Path) -> None:
    unpaired = load_generated(tmp_path, SEED, dual_pairs=False)
    scripts = [unpaired["clips"][f"train-{i:06d}"]["script"] for i in range(COUNTS["train"])]
    assert not any(scripts[i + 1] == negative_script(scripts[i])
                   for i in range(0, len(scripts) - 1, 2))
    cfg = SyntheticVideoConfig(counts=COUNTS, extension=".npy", dual_pairs=False)
    assert make_clip(cfg, SEED, "train", 4).script == scripts[4]  # even clips are unchanged
    with pytest.raises(ValueError, match="dual_pairs"):
        SyntheticVideoConfig(dual_pairs="yes")


def test_captions_differ_from_negatives_and_each_other(bench: dict) -> None:
    rows = caption_rows(bench)
    assert len(rows) == 5 * len(bench["clips"])
    for row in rows:
        assert row["caption"] and row["hard_negative"] and row["caption"] != row["hard_negative"]
    per_clip = Counter(row["image_id"] for row in rows)
    distinct = Counter(row["image_id"] for row in {(r["image_id"], r["caption"]): r
                                                    for r in rows}.values())
    assert per_clip == distinct


# ---------------------------------------------------------------------------------------------
# manifests, domains, summary


def test_manifests_conform_and_point_at_the_clips(bench: dict) -> None:
    root = bench["root"]
    for split in SPLITS:
        tables = bench["frames"][split]
        images = tables["images"]
        assert images.height == COUNTS[split]
        assert images["image_id"].to_list() == [f"{split}-{i:06d}" for i in range(COUNTS[split])]
        for row in images.iter_rows(named=True):
            assert row["image_path"] == f"videos/{split}/{row['image_id']}.npy"
            assert (root / row["image_path"]).is_file()
            assert (row["width"], row["height"]) == (64, 64)
            assert row["domain"] == ("shifted" if split == "test_shifted" else "source")
            assert json.loads(row["scene"])["event"] == Script.from_json(row["scene"]).event
        assert set(tables["captions"]["image_id"]) == set(images["image_id"])
        assert tables["captions"]["caption_id"].is_unique().all()
        for table in ("vqa", "ve", "vcr"):
            assert tables[table].height == 0
    assert sorted(p.name for p in (root / "videos" / "val").iterdir()) == [
        f"val-{i:06d}.npy" for i in range(COUNTS["val"])
    ]


def test_shifted_domain_holds_out_event_colour_pairs(bench: dict) -> None:
    """Source: motion by red/green/blue subjects, appearance and colour events by
    yellow/purple/cyan ones; shifted: the reverse, with the held-out (colour, shape) pairs and
    the other background of the image generator."""
    seen: dict[str, set[tuple[bool, str]]] = {"source": set(), "shifted": set()}
    for clip in bench["clips"].values():
        script = clip["script"]
        combos = set(domain_combos(script.domain))
        assert all((a.color, a.shape) in combos for a in script.actors)
        assert script.background == ("dark grey" if script.domain == "shifted" else "light grey")
        subjects = [script.actors[i] for i in script.subjects]
        colours = [a.color for a in subjects] + [script.new_color] * (script.new_color is not None)
        motion = script.event in MOTION_EVENTS
        first_group = (script.domain == "source") == motion
        for colour in colours:
            assert (colour in ("red", "green", "blue")) == first_group, script
            seen[script.domain].add((motion, colour))
    assert seen["source"] and seen["shifted"] and not seen["source"] & seen["shifted"]


def test_summary_counts_and_events(bench: dict) -> None:
    summary = bench["summary"]
    assert summary["seed"] == SEED and summary["n_frames"] == 8 and summary["seconds"] >= 0
    for split in SPLITS:
        s = summary["splits"][split]
        assert s["rows"]["images"] == COUNTS[split]
        assert s["rows"]["captions"] == 5 * COUNTS[split]
        assert sum(s["event"].values()) == COUNTS[split]
        assert sum(s["objects_per_clip"].values()) == COUNTS[split]
        events = Counter(c["script"].event for c in bench["clips"].values()
                         if c["row"]["image_id"].startswith(f"{split}-"))
        assert s["event"] == dict(sorted(events.items()))


def test_rejects_a_bad_seed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path, seed=-1)
