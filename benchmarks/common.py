"""What the benchmark scripts share: the machine (CPU detail, other processes' load, waiting
for a quiet machine), results (atomic JSON, the git state of the code measured), the generated
sentence corpus (``data/sentences.json``), text and image data for the built-in models, and
the resnet18-cifar trained on digits that several benchmarks start from.

Benchmarks run as scripts (``python benchmarks/bench_x.py``): their folder is on ``sys.path``,
so ``from common import ...`` needs no path manipulation.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPUS = HERE / "data" / "sentences.json"
BUSY_CORES = 0.15  # other processes using more than this (on average) spoil a measurement


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


# ---- the machine ---------------------------------------------------------------------------

class CpuMeter:
    """CPU time used by other processes (and stolen by the hypervisor) while we measure: on a
    2-core machine one busy neighbour ruins 2-thread numbers, so the result records it."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        t = self._psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        own = self._proc.cpu_times()
        return time.perf_counter(), busy, own.user + own.system, getattr(t, "steal", 0.0)

    def cores(self) -> dict[str, float]:
        """Average cores used by other processes, and stolen, since this meter started."""
        now = self._read()
        wall = max(now[0] - self._start[0], 1e-9)
        foreign = (now[1] - self._start[1]) - (now[2] - self._start[2])
        return {"foreign_cores": round(max(foreign, 0.0) / wall, 3),
                "steal_cores": round((now[3] - self._start[3]) / wall, 3)}


def wait_until_idle(max_seconds: float, threshold: float = BUSY_CORES) -> float:
    """Wait (up to ``max_seconds``) until other processes use under ``threshold`` cores."""
    start = time.perf_counter()
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        busy = meter.cores()["foreign_cores"]
        waited = time.perf_counter() - start
        if busy < threshold or waited >= max_seconds:
            return busy
        print(f"  other processes use {busy:.2f} cores; waiting ({waited:.0f}s)",
              file=sys.stderr, flush=True)
        time.sleep(4.0)


def cpu_detail() -> dict[str, str]:
    """CPU family/model/stepping and clock: "AMD EPYC" alone does not tell Zen 1 from Zen 4."""
    keys = {"cpu family", "model", "stepping", "cpu MHz", "cache size"}
    detail: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys and key.strip() not in detail:
                    detail[key.strip()] = value.strip()
    except OSError:
        pass
    return detail


# ---- results -------------------------------------------------------------------------------

def write_json(path: Path, payload: dict[str, Any]) -> None:
    from slimkit.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def git_state() -> dict[str, Any]:
    """The commit and which src/ files differed from it while this ran (slimkit under edit)."""
    root = HERE.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=20).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("rev-parse", "HEAD").strip(),
            "dirty": [line[3:] for line in git("status", "--porcelain", "src").splitlines()]}


# ---- text ----------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _corpus() -> dict[str, Any]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))


def sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct English sentences over ten topics, the same for a given seed."""
    corpus = _corpus()
    topics, forms = corpus["topics"], corpus["forms"]
    names = sorted(topics)
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        words = topics[names[len(out) % len(names)]]
        pick = {k: rng.choice(v) for k, v in words.items()}
        text = rng.choice(forms).format(Subj=pick["subj"][0].upper() + pick["subj"][1:], **pick)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def split_sentences(train_count: int, test_count: int) -> tuple[list[str], list[str]]:
    """Training sentences and held-out ones, disjoint."""
    held_out = sentences(test_count, seed=7)
    seen = set(held_out)
    train = [s for s in sentences(train_count + test_count, seed=11) if s not in seen]
    return train[:train_count], held_out


def text_data(model: Any, texts: list[str]) -> Any:
    """``texts`` tokenised for ``model`` (padded to the longest, at most 128 tokens)."""
    from slimkit.data import Dataset

    encoded = model.tokenizer(texts, padding="longest", truncation=True, max_length=128,
                              return_tensors="np")
    return Dataset({s.name: np.asarray(encoded[s.name]).astype(s.dtype) for s in model.inputs},
                   None, "sentences")


def embeddings(model: Any, data: Any) -> np.ndarray:
    from slimkit.evaluate.metrics import predict

    return predict(model, data, "torch", batch_size=64)


def cosine_to(reference: np.ndarray, model: Any, data: Any) -> dict[str, float]:
    """Mean cosine to the reference embeddings and top-5 neighbour agreement."""
    from slimkit.evaluate.metrics import embedding_fidelity

    return {k: round(v, 4) for k, v in embedding_fidelity(reference, embeddings(model, data),
                                                          k=5).items()}


# ---- images --------------------------------------------------------------------------------

def digits_as(model: Any, split: str) -> Any:
    """The digits split shaped for ``model`` (upsampled and channel-repeated as needed):
    ``builtin:digits`` does this for any image model."""
    from slimkit.data import load_data

    return load_data(f"builtin:digits:{split}", model)


def trained_resnet18_cifar(epochs: int, seed: int = 0) -> Any:
    """builtin:resnet18-cifar trained on upsampled digits (Adam, cosine, seeded), cached beside
    the zoo's weights."""
    from safetensors.torch import load_file, save_file

    from slimkit import load_model
    from slimkit.io import atomic_path, cache_dir
    from slimkit.train import FinetuneConfig, finetune

    model = load_model("builtin:resnet18-cifar")
    path = cache_dir() / "bench" / f"resnet18-cifar-digits-e{epochs}-seed{seed}.safetensors"
    if path.is_file():
        model.module.load_state_dict(load_file(str(path)))
        return model
    train = digits_as(model, "train")
    trained = finetune(model, train, FinetuneConfig(epochs=epochs, lr=1e-3, batch_size=64,
                                                    seed=seed)).model
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in trained.module.state_dict().items()}, str(tmp))
    return trained
