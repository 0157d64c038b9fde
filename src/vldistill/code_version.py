"""The version of the code a rule runs, as a short hash of the source files its script imports.

Snakemake's code trigger sees a rule's script, not the package modules the script imports, so
an edit to e.g. ``distill/mad.py`` would re-run nothing. Every scripted rule therefore carries
``code_hash(script)`` as a param (Snakefile, end): editing a module re-runs exactly the rules
whose scripts reach it through imports, and nothing else. The imports are read statically
(``ast``), every ``import`` anywhere in a file counts (lazy imports inside functions too), so
the hash is computed at DAG time without importing torch. Contents are hashed, not mtimes, so
a fresh clone or a ``git checkout`` of the same code re-runs nothing.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

PACKAGE = "vldistill"


def package_root() -> Path:
    """The directory that holds the package (``src/`` in this repository)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(f"package {PACKAGE!r} is not importable; install it (make venv)")
    return Path(spec.origin).parent.parent


def module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root``; None for modules outside the package and
    for names that are attributes, not modules (``from pkg.mod import function``)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = root.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, package: str | None) -> set[str]:
    """Every module name that ``path`` imports; ``package`` resolves relative imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if package is None:
                    continue
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def source_files(script: Path, root: Path | None = None) -> list[Path]:
    """The package's files that ``script`` imports, directly or through other modules."""
    root = root or package_root()
    seen: set[Path] = set()
    pending = [(Path(script), None)]
    while pending:
        path, package = pending.pop()
        for name in imported_names(path, package):
            for candidate in (*_parents(name), name):
                found = module_file(candidate, root)
                if found is None or found in seen:
                    continue
                seen.add(found)
                own = module_name(found, root)
                pending.append((found, own if found.name == "__init__.py"
                                else own.rpartition(".")[0]))
    return sorted(seen)


@cache
def code_hash(script: str | Path, root: str | Path | None = None) -> str:
    """16 hex digits of SHA-256 over the relative paths and contents of ``source_files``."""
    root = Path(root) if root is not None else package_root()
    digest = hashlib.sha256()
    for path in source_files(Path(script), root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
