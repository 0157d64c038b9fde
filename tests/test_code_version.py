"""A rule's code version covers exactly the package modules its script imports."""

from pathlib import Path

import pytest

from vldistill.code_version import code_hash, package_root, source_files

PACKAGE_FILES = {
    "vldistill/__init__.py": "",
    "vldistill/io.py": "import json\n",
    "vldistill/models/__init__.py": "from .vision import Vision\n",
    "vldistill/models/vision.py": "from ..io import json\nclass Vision: ...\n",
    "vldistill/models/text.py": "X = 1\n",
    "vldistill/train/__init__.py": "",
    "vldistill/train/loop.py": ("from vldistill.models.text import X\n\n"
                                "def run():\n    import vldistill.train.lazy\n"),
    "vldistill/train/lazy.py": "",
    "vldistill/unrelated.py": "import torch\n",
}


@pytest.fixture
def package(tmp_path) -> Path:
    for name, text in PACKAGE_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "script.py").write_text("import sys\nfrom vldistill.train.loop import run\n")
    return tmp_path


def names(files: list[Path], root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in files}


def test_follows_from_imports_relative_imports_lazy_imports_and_package_inits(package):
    found = names(source_files(package / "script.py", package), package)
    assert found == {"vldistill/__init__.py", "vldistill/train/__init__.py",
                     "vldistill/train/loop.py", "vldistill/train/lazy.py",
                     "vldistill/models/__init__.py", "vldistill/models/text.py",
                     "vldistill/models/vision.py", "vldistill/io.py"}


def test_hash_moves_with_an_imported_module_only(package):
    def version() -> str:
        code_hash.cache_clear()
        return code_hash(package / "script.py", package)

    before = version()
    (package / "vldistill/unrelated.py").write_text("import torch  # edited\n")
    assert version() == before
    (package / "vldistill/models/vision.py").write_text("class Vision: ...  # edited\n")
    edited = version()
    assert edited != before
    (package / "vldistill/models/vision.py").write_text(PACKAGE_FILES["vldistill/models/vision.py"])
    assert version() == before  # contents, not mtimes


def test_real_scripts_reach_their_own_stage_and_not_others(repo):
    root = package_root()

    def reached(script: str) -> set[str]:
        return names(source_files(repo / "scripts" / script, root), root)

    assert "vldistill/distill/mad.py" in reached("finetune.py")
    assert "vldistill/retrieval/rerank.py" not in reached("finetune.py")
    assert "vldistill/retrieval/rerank.py" in reached("retrieval_rerank.py")
    assert "vldistill/distill/mad.py" not in reached("results_table.py")
