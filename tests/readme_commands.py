"""The shell commands the README and docs/ tell a user to run, read from their fenced code
blocks, so the tests run what the documentation says instead of a copy of it that could drift."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("snakemake", "make", "dvc", "git", ".venv/bin/python")


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    expect: str | None  # the README's "# -> ..." promise about the output, if any
    source: str  # the documentation file it is in, for messages
    line: int  # where it is in that file
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


def documentation(repo: Path) -> list[Path]:
    """README.md first, then every page under docs/."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def commands(repo: Path, program: str | None = None) -> list[Command]:
    """Every command line of the documentation's shell blocks (continuations joined, ``&&``
    chains split, trailing comments dropped), optionally only those of one ``program``."""
    found = []
    for page in documentation(repo):
        found += _page_commands(page, page.relative_to(repo).as_posix())
    return [c for c in found if program is None or c.program == program]


def _page_commands(page: Path, source: str) -> list[Command]:
    found = []
    for start, lines in code_blocks(page.read_text()):
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
                    found.append(Command(tuple(shlex.split(part)), expect, source, first,
                                         start))
            joined, first = "", None
    return found


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
