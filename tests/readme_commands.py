"""The shell commands the README tells a user to run, read from its fenced code blocks, so the
tests run what the documentation says instead of a copy of it that could drift."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("snakemake", "make", "dvc", "git")


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    expect: str | None  # the README's "# -> ..." promise about the output, if any
    line: int  # where it is in README.md, for messages
    block: int  # the first line of its code block: commands shown together

    @property
    def program(self) -> str:
        return self.argv[0]


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced block that is shell (``bash``, ``sh`` or no
    language), including blocks indented inside lists."""
    blocks, current, start, inside = [], [], 0, False
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and not inside:
            inside, shell, current, start = True, fence[1] in {"", "bash", "sh"}, [], number + 1
        elif fence and inside:
            inside = False
            if shell:
                blocks.append((start, current))
        elif inside:
            current.append(line.strip())
    return blocks


def commands(readme: Path, program: str | None = None) -> list[Command]:
    """Every command line of the README's shell blocks (continuations joined, ``&&`` chains
    split, trailing comments dropped), optionally only those of one ``program``."""
    found = []
    for start, lines in code_blocks(readme.read_text()):
        joined, first = "", None
        for offset, line in enumerate(lines):
            first = start + offset if first is None else first
            if line.endswith("\\"):
                joined += line[:-1] + " "
                continue
            joined += line
            code, _, comment = joined.partition(" #")
            expect = comment.strip()[2:].strip() if comment.strip().startswith("->") else None
            for part in code.split("&&"):
                if part.split()[:1] and part.split()[0] in PROGRAMS:  # not output or YAML
                    found.append(Command(tuple(shlex.split(part)), expect, first, start))
            joined, first = "", None
    return [c for c in found if program is None or c.program == program]


def make_recipe(makefile: Path, target: str, **variables: str) -> list[list[str]]:
    """The commands of a Makefile target, ``$(BIN)/`` dropped (the venv is on PATH in tests),
    ``$(SNAKEMAKE_ARGS)`` empty and other ``$(NAME)``s from ``variables``."""
    lines = makefile.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        command = line.strip().replace("$(BIN)/", "").replace("$(SNAKEMAKE_ARGS)", "")
        for name, value in variables.items():
            command = command.replace(f"$({name})", value)
        recipe.append(command.split())
    return recipe
