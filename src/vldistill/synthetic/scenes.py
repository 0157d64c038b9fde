"""Scenes of the synthetic benchmark: vocabulary, the two domains, sampling and rendering.

A scene holds 1..N flat shapes, each in its own cell of a 3x3 grid (with a little jitter), each
with a distinct (colour, shape) pair so a phrase like "the red circle" always names one object.
Shapes never touch, so the connected components of non-background pixels are exactly the objects,
and they are drawn without antialiasing, so every object's centre pixel has its exact colour.

Domains follow CLEVR-CoGenT: colours and shapes are split into two groups each; the source domain
pairs colour group i with shape group i, the shifted domain pairs it with the other shape group, and
the shifted domain also has a different background. The two sets of combinations are disjoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "cyan": (40, 200, 210),
}
SIZES: tuple[str, ...] = ("small", "large")
DOMAINS: tuple[str, ...] = ("source", "shifted")
BACKGROUNDS: dict[str, str] = {"source": "light grey", "shifted": "dark grey"}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "light grey": (200, 200, 200),
    "dark grey": (64, 64, 64),
}
GRID = 3
MIN_IMAGE_SIZE = 32

_COLOR_GROUPS = (("red", "green", "blue"), ("yellow", "purple", "cyan"))
_SHAPE_GROUPS = (("circle", "square"), ("triangle", "diamond"))


def domain_combos(domain: str) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs a domain draws from; source and shifted are disjoint halves."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    swap = int(domain == "shifted")
    return tuple(
        (color, shape)
        for group, colors in enumerate(_COLOR_GROUPS)
        for color in colors
        for shape in _SHAPE_GROUPS[group ^ swap]
    )


@dataclass(frozen=True)
class Geometry:
    """Pixel layout for one image size: object radii, jitter and the grid's cell centres."""

    image_size: int
    radius_small: int
    radius_large: int
    jitter: int
    centres: tuple[int, ...]

    def radius(self, size: str) -> int:
        return self.radius_large if size == "large" else self.radius_small


def geometry(image_size: int) -> Geometry:
    """Radii and jitter scaled to the image, checked so that objects can never touch."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    centres = tuple(int((i + 0.5) * image_size / GRID) for i in range(GRID))
    geo = Geometry(
        image_size=image_size,
        radius_small=max(2, round(image_size * 0.065)),
        radius_large=int(image_size * 0.11),
        jitter=int(image_size * 0.03),
        centres=centres,
    )
    reach = geo.jitter + geo.radius_large
    step = min(b - a for a, b in zip(centres, centres[1:], strict=False))
    # at least two empty pixels between neighbours and one to the border keep components apart
    if step - 2 * reach - 1 < 2 or centres[0] - reach < 1 or centres[-1] + reach > image_size - 2:
        raise ValueError(f"image_size {image_size} leaves no room between grid cells")
    return geo


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int
    cx: int
    cy: int
    radius: int


@dataclass(frozen=True)
class Scene:
    domain: str
    background: str
    objects: tuple[SceneObject, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"background": self.background, "objects": [asdict(o) for o in self.objects]}
        )


def sample_scene(
    rng: np.random.Generator, domain: str, min_objects: int, max_objects: int, geo: Geometry
) -> Scene:
    """Draw a scene: object count, distinct (colour, shape) pairs, distinct cells, sizes."""
    combos = domain_combos(domain)
    n = int(rng.integers(min_objects, max_objects + 1))
    picks = rng.choice(len(combos), size=n, replace=False)
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    sizes = rng.integers(0, len(SIZES), size=n)
    jitter = rng.integers(-geo.jitter, geo.jitter + 1, size=(n, 2))
    objects = []
    for pick, cell, size_index, (jx, jy) in zip(picks, cells, sizes, jitter, strict=True):
        color, shape = combos[int(pick)]
        row, col = divmod(int(cell), GRID)
        size = SIZES[int(size_index)]
        objects.append(
            SceneObject(
                shape=shape,
                color=color,
                size=size,
                row=row,
                col=col,
                cx=geo.centres[col] + int(jx),
                cy=geo.centres[row] + int(jy),
                radius=geo.radius(size),
            )
        )
    # reading order makes the scene JSON easy to eyeball; nothing depends on it
    objects.sort(key=lambda o: (o.row, o.col))
    return Scene(domain=domain, background=BACKGROUNDS[domain], objects=tuple(objects))


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: int) -> np.ndarray:
    """Pixels of a shape centred at (0, 0); every mask lies within [-r, r] and holds the centre."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r + r  # "+ r" rounds off the single-pixel tips
    if shape == "square":
        half = round(r * 0.85)  # about the circle's area
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        # apex up, symmetric about the centre column so every row is one run through dx == 0
        return (2 * np.abs(dx) <= dy + r) & (dy <= r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, image_size: int) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 image, without antialiasing."""
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[:] = BACKGROUND_RGB[scene.background]
    for obj in scene.objects:
        r = obj.radius
        offsets = np.arange(-r, r + 1)
        dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
        mask = _shape_mask(obj.shape, dx, dy, r)
        window = image[obj.cy - r : obj.cy + r + 1, obj.cx - r : obj.cx + r + 1]
        window[mask] = COLORS[obj.color]
    return image
