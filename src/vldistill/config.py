"""Config checking with messages that name the key, what was expected and what was found.

The JSON schema (schemas/config.schema.yaml) is the single source of truth for keys and types;
Snakemake's ``validate()`` applies it and fills defaults. This module turns schema violations
into one readable list and adds the cross-key rules a schema cannot express.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key path."""


def key_path(parts: Iterable[Any]) -> str:
    """Render a jsonschema path as the dotted key a user would edit: ``teachers.vision.name``."""
    rendered = ""
    for part in parts:
        rendered += f"[{part}]" if isinstance(part, int) else (f".{part}" if rendered else part)
    return rendered or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        return f"{where}: unknown key(s) {unexpected}; allowed keys are {allowed}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "enum":
        return f"{where}: got {error.instance!r}; expected one of {error.validator_value}"
    if error.validator == "type":
        return f"{where}: got {error.instance!r}; expected type {error.validator_value}"
    return f"{where}: {error.message}"


def schema_errors(config: dict, schema: dict) -> list[str]:
    """Every schema violation as ``key.path: what is wrong``, sorted by key path."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


def semantic_errors(config: dict) -> list[str]:
    """Cross-key rules the schema cannot state."""
    problems: list[str] = []
    if config.get("dataset", {}).get("source") == "synthetic":
        synthetic = config.get("synthetic")
        if synthetic is None:
            problems.append("synthetic: required when dataset.source is 'synthetic'")
        elif synthetic.get("min_objects", 1) > synthetic.get("max_objects", 4):
            problems.append(
                "synthetic.min_objects: must not exceed synthetic.max_objects "
                f"({synthetic.get('min_objects')} > {synthetic.get('max_objects')})"
            )
    for modality in ("vision", "text"):
        teacher = config.get("teachers", {}).get(modality, {})
        if teacher.get("name") == "open_clip" and not teacher.get("model"):
            problems.append(
                f"teachers.{modality}.model: required when teachers.{modality}.name is "
                "'open_clip' (an open_clip architecture such as 'ViT-B-16')"
            )
        if modality == "text" and teacher.get("name") == "hf" and not teacher.get("model"):
            problems.append(
                "teachers.text.model: required when teachers.text.name is 'hf' "
                "(a Hugging Face model id or a local directory)"
            )
    return problems


def load_schema(path: str | Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def check_config(config: dict, schema: dict) -> None:
    """Raise ConfigError listing every problem, or return quietly."""
    problems = schema_errors(config, schema) or semantic_errors(config)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")
