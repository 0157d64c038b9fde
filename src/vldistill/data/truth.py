"""Which captions are true of which images: the check every image-text negative passes first.

A caption drawn for one image is often true of another (a count caption such as "three shapes
on a light grey background" fits hundreds of scenes), so "another image's caption" is not a
negative by itself. The synthetic generator stores each caption's claim (``claims.claim_to_json``)
and each image's scene, so truth is decided exactly: the claim holds in the other scene. Where no
claim is known (real datasets, clips), a caption counts as true of an image only when the image
has a caption with the same text, the standard assumption for human-written captions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import polars as pl
import torch

from vldistill.synthetic.language import Claim, Count, Exists, HasSize, Ref, Related, holds
from vldistill.synthetic.scenes import Scene, SceneObject


def _ref_json(r: Ref) -> list:
    return [r.color, r.shape, r.size]


def _ref(values: list) -> Ref:
    return Ref(values[0], values[1], values[2])


def claim_to_json(claim: Claim, background: str | None) -> str:
    """A caption's meaning as JSON; ``background`` is set when the text names it."""
    if isinstance(claim, Exists):
        body: dict = {"kind": "exists", "refs": [_ref_json(r) for r in claim.refs]}
    elif isinstance(claim, Related):
        body = {"kind": "related", "a": _ref_json(claim.a), "rel": claim.rel,
                "b": _ref_json(claim.b)}
        if claim.definite:  # only hypotheses are; captions keep their bytes
            body["definite"] = True
    elif isinstance(claim, HasSize):
        body = {"kind": "has_size", "ref": _ref_json(claim.ref), "size": claim.size}
    else:
        body = {"kind": "count", "n": claim.n, "color": claim.color}
    return json.dumps({**body, "background": background})


def claim_from_json(text: str) -> tuple[Claim, str | None]:
    d = json.loads(text)
    if d["kind"] == "exists":
        claim: Claim = Exists(tuple(_ref(r) for r in d["refs"]))
    elif d["kind"] == "related":
        claim = Related(_ref(d["a"]), d["rel"], _ref(d["b"]), d.get("definite", False))
    elif d["kind"] == "has_size":
        claim = HasSize(_ref(d["ref"]), d["size"])
    elif d["kind"] == "count":
        claim = Count(d["n"], d["color"])
    else:
        raise ValueError(f"unknown claim kind {d['kind']!r} in {text!r}")
    return claim, d["background"]


def scene_from_json(text: str, domain: str) -> Scene:
    d = json.loads(text)
    return Scene(domain=domain, background=d["background"],
                 objects=tuple(SceneObject(**o) for o in d["objects"]))


@dataclass
class CaptionTruth:
    """``matrix(caption_rows, image_rows)[a, b]``: caption a is true of image b.

    Caption rows index the captions manifest; image rows index the images manifest (the same
    order as the image bank). Decided by claim and scene where both are known, else by text.
    """

    claims: list[tuple[Claim, str | None] | None]
    scenes: list[Scene | None]
    texts: list[str]
    texts_of_image: list[set[str]]
    own_image: list[int]
    _memo: dict[tuple[int, int], bool] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, captions: pl.DataFrame, images: pl.DataFrame) -> CaptionTruth:
        row_of = {image_id: i for i, image_id in enumerate(images["image_id"].to_list())}
        own = [row_of[i] for i in captions["image_id"].to_list()]
        texts = captions["caption"].to_list()
        by_image: dict[int, set[str]] = defaultdict(set)
        for text, row in zip(texts, own, strict=True):
            by_image[row].add(text)
        claim_column = (captions["claim"].to_list() if "claim" in captions.columns
                        else [None] * len(texts))
        claims = [claim_from_json(c) if c is not None else None for c in claim_column]
        scenes = [scene_from_json(s, d) if s is not None and any(claims) else None
                  for s, d in zip(images["scene"].to_list(), images["domain"].to_list(),
                                  strict=True)]
        return cls(claims, scenes, texts, [by_image[i] for i in range(len(images))], own)

    def is_true(self, caption: int, image: int) -> bool:
        key = (caption, image)
        if key not in self._memo:
            self._memo[key] = self._decide(caption, image)
        return self._memo[key]

    def _decide(self, caption: int, image: int) -> bool:
        if image == self.own_image[caption]:
            return True
        known = self.claims[caption]
        scene = self.scenes[image]
        if known is None or scene is None:
            return self.texts[caption] in self.texts_of_image[image]
        claim, background = known
        return ((background is None or background == scene.background)
                and holds(claim, scene) is True)

    def images_true_of(self, caption: int) -> int:
        """How many of the images a caption is true of (its own included)."""
        if self.claims[caption] is None:  # by text: the images with this exact caption
            return sum(self.texts[caption] in texts for texts in self.texts_of_image)
        return sum(self.is_true(caption, image) for image in range(len(self.scenes)))

    def matrix(self, caption_rows: torch.Tensor, image_rows: torch.Tensor) -> torch.Tensor:
        """[len(caption_rows), len(image_rows)] bool, on the inputs' device."""
        cells = [[self.is_true(c, i) for i in image_rows.tolist()] for c in caption_rows.tolist()]
        return torch.tensor(cells, dtype=torch.bool, device=caption_rows.device).view(
            len(caption_rows), len(image_rows))
