"""What the benchmark scripts share: the machine (CPU detail and flags, other processes' load,
waiting for a quiet machine, interleaved timing), results (atomic JSON, the git state of the code
measured), the generated sentence corpus (``data/sentences.json``) and real English sentences
(CPython's documentation, ``real_sentences``), text and image data for the built-in models, and
the resnet18-cifar trained on digits that several benchmarks start from.

Benchmarks run as scripts (``python benchmarks/bench_x.py``): their folder is on ``sys.path``,
so ``from common import ...`` needs no path manipulation.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
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


# ---- int8 benchmarks: real text, CPU flags, interleaved timing, ORT profiles -------------

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16")


def real_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` real English sentences of CPython's documentation (prose only: no code, no
    markup), shuffled with ``seed``; 564 are available with CPython 3.11."""
    import pydoc_data.topics as topics

    text = re.sub(r"\s+", " ", " ".join(topics.topics[k] for k in sorted(topics.topics)))
    seen: set[str] = set()
    pool = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if 40 < len(sentence) < 240 and sentence[0].isupper() and sentence not in seen and \
                not re.search(r"[{}()\[\]=_*>`\"]|::", sentence):
            seen.add(sentence)
            pool.append(sentence)
    random.Random(seed).shuffle(pool)
    return pool[:count]


def cpu_record() -> dict[str, Any]:
    """CPU model, family/model numbers and the int8/bf16 flags, from /proc/cpuinfo."""
    from slimkit.hardware import cpu_info

    info = cpu_info()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info["flags"] = {f: f in flags for f in CPU_FLAGS}
    info["vnni"] = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return info


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_interleaved(runners: dict[str, Callable[[], Any]], rounds: int, round_seconds: float,
                     warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median/p90 latency (ms) of each runner: warm-up, then ``rounds`` rounds in which every
    runner runs for ``round_seconds``, the order rotating each round."""
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            end = time.perf_counter() + round_seconds
            while True:
                start = time.perf_counter()
                runners[name]()
                times[name].append(time.perf_counter() - start)
                if start > end:
                    break
    return {n: {"p50_ms": 1e3 * float(np.median(t)), "p90_ms": 1e3 * float(np.percentile(t, 90)),
                "runs": len(t)} for n, t in times.items()}


def ort_op_profile(path: Path, feed: dict[str, np.ndarray], threads: int = 1,
                   runs: int = 20) -> dict[str, float]:
    """ms per run spent in each op type of ONNX Runtime's optimised graph (its profiler)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling, opts.log_severity_level = True, 3
    with __import__("tempfile").TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + e["dur"] / 1e3 / runs
    return {op: round(ms, 3) for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])}

