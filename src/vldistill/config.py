"""Config checking with messages that name the key, what was expected and what was found.

The JSON schema (schemas/config.schema.yaml) is the single source of truth for keys and types;
Snakemake's ``validate()`` applies it and fills defaults. This module turns schema violations
into one readable list and adds the cross-key rules a schema cannot express.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key path."""


_Section = TypeVar("_Section")


def read_section(cls: type[_Section], values: Mapping[str, Any] | None,
                 where: str) -> _Section:
    """The config dataclass ``cls`` from a config section; the one reader every settings
    dataclass uses. An unknown key fails as the schema check words it: the section's dotted
    path, the unknown keys and the allowed ones."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    allowed = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys are {allowed}")
    return cls(**values)


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
    if error.validator == "pattern" and "description" in error.schema:
        # a regular expression is no help to a reader; the schema says it in words
        return f"{where}: got {error.instance!r}; expected {error.schema['description']}"
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
    source = config.get("dataset", {}).get("source")
    video = source == "synthetic_video" or any(
        s.get("format") == "vatex" for s in config.get("sources") or [])
    frames = config.get("student", {}).get("frames", 1)
    if source == "synthetic_video" and not config.get("synthetic_video"):
        problems.append("synthetic_video: required when dataset.source is 'synthetic_video'")
    if video and frames < 2:
        problems.append("student.frames: a video dataset needs the towers to read several "
                        "frames per clip (e.g. 8)")
    if not video and frames > 1:
        problems.append(f"student.frames: {frames} frames per item, but the dataset has still "
                        "images; use 1")
    if video:
        # the teachers cache every sampled frame, but MAD's token alignment (and the teacher
        # methods' probe) read one picture per item: not wired for clips yet
        if config.get("finetune", {}).get("tasks"):
            problems.append("finetune.tasks: a video dataset has captions only; use []")
        for part in ("slow", "fast"):
            init = config.get("retrieval", {}).get(part, {}).get("init", "mad")
            if init == "mad":
                problems.append(f"retrieval.{part}.init: 'mad' distils one picture per item; "
                                "MAD over clips is not wired yet: use 'pretrained' or 'scratch'")
    if source == "files":
        for key in ("sources", "image_roots"):
            if not config.get(key):
                problems.append(f"{key}: required when dataset.source is 'files' "
                                "(docs/real-datasets.md)")
        roots = set(config.get("image_roots") or {})
        for i, source in enumerate(config.get("sources") or []):
            if source.get("images") not in roots:
                problems.append(f"sources[{i}].images: {source.get('images')!r} is not one of "
                                f"the image_roots {sorted(roots)}")
    reuse = config.get("pretrain", {}).get("reuse")
    retrieval_reuse = (config.get("retrieval") or {}).get("reuse")
    for key, folder, stage in (("pretrain.reuse", reuse, "student"),
                               ("retrieval.reuse", retrieval_reuse, "retrieval")):
        own = f"models/{config.get('dataset', {}).get('name')}/{stage}"
        if folder and Path(folder).as_posix().removeprefix("./").rstrip("/") == own:
            problems.append(f"{key}: {folder!r} is this run's own {stage} folder; name another "
                            f"run's (models/<its dataset>/{stage}), or null to train here")
    init = config.get("pretrain", {}).get("init") or {}
    student = config.get("student", {})
    if init.get("vision") and not student.get("vision_backbone"):
        problems.append("pretrain.init.vision: a timm checkpoint needs student.vision_backbone "
                        "(its timm model name)")
    if init.get("text") and not student.get("text_causal"):
        problems.append("pretrain.init.text: a CLIP text transformer attends causally; set "
                        "student.text_causal: true")
    if not config.get("finetune", {}).get("tasks") and not config.get("retrieval"):
        problems.append("finetune.tasks: empty and no retrieval section: nothing to evaluate")
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
    problems += retrieval_errors(config)
    problems += stage_data_errors(config)
    return problems


# the manifest table each official format fills (data/formats/)
FORMAT_TABLES: dict[str, str] = {"karpathy": "captions", "vatex": "captions", "vqa_v2": "vqa",
                                 "snli_ve": "ve", "vcr": "vcr"}
TABLE_FORMATS: dict[str, str] = {"captions": "karpathy (or vatex for clips)", "vqa": "vqa_v2",
                                 "ve": "snli_ve", "vcr": "vcr"}


def stage_data_errors(config: dict) -> list[str]:
    """A real dataset whose sources cannot feed a configured stage, found before any job runs:
    which stage needs what, what the sources give, and the ways out."""
    if config.get("dataset", {}).get("source") != "files" or not config.get("sources"):
        return []
    given = sorted({FORMAT_TABLES[s["format"]] for s in config["sources"]
                    if s.get("format") in FORMAT_TABLES})
    has = ", ".join(given) or "nothing"
    problems = []
    reuse = config.get("pretrain", {}).get("reuse")
    if "captions" not in given and not reuse:
        problems.append(
            f"sources: a run pre-trains its student on captions, but this dataset's sources "
            f"give {has}. Add a captions source (format karpathy, e.g. the Karpathy captions of "
            "the same images; docs/real-datasets.md), or set pretrain.reuse to another run's "
            "students (e.g. models/coco/student after the configs/coco.yaml run)")
        if config.get("retrieval"):
            problems.append(f"retrieval: Fast and Slow retrieval search images by their captions, "
                            f"but the sources give {has}. Add a captions source, or remove the "
                            "retrieval section")
    for task in config.get("finetune", {}).get("tasks") or []:
        if task not in given:
            problems.append(
                f"finetune.tasks: {task!r} needs a {TABLE_FORMATS[task]} source, but the sources "
                f"give {has}. Add one, or drop {task!r} from finetune.tasks")
    return problems


def retrieval_errors(config: dict) -> list[str]:
    """Retrieval settings that cannot work with the dataset they run on.

    Gallery sizes are known before any job runs only for the synthetic benchmark (its counts are
    config); for real datasets the index and re-rank rules check the same things on the data.
    """
    retrieval = config.get("retrieval")
    if not retrieval:
        return []
    problems: list[str] = []
    index = retrieval.get("index", {})
    if index.get("shards", 1) > 1 and "HNSW" in str(index.get("factory", "")):
        # faiss merges flat and inverted-list indexes, not graphs
        problems.append(f"retrieval.index.shards: {index['shards']} shards of a graph index "
                        f"({index['factory']}) cannot be merged; use 1, or a Flat or IVF factory")
    source = config.get("dataset", {}).get("source")
    # the generator's section: its counts are the gallery sizes
    section = {"synthetic": "synthetic", "synthetic_video": "synthetic_video"}.get(source)
    synthetic = config.get(section) if section else None
    if not synthetic:
        return problems
    split = retrieval.get("split", "test")
    gallery = synthetic.get("counts", {}).get(split)
    if gallery is None:
        return problems
    for i, k in enumerate(retrieval.get("rerank", {}).get("ks", [])):
        if k > gallery:
            problems.append(
                f"retrieval.rerank.ks[{i}]: re-ranking the top {k} needs at least {k} gallery "
                f"images, but the {split!r} gallery has {section}.counts.{split} = {gallery}"
            )
    ivf = re.search(r"IVF(\d+)", str(retrieval.get("index", {}).get("factory", "")))
    if ivf and int(ivf.group(1)) > gallery:
        problems.append(
            f"retrieval.index.factory: {ivf.group(0)} needs at least {ivf.group(1)} vectors to "
            f"train its lists, but the {split!r} gallery has {section}.counts.{split} = {gallery}"
        )
    per_image = retrieval.get("captions_per_image", 1)
    key = "captions_per_clip" if section == "synthetic_video" else "captions_per_image"
    generated = synthetic.get(key, 5)
    if per_image > generated:
        problems.append(
            f"retrieval.captions_per_image: {per_image} queries per image, but the generator "
            f"writes {section}.{key} = {generated} captions per item"
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
