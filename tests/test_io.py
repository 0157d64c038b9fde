"""Artifact writing: atomic, and the same content gives the same bytes."""

import hashlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vldistill.io import atomic_output, canonicalise_safetensors


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_safetensors_bytes_depend_on_content_only(tmp_path):
    """The writer orders metadata by a hash map seeded per map: eight saves of the same tensors
    give eight different files unless the header is made canonical."""
    tensors = {"b": torch.ones(2, 2), "a": torch.arange(3.0)}
    metadata = {f"key{i}": str(i) for i in range(6)}
    digests = set()
    for i in range(8):
        path = tmp_path / f"{i}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        canonicalise_safetensors(path)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == metadata
        assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())
