"""Helpers shared by the benchmarks: the sentence corpora, the CPU record, and an interleaved
timer for runners of any runtime.

Corpora:
    sentences(n, seed)   generated English sentences over ten topics (word lists and forms in
                         ``benchmarks/data/sentence_templates.json``); used for calibration
    real_sentences()     real English sentences from CPython's own documentation
                         (``pydoc_data.topics``, shipped with every CPython): the held-out
                         evaluation text, which no slimkit default ever calibrates on
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "data" / "sentence_templates.json"
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16")


def sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct generated English sentences over ten topics, the same for a seed."""
    spec = json.loads(TEMPLATES.read_text(encoding="utf-8"))
    topics_words, forms = spec["topics"], spec["forms"]
    rng = random.Random(seed)
    topics = sorted(topics_words)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        words = topics_words[topics[len(out) % len(topics)]]
        pick = {k: rng.choice(v) for k, v in words.items()}
        text = rng.choice(forms).format(Subj=pick["subj"][0].upper() + pick["subj"][1:], **pick)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


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
    from slimkit.environment import cpu_info

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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    from slimkit.io import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")


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
