"""Synthetic moving scenes: short clips whose captions need time to be right.

A clip shows 1-3 shapes of the synthetic scenes (``scenes.py``) on a background and follows one
event script from a small grammar (``EVENTS``): an object moves, moves and then stands still,
stands still and then moves, goes somewhere and back, appears, disappears, two objects appear (or
disappear) one after the other, or an object changes colour.

Every script has a *dual* (``negative_script``): its time reversal, or for a round trip its
rotation by half the clip. A dual shows exactly the frames of its script in another order, and the
hard negative of each caption is the same caption template said of the dual ("moves left and then
stands still" / "stands still and then moves right"; "first the square appears, then the
triangle" / "first the triangle disappears, then the square"). So no model that sees one frame, or
an unordered bag of frames, can tell a caption from its hard negative. A script and its dual are
drawn with equal probability, so even over the whole dataset the frames that go with a caption
word carry no hint of the order.

Each clip draws from its own random streams, seeded by (seed, split, index, stream), as the image
generator does; the same (cfg, seed) gives identical frames and texts. Clip files are written by a
caller-supplied ``write_clip(frames, path, fps)``; manifests follow ``manifest.py`` with one
``images`` row per clip.
"""

from __future__ import annotations

import json
import re
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from vldistill.config import read_section
from vldistill.data.manifest import SCHEMAS, SPLITS
from vldistill.synthetic.common import (
    check_counts,
    check_image_size,
    check_int,
    check_object_range,
    check_seed,
    item_rng,
    pick,
    tally,
    write_split,
)
from vldistill.synthetic.images import SPLIT_DOMAINS
from vldistill.synthetic.scenes import (
    BACKGROUNDS,
    GRID,
    SIZES,
    Geometry,
    Scene,
    SceneObject,
    domain_combos,
    geometry,
    render,
)

ClipWriter = Callable[[np.ndarray, Path, int], None]

MIN_FRAMES, MAX_FRAMES = 8, 16
MAX_OBJECTS = 3
# each event's dual: the event its time reversal (half-period rotation for a round trip) shows
DUALS: dict[str, str] = {
    "move": "move",
    "move_stop": "stop_move",
    "stop_move": "move_stop",
    "round_trip": "round_trip",
    "appear": "disappear",
    "disappear": "appear",
    "appear_order": "disappear_order",
    "disappear_order": "appear_order",
    "color_change": "color_change",
}
EVENTS: tuple[str, ...] = tuple(DUALS)
MOTION_EVENTS: tuple[str, ...] = ("move", "move_stop", "stop_move", "round_trip")
_VISIBILITY_EVENTS: tuple[str, ...] = ("appear", "disappear", "appear_order", "disappear_order")
# what the sampler draws before a coin flip picks the script or its dual
_BASE_EVENTS: tuple[str, ...] = (
    "move", "move_stop", "round_trip", "appear", "appear_order", "color_change",
)  # fmt: skip
MOTION_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "up": "down", "down": "up"}
# (axis, sign): axis 0 moves x (columns), axis 1 moves y (rows); image y grows downwards
_AXIS: dict[str, tuple[int, int]] = {
    "left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1),
}
# Held-out event x colour pairs: in the source domain motion events are performed by the first
# colour group, appearance and colour events by the second; the shifted domain swaps them.
_COLOR_GROUPS: tuple[tuple[str, ...], ...] = (
    ("red", "green", "blue"), ("yellow", "purple", "cyan"),
)

_STREAMS: dict[str, int] = {"script": 0, "captions": 1}
_EXTENSION = re.compile(r"\.[A-Za-z0-9]+")


def _default_counts() -> dict[str, int]:
    return {"train": 1000, "val": 200, "test": 300, "test_shifted": 300}


_OWNER = "synthetic_video"  # the config section


@dataclass(frozen=True)
class SyntheticVideoConfig:
    image_size: int = 64
    n_frames: int = 8
    fps: int = 8
    counts: dict[str, int] = field(default_factory=_default_counts)
    captions_per_clip: int = 5
    min_objects: int = 1
    max_objects: int = 3
    extension: str = ".mkv"
    # clip 2k + 1 is the dual of clip 2k: the gallery then holds every clip's time-reversed twin
    dual_pairs: bool = True

    def __post_init__(self) -> None:
        # a private copy, so mutating the caller's dict cannot change a frozen config
        object.__setattr__(self, "counts", dict(self.counts))
        check_image_size(_OWNER, self.image_size)
        check_int(_OWNER, "n_frames", self.n_frames, MIN_FRAMES)
        # a round trip's dual is its rotation by half the clip: a permutation of frames only
        # when the clip has an even length
        if self.n_frames > MAX_FRAMES or self.n_frames % 2:
            raise ValueError(
                f"synthetic_video.n_frames: must be even and in {MIN_FRAMES}..{MAX_FRAMES}, "
                f"got {self.n_frames}"
            )
        check_int(_OWNER, "fps", self.fps, 1)
        check_counts(_OWNER, self.counts)
        check_int(_OWNER, "captions_per_clip", self.captions_per_clip, 0)
        check_object_range(_OWNER, self.min_objects, self.max_objects, MAX_OBJECTS, "")
        if not isinstance(self.dual_pairs, bool):
            raise ValueError(f"synthetic_video.dual_pairs: must be true or false, got "
                             f"{self.dual_pairs!r}")
        if not isinstance(self.extension, str) or not _EXTENSION.fullmatch(self.extension):
            raise ValueError(
                f"synthetic_video.extension: must look like '.mkv', got {self.extension!r}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SyntheticVideoConfig:
        return read_section(cls, d, "synthetic_video")


def clip_rng(seed: int, split: str, index: int, stream: str) -> np.random.Generator:
    """The random stream of one clip and one purpose; independent of every other clip."""
    # the trailing tag keeps these streams apart from the image generator's for the same seed
    return item_rng(seed, split, index, _STREAMS[stream], zlib.crc32(b"video"))


# ---------------------------------------------------------------------------------------------
# event scripts


@dataclass(frozen=True)
class Actor:
    """One object of a clip as it is at the first frame (centre in pixels)."""

    shape: str
    color: str
    size: str
    x: int
    y: int


@dataclass(frozen=True)
class Script:
    """One clip's event. ``subjects`` index the actors the event is about, in caption order.

    ``onsets`` by event: move_stop: the frame the motion ends; stop_move: the frame it starts;
    appear: the subject's first visible frame; disappear: its first invisible frame; appear_order
    / disappear_order: those frames for each subject, increasing; color_change: the first frame in
    ``new_color``. Motion events move the subject ``distance`` pixels towards ``direction`` (for
    a round trip: to the turning point, reached at the middle frame).
    """

    event: str
    n_frames: int
    domain: str
    background: str
    actors: tuple[Actor, ...]
    subjects: tuple[int, ...]
    direction: str | None = None
    distance: int = 0
    onsets: tuple[int, ...] = ()
    new_color: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Script:
        d = json.loads(text)
        d["actors"] = tuple(Actor(**a) for a in d["actors"])
        d["subjects"] = tuple(d["subjects"])
        d["onsets"] = tuple(d["onsets"])
        return cls(**d)


def _round_div(num: int, den: int) -> int:
    """floor(num / den + 1/2) in exact integers: ``a + _round_div(d * i, n)`` retraced from the
    other end (``a + d + _round_div(-d * (n - i), n)``) lands on the same pixel, which is what
    makes a reversed motion cross exactly the same positions."""
    return (2 * num + den) // (2 * den)


def _progress(script: Script, t: int) -> tuple[int, int]:
    """The fraction of ``distance`` a motion event has covered at frame ``t``, as (num, den)."""
    last = script.n_frames - 1
    if script.event == "move":
        return t, last
    if script.event == "move_stop":
        (end,) = script.onsets
        return min(t, end), end
    if script.event == "stop_move":
        (begin,) = script.onsets
        return max(0, t - begin), last - begin
    half = script.n_frames // 2  # round trip: a triangle wave over the whole clip
    return half - abs(t - half), half


def _position(script: Script, index: int, t: int) -> tuple[int, int]:
    actor = script.actors[index]
    if script.event not in MOTION_EVENTS or index != script.subjects[0]:
        return actor.x, actor.y
    axis, sign = _AXIS[script.direction or ""]
    num, den = _progress(script, t)
    step = _round_div(sign * script.distance * num, den)
    return (actor.x + step, actor.y) if axis == 0 else (actor.x, actor.y + step)


def _visible(script: Script, index: int, t: int) -> bool:
    if index not in script.subjects or script.event not in _VISIBILITY_EVENTS:
        return True
    onset = script.onsets[script.subjects.index(index)]
    return t >= onset if script.event.startswith("appear") else t < onset


def _color(script: Script, index: int, t: int) -> str:
    actor = script.actors[index]
    if script.event == "color_change" and index == script.subjects[0] and t >= script.onsets[0]:
        return script.new_color or actor.color
    return actor.color


def _nearest_cell(centres: tuple[int, ...], v: int) -> int:
    return min(range(len(centres)), key=lambda i: abs(centres[i] - v))


def frame_scene(script: Script, t: int, geo: Geometry) -> Scene:
    """The visible objects of frame ``t`` as a scene of the image renderer."""
    objects = []
    for i, actor in enumerate(script.actors):
        if not _visible(script, i, t):
            continue
        x, y = _position(script, i, t)
        objects.append(
            SceneObject(
                shape=actor.shape,
                color=_color(script, i, t),
                size=actor.size,
                row=_nearest_cell(geo.centres, y),
                col=_nearest_cell(geo.centres, x),
                cx=x,
                cy=y,
                radius=geo.radius(actor.size),
            )
        )
    return Scene(domain=script.domain, background=script.background, objects=tuple(objects))


def render_clip(script: Script, image_size: int) -> np.ndarray:
    """The clip as uint8 frames [T, H, W, 3]."""
    geo = geometry(image_size)
    return np.stack([render(frame_scene(script, t, geo), image_size)
                     for t in range(script.n_frames)])


def negative_script(script: Script) -> Script:
    """The dual: what the hard negatives describe. Same frames, other order; an involution."""
    n = script.n_frames
    dual = replace(script, event=DUALS[script.event])
    if script.event in MOTION_EVENTS:
        (subject,) = script.subjects
        # reversed, the motion starts where it ended; rotated, a round trip starts at the turn
        turn = n // 2 if script.event == "round_trip" else n - 1
        x, y = _position(script, subject, turn)
        actors = list(script.actors)
        actors[subject] = replace(actors[subject], x=x, y=y)
        onsets = tuple(n - 1 - o for o in script.onsets)  # move_stop <-> stop_move
        return replace(dual, actors=tuple(actors), direction=OPPOSITE[script.direction or ""],
                       onsets=onsets)
    if script.event == "color_change":
        (subject,) = script.subjects
        actors = list(script.actors)
        actors[subject] = replace(actors[subject], color=script.new_color or "")
        return replace(dual, actors=tuple(actors), new_color=script.actors[subject].color,
                       onsets=(n - script.onsets[0],))
    # appearing from frame a, reversed, is disappearing from frame n - a; the order flips
    return replace(dual, subjects=script.subjects[::-1],
                   onsets=tuple(n - o for o in script.onsets[::-1]))


def sample_script(
    rng: np.random.Generator,
    domain: str,
    n_frames: int,
    min_objects: int,
    max_objects: int,
    geo: Geometry,
) -> Script:
    """Draw an event script; the script or its dual with equal probability."""
    n = int(rng.integers(min_objects, max_objects + 1))
    event = pick(rng, [e for e in _BASE_EVENTS if e != "appear_order" or n >= 2])
    group = _COLOR_GROUPS[int(event in MOTION_EVENTS) ^ int(domain == "source")]
    combos = domain_combos(domain)
    # subjects: the event's colour group; every (colour, shape) pair in a clip is distinct
    subject_combos = [c for c in combos if c[0] in group]
    n_subjects = 2 if event == "appear_order" else 1
    subjects = [subject_combos[int(i)]
                for i in rng.choice(len(subject_combos), n_subjects, replace=False)]
    new_color = None
    if event == "color_change":
        color, shape = subjects[0]
        new_color = pick(rng, [c for c in group if c != color and (c, shape) in combos])
    # a colour-changing subject is the only one of its shape, so "the circle" names it
    taken_shapes = {subjects[0][1]} if event == "color_change" else set()
    others = [c for c in combos if c not in subjects and c[1] not in taken_shapes]
    combos_all = subjects + [others[int(i)]
                             for i in rng.choice(len(others), n - n_subjects, replace=False)]

    direction, distance, onsets = None, 0, ()
    if event in MOTION_EVENTS:
        direction = pick(rng, MOTION_DIRECTIONS)
        axis, sign = _AXIS[direction]
        lane = int(rng.integers(GRID))
        start, stop = pick(rng, [(a, b) for a in range(GRID) for b in range(GRID)
                                  if (b - a) * sign > 0])
        # the subject runs along its lane (a row or column); every other object sits outside it
        cell = (lane, start) if axis == 0 else (start, lane)
        free = [(r, c) for r in range(GRID) for c in range(GRID)
                if (r if axis == 0 else c) != lane]
        cells = [cell] + [free[int(i)] for i in rng.choice(len(free), n - 1, replace=False)]
    else:
        cells = [divmod(int(i), GRID) for i in rng.choice(GRID * GRID, n, replace=False)]
    jitter = rng.integers(-geo.jitter, geo.jitter + 1, size=(n, 2))
    sizes = rng.integers(0, len(SIZES), size=n)
    actors = tuple(
        Actor(shape=shape, color=color, size=SIZES[int(s)],
              x=geo.centres[col] + int(jx), y=geo.centres[row] + int(jy))
        for (color, shape), (row, col), s, (jx, jy) in zip(combos_all, cells, sizes, jitter,
                                                           strict=True)
    )
    if event in MOTION_EVENTS:
        start_px = actors[0].x if axis == 0 else actors[0].y
        stop_px = geo.centres[stop] + int(rng.integers(-geo.jitter, geo.jitter + 1))
        distance = abs(stop_px - start_px)
    last = n_frames - 1
    # at least two frames on each side of every change, so each phase is seen
    if event == "move_stop":
        onsets = (int(rng.integers(2, last - 1)),)
    elif event == "appear" or event == "color_change":
        onsets = (int(rng.integers(2, n_frames - 1)),)
    elif event == "appear_order":
        first = int(rng.integers(1, n_frames - 4))
        onsets = (first, int(rng.integers(first + 2, n_frames - 1)))
    script = Script(
        event=event, n_frames=n_frames, domain=domain, background=BACKGROUNDS[domain],
        actors=actors, subjects=tuple(range(n_subjects)), direction=direction,
        distance=distance, onsets=onsets, new_color=new_color,
    )
    return negative_script(script) if rng.random() < 0.5 else script


# ---------------------------------------------------------------------------------------------
# captions

_DIRECTION_PHRASES: dict[str, tuple[str, str]] = {
    # ("slides ...", "travels ...")
    "left": ("to the left", "from right to left"),
    "right": ("to the right", "from left to right"),
    "up": ("upwards", "from bottom to top"),
    "down": ("downwards", "from top to bottom"),
}
_STILL: tuple[str, ...] = ("stands still", "pauses", "stays in place")
_VERBS: dict[str, tuple[str, ...]] = {
    "appear": ("appears", "comes into view", "shows up"),
    "disappear": ("disappears", "goes out of view", "vanishes"),
}
_PREFIXES: tuple[str, ...] = ("", "a clip where ", "a video in which ")


@dataclass(frozen=True)
class _Style:
    """How one caption is said; a hard negative is said the same way, of the dual script."""

    template: int
    phrase: int
    with_size: bool
    prefix: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Style:
        return cls(int(rng.integers(4)), int(rng.integers(3)), bool(rng.random() < 0.3),
                   int(rng.integers(len(_PREFIXES))))


def _name(actor: Actor, style: _Style, color: str | None = None) -> str:
    words = (actor.size,) if style.with_size else ()
    return " ".join((*words, color or actor.color, actor.shape))


def _phases(script: Script) -> tuple[str, str]:
    """The two phases of a two-phase motion, each a direction or ``"still"``."""
    d = script.direction or ""
    if script.event == "move_stop":
        return d, "still"
    if script.event == "stop_move":
        return "still", d
    return d, OPPOSITE[d]


def _sentence(script: Script, style: _Style) -> str:
    k = style.template
    subject = script.actors[script.subjects[0]]
    a = _name(subject, style)
    if script.event == "move":
        d = script.direction or ""
        slide, travel = _DIRECTION_PHRASES[d]
        return (f"the {a} moves {d}", f"the {a} slides {slide}", f"the {a} travels {travel}",
                f"the {a} goes {d}")[k]
    if script.event in MOTION_EVENTS:
        p1, p2 = (_STILL[style.phrase] if p == "still" else f"moves {p}" for p in _phases(script))
        if script.event == "round_trip" and k == 3:
            return f"the {a} goes {script.direction} and comes back"
        return (f"the {a} {p1} and then {p2}", f"first the {a} {p1}, then it {p2}",
                f"the {a} {p1} before it {p2}", f"the {a} {p1}, then {p2}")[k]
    if script.event in ("appear", "disappear"):
        verb = _VERBS[script.event][style.phrase]
        return (f"the {a} {verb}", f"a {a} {verb}", f"the {a} suddenly {verb}",
                f"the {a} {verb} during the clip")[k]
    if script.event in ("appear_order", "disappear_order"):
        verb = _VERBS[script.event.removesuffix("_order")][style.phrase]
        b = _name(script.actors[script.subjects[1]], style)
        return (f"first the {a} {verb}, then the {b}", f"the {b} {verb} after the {a}",
                f"the {a} {verb} before the {b}", f"the {a} {verb} first, then the {b}")[k]
    # color_change: named by shape, which is unique in the clip
    shape = f"{subject.size} {subject.shape}" if style.with_size else subject.shape
    before, after = subject.color, script.new_color
    return (f"the {shape} turns from {before} to {after}",
            f"the {_name(subject, style)} turns {after}",
            f"the {shape} changes colour from {before} to {after}",
            f"the {shape} is {before} at first and {after} later")[k]


def caption_text(script: Script, style: _Style) -> str:
    return _PREFIXES[style.prefix] + _sentence(script, style)


def make_captions(script: Script, rng: np.random.Generator, k: int) -> list[tuple[str, str]]:
    """``k`` (caption, hard negative) pairs: the caption is true of the clip, the negative is the
    same words said of the clip's dual, which shows the same frames in another order."""
    dual = negative_script(script)
    seen: set[str] = set()
    out = []
    for _ in range(k):
        style = _Style.draw(rng)
        for _ in range(30):  # a few tries for a new text, then accept a repeat
            if caption_text(script, style) not in seen:
                break
            style = _Style.draw(rng)
        caption = caption_text(script, style)
        seen.add(caption)
        out.append((caption, caption_text(dual, style)))
    return out


# ---------------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class Clip:
    clip_id: str
    split: str
    script: Script
    captions: list[tuple[str, str]]


def make_clip(cfg: SyntheticVideoConfig, seed: int, split: str, index: int) -> Clip:
    """One clip's script and captions, from its own random streams (no other clip matters).

    With ``dual_pairs`` an odd index is instead the dual of the clip before it, its captions
    that clip's hard negatives and vice versa: the two show the same frames in opposite order,
    so in a gallery holding both, only a model that reads time can rank the right one first (a
    single frame or a bag of frames ties them). An odd count leaves the last clip unpaired."""
    clip_id = f"{split}-{index:06d}"
    if cfg.dual_pairs and index % 2:
        twin = make_clip(cfg, seed, split, index - 1)
        return Clip(clip_id, split, negative_script(twin.script),
                    [(negative, caption) for caption, negative in twin.captions])
    script = sample_script(
        clip_rng(seed, split, index, "script"), SPLIT_DOMAINS[split], cfg.n_frames,
        cfg.min_objects, cfg.max_objects, geometry(cfg.image_size),
    )
    captions = make_captions(script, clip_rng(seed, split, index, "captions"),
                             cfg.captions_per_clip)
    return Clip(clip_id, split, script, captions)


def _split_summary(frames: dict[str, pl.DataFrame]) -> dict[str, Any]:
    scripts = [Script.from_json(s) for s in frames["images"]["scene"].to_list()]
    return {
        "rows": {table: df.height for table, df in frames.items()},
        "domain": tally(frames["images"]["domain"].to_list()),
        "objects_per_clip": tally([len(s.actors) for s in scripts]),
        "event": tally([s.event for s in scripts]),
    }


def generate_video(
    cfg: SyntheticVideoConfig,
    root: str | Path,
    seed: int,
    write_clip: ClipWriter,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the clips (through ``write_clip``) and every split's manifests under ``root``; return
    a summary (counts, event tallies, seconds). The non-caption task tables are written empty."""
    seed = check_seed(seed)
    start = time.perf_counter()
    root = Path(root)
    summary: dict[str, Any] = {
        "seed": seed, "image_size": cfg.image_size, "n_frames": cfg.n_frames, "fps": cfg.fps,
        "splits": {},
    }
    with tqdm(total=sum(cfg.counts.values()), desc="synthetic video", unit="clip",
              file=sys.stderr, disable=not progress) as bar:
        for split in SPLITS:
            (root / "videos" / split).mkdir(parents=True, exist_ok=True)
            rows: dict[str, list[dict[str, Any]]] = {table: [] for table in SCHEMAS}
            for index in range(cfg.counts[split]):
                clip = make_clip(cfg, seed, split, index)
                key = {"image_id": clip.clip_id,
                       "image_path": f"videos/{split}/{clip.clip_id}{cfg.extension}"}
                write_clip(render_clip(clip.script, cfg.image_size), root / key["image_path"],
                           cfg.fps)
                rows["images"].append({**key, "domain": clip.script.domain,
                                       "width": cfg.image_size, "height": cfg.image_size,
                                       "scene": clip.script.to_json()})
                rows["captions"] += [
                    {**key, "caption_id": f"{clip.clip_id}-c{k}", "caption": caption,
                     "hard_negative": negative}
                    for k, (caption, negative) in enumerate(clip.captions)
                ]
                bar.update(1)
            summary["splits"][split] = _split_summary(write_split(root, split, rows))
    summary["counts"] = {split: s["rows"] for split, s in summary["splits"].items()}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
