"""Seeded random edits of config keys, each drawn from what the schema allows for that key."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from snakemake.utils import validate

from vldistill.config import load_schema

Key = tuple[str, ...]


@dataclass(frozen=True)
class Edit:
    key: Key
    value: Any

    @property
    def dotted(self) -> str:
        return ".".join(self.key)

    def overlay(self) -> dict:
        """The edit as a config file that overrides one key."""
        nested: Any = self.value
        for part in reversed(self.key):
            nested = {part: nested}
        return nested

    def write(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.overlay()))
        return path


def merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = (merge(merged[key], value)
                       if isinstance(value, dict) and isinstance(merged.get(key), dict)
                       else copy.deepcopy(value))
    return merged


def effective_config(workdir: Path, configfiles: list[Path], schema_path: Path) -> dict:
    """config.yaml, then each config file on top, with the schema's defaults filled in."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for path in configfiles:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate(config, str(schema_path), set_default=True)
    return config


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def leaves(config: dict, schema: dict, root: dict, prefix: Key = ()) -> Iterator[
        tuple[Key, dict, Any]]:
    """Every (key, its schema, its current value) the config holds, down to scalars and lists."""
    schema = _resolve(schema, root)
    for name, sub in schema.get("properties", {}).items():
        if name not in config:
            continue
        sub = _resolve(sub, root)
        value = config[name]
        if isinstance(value, dict) and "properties" in sub:
            yield from leaves(value, sub, root, (*prefix, name))
        else:
            yield (*prefix, name), sub, value


def draw(rng: random.Random, schema: dict, current: Any, root: dict) -> Any:
    """A value of the key's type, inside its bounds, different from ``current``; None when the
    key's type is one this generator does not draw (names, paths, nested lists of objects)."""
    schema = _resolve(schema, root)
    if "enum" in schema:
        others = [v for v in schema["enum"] if v != current]
        return rng.choice(others) if others else None
    kind = schema.get("type")
    if kind == "boolean":
        return not current
    if kind == "integer" and isinstance(current, int):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -10**9) + 1)
        high = schema.get("maximum", current + 8)
        choices = [v for v in range(max(low, current - 4), min(high, current + 4) + 1)
                   if v != current]
        return rng.choice(choices) if choices else None
    if kind == "number" and isinstance(current, int | float):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        for _ in range(20):
            value = round((current or 0.5) * rng.choice([0.5, 0.8, 1.25, 2.0]), 6)
            if value != current and (low is None or value > low or
                                     ("minimum" in schema and value >= low)) \
                    and (high is None or value < high or ("maximum" in schema and value <= high)):
                return value
        return None
    if kind == "array" and isinstance(current, list):
        items = _resolve(schema.get("items", {}), root)
        if "enum" in items:  # a subset of the allowed names, in the schema's order
            pool = items["enum"]
            for _ in range(20):
                subset = [v for v in pool if rng.random() < 0.5] or [rng.choice(pool)]
                if subset != current:
                    return subset
            return None
        if items.get("type") == "integer" and all(isinstance(v, int) for v in current):
            return (current[:-1] if len(current) > 1 and rng.random() < 0.5
                    else [*current, max(current, default=-1) + 1])
    return None


def random_edits(workdir: Path, configfiles: list[Path], schema_path: Path, seed: int,
                 ) -> Iterator[Edit]:
    """Endless seeded edits, each one key of the effective config set to a new drawn value."""
    root = load_schema(schema_path)
    config = effective_config(workdir, configfiles, schema_path)
    candidates = [(key, sub, value) for key, sub, value in leaves(config, root, root)]
    rng = random.Random(seed)
    while True:
        key, sub, value = rng.choice(candidates)
        new = draw(rng, sub, value, root)
        if new is not None:
            yield Edit(key, new)
