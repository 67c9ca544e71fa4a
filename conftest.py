"""Shared by the tests and the doctests in src/: nothing is written outside pytest's tmp dirs."""

from __future__ import annotations

import pytest

collect_ignore = ["src/slimkit/__main__.py"]


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Trained zoo weights go to a per-run cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SLIMKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()
