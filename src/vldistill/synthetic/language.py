"""Templated, paraphrased language about a synthetic scene: captions with hard negatives, VQA,
visual entailment and VCR items.

Observable statements are built as small claims (``Exists``, ``Related``, ``Count``), checked
against the scene with ``holds`` and only then turned into text, so every label is right by
construction. False statements are minimal edits of true claims (swap two objects' colours or
shapes, flip a relation, change a colour, shape, size or count) that ``holds`` confirms false.
Edits that keep every named (colour, shape) pair inside the scene's domain are preferred, so a
model cannot spot a negative just because it names a combination the domain never shows.

Visual-entailment hypotheses speak of objects by definite description ("the red circle is left
of the blue square"), which presupposes that the object is there. A claim whose description
names no object of the scene is neither true nor false of it (``holds`` says None): that is what
a neutral hypothesis is, so all three labels share one set of templates and words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from vldistill.synthetic.common import pick
from vldistill.synthetic.scenes import COLORS, SHAPES, SIZES, Scene, SceneObject, domain_combos

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)  # fmt: skip
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
# paraphrases of each relation; a flip keeps the paraphrase index so the edit stays minimal
REL_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below",),
}


# ---------------------------------------------------------------------------------------------
# claims


@dataclass(frozen=True)
class Ref:
    """A noun phrase naming one object: colour and shape, optionally its size."""

    color: str
    shape: str
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            obj.color == self.color
            and obj.shape == self.shape
            and (self.size is None or obj.size == self.size)
        )

    def text(self) -> str:
        words = (self.size, self.color, self.shape) if self.size else (self.color, self.shape)
        return " ".join(words)


@dataclass(frozen=True)
class Exists:
    """Every named object is in the scene."""

    refs: tuple[Ref, ...]


@dataclass(frozen=True)
class Related:
    """Object ``a`` stands in relation ``rel`` to object ``b``.

    ``definite`` ("the a is left of the b"): ``a`` and ``b`` are presupposed, so the claim is
    undecided where either names no object; otherwise ("a a left of a b") it asserts them."""

    a: Ref
    rel: str
    b: Ref
    definite: bool = False


@dataclass(frozen=True)
class HasSize:
    """The object ``ref`` names (presupposed, as in "the red circle is large") has ``size``."""

    ref: Ref
    size: str


@dataclass(frozen=True)
class Count:
    """The scene has exactly ``n`` objects (of ``color`` when given)."""

    n: int
    color: str | None = None


Claim = Exists | Related | Count | HasSize


def related(a: SceneObject, rel: str, b: SceneObject) -> bool:
    """Relations are defined on grid cells: left of = smaller column, above = smaller row."""
    if rel == "left":
        return a.col < b.col
    if rel == "right":
        return a.col > b.col
    if rel == "above":
        return a.row < b.row
    if rel == "below":
        return a.row > b.row
    raise ValueError(f"unknown relation {rel!r}")


def referent(r: Ref, scene: Scene) -> SceneObject | None:
    """The one object a definite description names; None where it names none (or several)."""
    hits = [o for o in scene.objects if r.matches(o)]
    return hits[0] if len(hits) == 1 else None


def holds(claim: Claim, scene: Scene) -> bool | None:
    """Whether the claim is true of the scene; None where it presupposes an object the scene
    does not have, so the scene decides it neither way."""
    objs = scene.objects
    if isinstance(claim, HasSize):
        obj = referent(claim.ref, scene)
        return None if obj is None else obj.size == claim.size
    if isinstance(claim, Related) and claim.definite:
        x, y = referent(claim.a, scene), referent(claim.b, scene)
        if x is None or y is None:
            return None
        return x is not y and related(x, claim.rel, y)
    if isinstance(claim, Exists):
        return all(any(ref.matches(o) for o in objs) for ref in claim.refs)
    if isinstance(claim, Related):
        return any(
            claim.a.matches(x) and claim.b.matches(y) and x is not y and related(x, claim.rel, y)
            for x in objs
            for y in objs
        )
    return sum(claim.color is None or o.color == claim.color for o in objs) == claim.n


def ref(obj: SceneObject, with_size: bool = False) -> Ref:
    return Ref(obj.color, obj.shape, obj.size if with_size else None)


def _refs(claim: Claim) -> tuple[Ref, ...]:
    if isinstance(claim, Exists):
        return claim.refs
    if isinstance(claim, Related):
        return (claim.a, claim.b)
    if isinstance(claim, HasSize):
        return (claim.ref,)
    return ()


def _edits(claim: Claim, count_floor: int) -> dict[str, list[Claim]]:
    """Minimal edits of a claim, grouped by kind; some may still be true and are filtered later."""
    if isinstance(claim, HasSize):
        return {"resize": [replace(claim, size=SIZES[1 - SIZES.index(claim.size)])]}
    if isinstance(claim, Count):
        lower = [claim.n - 1] if claim.n - 1 >= count_floor else []
        return {"recount": [replace(claim, n=n) for n in (*lower, claim.n + 1)]}
    if isinstance(claim, Related):
        a, b = claim.a, claim.b
        return {
            "flip": [replace(claim, rel=OPPOSITE[claim.rel])],
            "swap_color": [
                replace(claim, a=replace(a, color=b.color), b=replace(b, color=a.color))
            ],
            "swap_shape": [
                replace(claim, a=replace(a, shape=b.shape), b=replace(b, shape=a.shape))
            ],
        }
    refs = claim.refs
    edits: dict[str, list[Claim]] = {
        "swap_color": [],
        "swap_shape": [],
        "recolor": [],
        "reshape": [],
        "resize": [],
    }

    def with_refs(changes: dict[int, Ref]) -> Exists:
        return Exists(tuple(changes.get(i, r) for i, r in enumerate(refs)))

    for i, ri in enumerate(refs):
        for j in range(i + 1, len(refs)):
            rj = refs[j]
            edits["swap_color"].append(
                with_refs({i: replace(ri, color=rj.color), j: replace(rj, color=ri.color)})
            )
            edits["swap_shape"].append(
                with_refs({i: replace(ri, shape=rj.shape), j: replace(rj, shape=ri.shape)})
            )
        edits["recolor"] += [with_refs({i: replace(ri, color=c)}) for c in COLORS if c != ri.color]
        edits["reshape"] += [with_refs({i: replace(ri, shape=s)}) for s in SHAPES if s != ri.shape]
        if ri.size is not None:
            other = SIZES[1 - SIZES.index(ri.size)]
            edits["resize"].append(with_refs({i: replace(ri, size=other)}))
    return edits


def false_edit(
    claim: Claim, scene: Scene, rng: np.random.Generator, say: Callable[[Claim], str]
) -> Claim:
    """A minimal edit of a true claim that is false for the scene and reads differently."""
    original = say(claim)
    floor = 1 if isinstance(claim, Count) and claim.color is None else 0
    combos = set(domain_combos(scene.domain))
    valid = {
        kind: [c for c in cands if holds(c, scene) is False and say(c) != original]
        for kind, cands in _edits(claim, floor).items()
    }
    in_domain = {
        kind: [c for c in cands if all((r.color, r.shape) in combos for r in _refs(c))]
        for kind, cands in valid.items()
    }
    pool = in_domain if any(in_domain.values()) else valid
    kinds = [kind for kind, cands in pool.items() if cands]
    if not kinds:
        raise RuntimeError(f"no false edit of {claim} for scene {scene}")
    cands = pool[kinds[int(rng.integers(len(kinds)))]]
    return cands[int(rng.integers(len(cands)))]


# ---------------------------------------------------------------------------------------------
# shared helpers


def _weighted(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    weights = np.array([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _plural(n: int, noun: str) -> str:
    return f"{_number(n)} {noun}" if n == 1 else f"{_number(n)} {noun}s"


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _random_pair(scene: Scene, rng: np.random.Generator) -> tuple[SceneObject, SceneObject]:
    i, j = rng.choice(len(scene.objects), size=2, replace=False)
    return scene.objects[int(i)], scene.objects[int(j)]


def _true_relation(scene: Scene, rng: np.random.Generator, p_size: float = 0.0) -> Related:
    a, b = _random_pair(scene, rng)
    rel = pick(rng, [r for r in RELATIONS if related(a, r, b)])  # distinct cells: never empty
    return Related(ref(a, rng.random() < p_size), rel, ref(b, rng.random() < p_size))


def _absent_combos(scene: Scene) -> list[tuple[str, str]]:
    present = {(o.color, o.shape) for o in scene.objects}
    return [c for c in domain_combos(scene.domain) if c not in present]


def _unique(make: Callable[[], tuple], key: Callable[[tuple], str], seen: set[str]) -> tuple:
    """Draw until the item's text is new for this image (a few tries, then accept a repeat)."""
    item = make()
    for _ in range(30):
        if key(item) not in seen:
            break
        item = make()
    seen.add(key(item))
    return item


# ---------------------------------------------------------------------------------------------
# captions


def caption_text(claim: Claim, style: int, background: str) -> str:
    """A COCO-like caption; ``style`` picks the paraphrase and is reused for the hard negative."""
    if isinstance(claim, Related):
        prefix = ("", "there is ")[style % 2]
        phrase = REL_PHRASES[claim.rel][(style // 2) % len(REL_PHRASES[claim.rel])]
        return f"{prefix}a {claim.a.text()} {phrase} a {claim.b.text()}"
    if isinstance(claim, Exists):
        prefix = ("", "a picture of ", "an image showing ")[style % 3]
        suffix = f" on a {background} background" if (style // 3) % 2 else ""
        return prefix + _join([f"a {r.text()}" for r in claim.refs]) + suffix
    templates = (
        "{shapes} on a {bg} background",
        "{colored} on a {bg} background",
        "a {bg} background with {shapes}",
    )
    return templates[style % len(templates)].format(
        shapes=_plural(claim.n, "shape"), colored=_plural(claim.n, "colored shape"), bg=background
    )


def _caption_claim(scene: Scene, rng: np.random.Generator) -> Claim:
    n = len(scene.objects)
    if n >= 2:
        kind = _weighted(rng, {"relation": 0.5, "list": 0.3, "count": 0.2})
    else:
        kind = _weighted(rng, {"list": 0.6, "count": 0.4})
    if kind == "relation":
        return _true_relation(scene, rng, p_size=0.3)
    if kind == "count":
        return Count(n)
    k = int(rng.integers(2, min(n, 3) + 1)) if n >= 2 else 1
    chosen = rng.choice(n, size=k, replace=False)
    return Exists(tuple(ref(scene.objects[int(i)], rng.random() < 0.4) for i in chosen))


def names_background(claim: Claim, style: int) -> bool:
    """Whether ``caption_text(claim, style, ...)`` mentions the background (then it is part of
    what the caption claims)."""
    if isinstance(claim, Related):
        return False
    if isinstance(claim, Exists):
        return bool((style // 3) % 2)
    return True


@dataclass(frozen=True)
class Caption:
    text: str
    hard_negative: str
    claim: Claim  # what the text says; true of its scene
    background: str | None  # the background the text names, if it names one


def make_captions(scene: Scene, rng: np.random.Generator, k: int) -> list[Caption]:
    """``k`` captions with hard negatives; the caption is true, the negative a false edit."""

    def draw() -> tuple[Claim, int]:
        return _caption_claim(scene, rng), int(rng.integers(1 << 16))

    def say_with(style: int) -> Callable[[Claim], str]:
        return lambda c: caption_text(c, style, scene.background)

    seen: set[str] = set()
    out = []
    for _ in range(k):
        claim, style = _unique(draw, lambda item: say_with(item[1])(item[0]), seen)
        say = say_with(style)
        background = scene.background if names_background(claim, style) else None
        out.append(Caption(say(claim), say(false_edit(claim, scene, rng, say)), claim, background))
    return out


# ---------------------------------------------------------------------------------------------
# visual entailment

VE_KINDS = {"relation": 0.5, "size": 0.5}  # relations need two objects; else size


def hypothesis_text(claim: Claim, style: int = 0) -> str:
    if isinstance(claim, HasSize):
        return f"the {claim.ref.text()} is {claim.size}"
    if isinstance(claim, Exists):
        return _join([f"there is a {r.text()}" for r in claim.refs])
    if isinstance(claim, Related):
        phrase = REL_PHRASES[claim.rel][style % len(REL_PHRASES[claim.rel])]
        return f"the {claim.a.text()} is {phrase} the {claim.b.text()}"
    noun = "shape" if claim.color is None else f"{claim.color} shape"
    if claim.n == 0:
        return f"there are no {noun}s"
    return f"there is one {noun}" if claim.n == 1 else f"there are {_plural(claim.n, noun)}"


VE_TRUTH: dict[str, bool | None] = {"entailment": True, "contradiction": False, "neutral": None}


def ve_claim(scene: Scene, rng: np.random.Generator, label: str) -> Claim:
    """A hypothesis claim with the label's truth value, in a template drawn apart from the label.

    Entailment: a true claim about objects in the scene. Contradiction: its minimal false edit
    (the relation flipped, the other size). Neutral: the same true claim with one of its objects
    replaced by one the scene does not have (a combination of its own domain), so the scene
    cannot decide it. Templates, relations, sizes and the named (colour, shape) pairs are then
    distributed alike under every label: the hypothesis alone does not tell the labels apart.
    """
    kinds = dict(VE_KINDS) if len(scene.objects) >= 2 else {"size": 1.0}
    if _weighted(rng, kinds) == "relation":
        claim: Claim = replace(_true_relation(scene, rng), definite=True)
    else:
        obj = pick(rng, scene.objects)
        claim = HasSize(ref(obj), obj.size)
    stand_in = Ref(*pick(rng, _absent_combos(scene)))  # drawn for every label alike
    if label == "contradiction":
        claim = pick(rng, _edits(claim, 0)["flip" if isinstance(claim, Related) else "resize"])
    elif label == "neutral":
        if isinstance(claim, HasSize):
            claim = HasSize(stand_in, pick(rng, SIZES))
        elif rng.random() < 0.5:
            claim = replace(claim, a=stand_in)
        else:
            claim = replace(claim, b=stand_in)
    if holds(claim, scene) is not VE_TRUTH[label]:
        raise RuntimeError(f"{label} hypothesis {claim} has the wrong truth for scene {scene}")
    return claim


def make_ve(scene: Scene, rng: np.random.Generator, k: int) -> list[tuple[str, str]]:
    """``k`` (hypothesis, label) pairs, ``k / 3`` of each label, in random order."""
    labels = ["entailment", "neutral", "contradiction"] * (k // 3)
    labels = [labels[int(i)] for i in rng.permutation(len(labels))]
    seen: set[str] = set()
    out = []
    for label in labels:
        def draw(lab: str = label) -> tuple[str]:
            return (hypothesis_text(ve_claim(scene, rng, lab), int(rng.integers(1 << 16))),)

        (text,) = _unique(draw, lambda t: t[0], seen)
        out.append((text, label))
    return out


# ---------------------------------------------------------------------------------------------
# VQA

ANSWER_TYPES: dict[str, str] = {
    "count": "number",
    "color": "other",
    "shape": "other",
    "exist": "yes/no",
    "relation": "yes/no",
}
_WORD_TO_DIGIT = {w: str(i) for i, w in enumerate(NUMBER_WORDS)}


def answer_group_key(text: str) -> str:
    """Case, surrounding punctuation and number words; enough to group annotator answers."""
    text = text.strip().lower().strip(".,!?;:'\" ")
    return _WORD_TO_DIGIT.get(text, text)


@dataclass(frozen=True)
class VqaItem:
    question: str
    question_type: str
    answer_type: str
    answers: tuple[str, ...]
    multiple_choice_answer: str


def _surface_variants(gold: str) -> list[str]:
    """Spellings that normalise to the gold answer, as real annotators write them."""
    if gold.isdigit():
        return [_number(int(gold))] if int(gold) < len(NUMBER_WORDS) else [gold]
    return [gold.capitalize(), f"{gold}.", f"{gold}!"]


def annotate(
    gold: str, wrong: Sequence[str], rng: np.random.Generator, n: int, noise: float
) -> tuple[tuple[str, ...], str]:
    """``n`` annotator answers and the majority answer after normalisation.

    Each annotator errs with probability ``noise``; errors are capped below half so the gold
    answer keeps a strict majority and the benchmark's labels stay correct.
    """
    errs = np.flatnonzero(rng.random(n) < noise)[: (n - 1) // 2]
    is_wrong = np.zeros(n, dtype=bool)
    is_wrong[errs] = True
    variants = _surface_variants(gold)
    answers = []
    for bad in is_wrong:
        if bad:
            answers.append(pick(rng, wrong))
        elif rng.random() < 0.3:
            answers.append(pick(rng, variants))
        else:
            answers.append(gold)
    counts = Counter(answer_group_key(a) for a in answers)
    order = {a: i for i, a in reversed(list(enumerate(answer_group_key(a) for a in answers)))}
    majority = min(counts, key=lambda a: (-counts[a], order[a]))
    return tuple(answers), majority


def _count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, int]:
    objs = scene.objects
    kind = _weighted(rng, {"all": 0.5, "color": 0.3, "shape": 0.2})
    if kind == "all":
        question = pick(
            rng,
            (
                "how many shapes are there?",
                "how many objects are there?",
                "how many shapes are in the picture?",
            ),
        )
        return question, len(objs)
    if kind == "color":
        # mostly colours in the scene, sometimes any colour so that "0" occurs
        color = pick(rng, [o.color for o in objs] if rng.random() < 0.7 else list(COLORS))
        noun = pick(rng, ("objects", "shapes"))
        return f"how many {color} {noun} are there?", sum(o.color == color for o in objs)
    shape = pick(rng, [o.shape for o in objs] if rng.random() < 0.7 else list(SHAPES))
    return f"how many {shape}s are there?", sum(o.shape == shape for o in objs)


def _vqa_question(scene: Scene, rng: np.random.Generator, qtype: str) -> tuple[str, str, list[str]]:
    """(question, gold answer, wrong answers of the same type)."""
    objs = scene.objects
    if qtype == "count":
        question, n = _count_question(scene, rng)
        wrong = [str(v) for v in range(max(0, n - 2), n + 3) if v != n]
        return question, str(n), wrong
    if qtype == "color":
        obj = pick(rng, _unique_by(objs, "shape"))
        wrong = [c for c in COLORS if c != obj.color]
        return f"what color is the {obj.shape}?", obj.color, wrong
    if qtype == "shape":
        obj = pick(rng, _unique_by(objs, "color"))
        noun = pick(rng, ("object", "one"))
        wrong = [s for s in SHAPES if s != obj.shape]
        return f"what shape is the {obj.color} {noun}?", obj.shape, wrong
    answer_yes = bool(rng.random() < 0.5)
    if qtype == "exist":
        present = ref(pick(rng, objs))
        target = present if answer_yes else Ref(*pick(rng, _absent_combos(scene)))
        where = pick(rng, ("", " in the picture"))
        question = f"is there a {target.text()}{where}?"
        assert holds(Exists((target,)), scene) == answer_yes
    else:
        a, b = _random_pair(scene, rng)
        rel = pick(rng, [r for r in RELATIONS if related(a, r, b) == answer_yes])
        phrase = pick(rng, REL_PHRASES[rel])
        question = f"is the {ref(a).text()} {phrase} the {ref(b).text()}?"
    gold = "yes" if answer_yes else "no"
    return question, gold, ["no" if answer_yes else "yes"]


def _unique_by(objs: Sequence[SceneObject], attribute: str) -> list[SceneObject]:
    """Objects whose shape (or colour) no other object shares, so "the circle" is one object."""
    values = Counter(getattr(o, attribute) for o in objs)
    return [o for o in objs if values[getattr(o, attribute)] == 1]


def make_vqa(
    scene: Scene, rng: np.random.Generator, k: int, n_answers: int, noise: float
) -> list[VqaItem]:
    qtypes = ["count", "exist"]
    if _unique_by(scene.objects, "shape"):
        qtypes.append("color")
    if _unique_by(scene.objects, "color"):
        qtypes.append("shape")
    if len(scene.objects) >= 2:
        qtypes.append("relation")
    seen: set[str] = set()
    out = []
    for _ in range(k):
        qtype = pick(rng, qtypes)
        question, gold, wrong = _unique(
            lambda q=qtype: _vqa_question(scene, rng, q), lambda item: item[0], seen
        )
        answers, majority = annotate(gold, wrong, rng, n_answers, noise)
        out.append(VqaItem(question, qtype, ANSWER_TYPES[qtype], answers, majority))
    return out


# ---------------------------------------------------------------------------------------------
# VCR


@dataclass(frozen=True)
class VcrItem:
    question: str
    answers: tuple[str, ...]
    rationales: tuple[str, ...]
    answer_label: int
    rationale_label: int


@dataclass(frozen=True)
class _VcrPlan:
    """The right answer and rationale first; the three distractors of each follow."""

    question: str
    answers: tuple[str, ...]
    rationales: tuple[str, ...]


_VCR_REL_QUESTION = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
_VCR_REL_RATIONALE = {
    "left": "in a column further left than",
    "right": "in a column further right than",
    "above": "in a row higher than",
    "below": "in a row lower than",
}
_EXTREME_QUESTION = {
    "top": "which object is highest in the picture?",
    "bottom": "which object is lowest in the picture?",
    "left": "which object is furthest to the left?",
    "right": "which object is furthest to the right?",
}
_EXTREME_PHRASE = {
    "top": "higher",
    "bottom": "lower",
    "left": "further left",
    "right": "further right",
}
_EXTREME_OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
_SIZE_QUESTION = {
    "large": ("which object is the largest?", "which object is the biggest?"),
    "small": ("which object is the smallest?",),
}


def _the(obj: SceneObject | tuple[str, str]) -> str:
    color, shape = (obj.color, obj.shape) if isinstance(obj, SceneObject) else obj
    return f"the {color} {shape}"


def _wrong_objects(
    scene: Scene, rng: np.random.Generator, exclude: Sequence[SceneObject]
) -> list[tuple[str, str]]:
    """Three plausible wrong answers: up to two present objects, the rest absent ones."""
    present = [(o.color, o.shape) for o in scene.objects if o not in exclude]
    absent = _absent_combos(scene)
    present = [present[int(i)] for i in rng.permutation(len(present))][:2]
    absent = [absent[int(i)] for i in rng.permutation(len(absent))]
    return present + absent[: 3 - len(present)]


def _extreme_key(obj: SceneObject, direction: str) -> int:
    return {"top": obj.row, "bottom": -obj.row, "left": obj.col, "right": -obj.col}[direction]


def _relation_plans(scene: Scene, rng: np.random.Generator) -> list[Callable[[], _VcrPlan]]:
    plans = []
    for x in scene.objects:
        for rel in RELATIONS:
            sat = [o for o in scene.objects if o is not x and related(o, rel, x)]
            if len(sat) == 1:
                plans.append(lambda a=sat[0], x=x, rel=rel: _relation_plan(scene, rng, a, rel, x))
    return plans


def _relation_plan(
    scene: Scene, rng: np.random.Generator, a: SceneObject, rel: str, x: SceneObject
) -> _VcrPlan:
    wrong = _wrong_objects(scene, rng, exclude=(a, x))
    axis = "column" if rel in ("left", "right") else "row"
    return _VcrPlan(
        question=f"which object is {_VCR_REL_QUESTION[rel]} {_the(x)}?",
        answers=(_the(a), *(_the(w) for w in wrong)),
        rationales=(
            f"{_the(a)} is {_VCR_REL_RATIONALE[rel]} {_the(x)}",
            f"{_the(a)} is {_VCR_REL_RATIONALE[OPPOSITE[rel]]} {_the(x)}",
            f"{_the(a)} is in the same {axis} as {_the(x)}",
            f"{_the(pick(rng, wrong))} is {_VCR_REL_RATIONALE[rel]} {_the(x)}",
        ),
    )


def _extreme_plans(scene: Scene, rng: np.random.Generator) -> list[Callable[[], _VcrPlan]]:
    if len(scene.objects) < 2:
        return []
    plans = []
    for direction in _EXTREME_QUESTION:
        best = min(_extreme_key(o, direction) for o in scene.objects)
        winners = [o for o in scene.objects if _extreme_key(o, direction) == best]
        if len(winners) == 1:
            plans.append(lambda a=winners[0], d=direction: _extreme_plan(scene, rng, a, d))
    return plans


def _extreme_plan(
    scene: Scene, rng: np.random.Generator, a: SceneObject, direction: str
) -> _VcrPlan:
    wrong = _wrong_objects(scene, rng, exclude=(a,))
    other = pick(rng, [o for o in scene.objects if o is not a])
    axis = "row" if direction in ("top", "bottom") else "column"
    phrase = _EXTREME_PHRASE[direction]
    return _VcrPlan(
        question=_EXTREME_QUESTION[direction],
        answers=(_the(a), *(_the(w) for w in wrong)),
        rationales=(
            f"{_the(a)} is {phrase} than every other shape",
            f"{_the(a)} is {_EXTREME_PHRASE[_EXTREME_OPPOSITE[direction]]} than every other shape",
            f"{_the(a)} is in the same {axis} as {_the(other)}",
            f"{_the(pick(rng, wrong))} is {phrase} than every other shape",
        ),
    )


def _size_plans(scene: Scene, rng: np.random.Generator) -> list[Callable[[], _VcrPlan]]:
    if len(scene.objects) < 2:
        return []
    plans = []
    for size in SIZES:
        owners = [o for o in scene.objects if o.size == size]
        if len(owners) == 1:
            plans.append(lambda a=owners[0], s=size: _size_plan(scene, rng, a, s))
    return plans


def _size_plan(scene: Scene, rng: np.random.Generator, a: SceneObject, size: str) -> _VcrPlan:
    wrong = _wrong_objects(scene, rng, exclude=(a,))
    other = pick(rng, [o for o in scene.objects if o is not a])
    rest = SIZES[1 - SIZES.index(size)]
    return _VcrPlan(
        question=pick(rng, _SIZE_QUESTION[size]),
        answers=(_the(a), *(_the(w) for w in wrong)),
        rationales=(
            f"{_the(a)} is {size} and every other shape is {rest}",
            f"{_the(a)} is {rest} and every other shape is {size}",
            f"{_the(a)} is the same size as {_the(other)}",
            f"{_the(pick(rng, wrong))} is {size} and every other shape is {rest}",
        ),
    )


def _wrong_values(
    rng: np.random.Generator, in_scene: list[str], vocab: Sequence[str], right: str
) -> list[str]:
    """Three wrong attribute values: those seen in the scene first (plausible at a glance)."""
    seen = list(dict.fromkeys(v for v in in_scene if v != right))
    seen = [seen[int(i)] for i in rng.permutation(len(seen))]
    others = [v for v in vocab if v != right and v not in seen]
    others = [others[int(i)] for i in rng.permutation(len(others))]
    return (seen + others)[:3]


def _color_plans(scene: Scene, rng: np.random.Generator) -> list[Callable[[], _VcrPlan]]:
    return [lambda a=a: _color_plan(scene, rng, a) for a in _unique_by(scene.objects, "shape")]


def _color_plan(scene: Scene, rng: np.random.Generator, a: SceneObject) -> _VcrPlan:
    wrong = _wrong_values(rng, [o.color for o in scene.objects], COLORS, right=a.color)
    subject = "the only shape" if len(scene.objects) == 1 else f"the {a.shape}"
    return _VcrPlan(
        question=f"what color is {subject}?",
        answers=(a.color, *wrong),
        rationales=(
            f"the {a.shape} is filled with {a.color}",
            f"the {a.shape} is filled with {wrong[0]}",
            f"the {a.shape} is filled with {wrong[1]}",
            f"there is no {a.color} shape in the picture",
        ),
    )


def _shape_plans(scene: Scene, rng: np.random.Generator) -> list[Callable[[], _VcrPlan]]:
    return [lambda a=a: _shape_plan(scene, rng, a) for a in _unique_by(scene.objects, "color")]


def _shape_plan(scene: Scene, rng: np.random.Generator, a: SceneObject) -> _VcrPlan:
    wrong = _wrong_values(rng, [o.shape for o in scene.objects], SHAPES, right=a.shape)
    return _VcrPlan(
        question=f"what shape is the {a.color} object?",
        answers=(a.shape, *wrong),
        rationales=(
            f"the {a.color} object has the outline of a {a.shape}",
            f"the {a.color} object has the outline of a {wrong[0]}",
            f"the {a.color} object has the outline of a {wrong[1]}",
            f"there is no {a.shape} in the picture",
        ),
    )


def _count_plan(scene: Scene, rng: np.random.Generator) -> _VcrPlan:
    """The fallback every scene supports (e.g. four shapes in a 2x2 block of the grid)."""
    n = len(scene.objects)
    near = [v for v in range(n - 3, n + 4) if v >= 1 and v != n]
    near.sort(key=lambda v: abs(v - n))
    wrong = [near[int(i)] for i in rng.permutation(4)][:3]
    return _VcrPlan(
        question="how many shapes are in the picture?",
        answers=(_number(n), *(_number(v) for v in wrong)),
        rationales=tuple(
            f"the picture shows {_plural(v, 'separate shape')}" for v in (n, *wrong)
        ),
    )


def _place(rng: np.random.Generator, right: str, wrong: Sequence[str]) -> tuple[list[str], int]:
    """The right candidate at a uniform position, the distractors in random order around it."""
    label = int(rng.integers(4))
    order = [wrong[int(i)] for i in rng.permutation(len(wrong))]
    order.insert(label, right)
    return order, label


# spatial reasoning first; the attribute questions keep single-object scenes covered
_VCR_WEIGHTS = {"relation": 0.35, "extreme": 0.25, "size": 0.15, "color": 0.125, "shape": 0.125}


def make_vcr(scene: Scene, rng: np.random.Generator, k: int) -> list[VcrItem]:
    families = {
        "relation": _relation_plans(scene, rng),
        "extreme": _extreme_plans(scene, rng),
        "size": _size_plans(scene, rng),
        "color": _color_plans(scene, rng),
        "shape": _shape_plans(scene, rng),
    }
    weights = {kind: _VCR_WEIGHTS[kind] for kind, plans in families.items() if plans}
    if not weights:
        families["count"] = [lambda: _count_plan(scene, rng)]
        weights = {"count": 1.0}

    def draw() -> tuple[_VcrPlan]:
        return (pick(rng, families[_weighted(rng, weights)])(),)

    seen: set[str] = set()
    out = []
    for _ in range(k):
        (plan,) = _unique(draw, lambda item: item[0].question, seen)
        answers, answer_label = _place(rng, plan.answers[0], plan.answers[1:])
        rationales, rationale_label = _place(rng, plan.rationales[0], plan.rationales[1:])
        out.append(
            VcrItem(plan.question, tuple(answers), tuple(rationales), answer_label, rationale_label)
        )
    return out
