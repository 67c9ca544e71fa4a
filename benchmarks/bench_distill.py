"""Distillation benchmark: recovery of a pruned CNN, a 3-layer MiniLM student, and the head/FFN
pruned MiniLM, with what each cost in CPU time.

Sections of the result:

    digits      digits-cnn (the zoo's trained model) with 70% of its channels removed
                (structured, L1, round_to 4); then, for the same steps, seed and optimizer,
                side by side: plain fine-tuning (cross-entropy on the labels: alpha 0) and
                distillation from the original (alpha 0.9, T 4). Test accuracy of each, over
                several seeds and step budgets.
    minilm      all-MiniLM-L6-v2 -> a 3-layer student keeping every 2nd layer (teacher
                weights), distilled (embedding cosine, no labels) on generated English
                sentences (bench_quantize.sentences: word lists, nothing downloaded). Mean
                cosine and top-5 neighbour agreement to the teacher's embeddings on held-out
                sentences (disjoint from the training ones) before and after; ONNX Runtime
                latency of teacher and student side by side (slimkit.bench.core, batch 1 x 128
                tokens, 1 thread); CPU seconds of the distillation.
    pruned      MiniLM with a third of its heads and half of its FFN neurons removed
                (slimkit.prune, as bench_prune_minilm.py), distilled the same way: cosine
                before and after recovery.

Usage:
    python benchmarks/bench_distill.py            # full run (results/distill.json)
    python benchmarks/bench_distill.py --quick    # smoke run (results/distill-quick.json)
    python benchmarks/bench_distill.py --sections digits
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

from common import (  # noqa: E402
    CpuMeter,
    cosine_to,
    cpu_detail,
    embeddings,
    git_state,
    split_sentences,
    text_data,
    write_json,
)

from slimkit import load_data, load_model  # noqa: E402
from slimkit.data import Dataset  # noqa: E402
from slimkit.distill import DistillConfig, distill, shallow_student  # noqa: E402
from slimkit.model import Model  # noqa: E402

SECTIONS = ("digits", "minilm", "pruned")


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)


# ----------------------------------------------------------------------------- digits

def accuracy(model: Model, data: Dataset) -> float:
    module = model.require_module("accuracy")
    with torch.no_grad():
        logits = module(torch.from_numpy(data.inputs["input"]))
    return round(float((logits.argmax(1).numpy() == data.labels).mean()), 4)


def digits_section(quick: bool, started: float) -> dict[str, Any]:
    from slimkit.prune import PruneConfig, prune

    teacher = load_model("builtin:digits-cnn")
    train = load_data("builtin:digits:train", teacher)
    val = load_data("builtin:digits:val", teacher)
    test = load_data("builtin:digits:test", teacher)
    pruned = prune(teacher, PruneConfig(ratio=0.7, round_to=4)).model
    budgets, seeds = ((200,), (0,)) if quick else ((50, 200, 400), (0, 1, 2))
    runs = []
    for steps in budgets:
        for seed in seeds:
            row: dict[str, Any] = {"steps": steps, "seed": seed}
            for name, alpha in (("finetune", 0.0), ("distill", 0.9)):
                cfg = DistillConfig(loss="kd", alpha=alpha, temperature=4.0, lr=1e-3,
                                    batch_size=64, epochs=1000, max_steps=steps, seed=seed)
                r = distill(pruned, teacher, train, cfg, val=None)
                row[f"{name}_test_accuracy"] = accuracy(r.model, test)
                row[f"{name}_cpu_seconds"] = r.sections["cpu_seconds"]
            runs.append(row)
            log(started, f"digits {steps} steps seed {seed}: {row}")
    summary = {}
    for steps in budgets:
        rows = [r for r in runs if r["steps"] == steps]
        summary[str(steps)] = {k: round(float(np.mean([r[f"{k}_test_accuracy"] for r in rows])),
                                        4) for k in ("finetune", "distill")}
    params = [sum(p.numel() for p in m.require_module("n").parameters())
              for m in (teacher, pruned)]
    return {"original_test_accuracy": accuracy(teacher, test),
            "pruned_test_accuracy_no_training": accuracy(pruned, test),
            "original_val_accuracy": accuracy(teacher, val),
            "parameters": {"original": params[0], "pruned": params[1]},
            "prune": "structured, 70% of channels, L1, round_to 4",
            "optimizer": "adam lr 1e-3, batch 64; the same loop for both, alpha 0 = plain "
                         "fine-tuning on labels, alpha 0.9 T 4 = distillation",
            "runs": runs, "mean_test_accuracy_by_steps": summary,
            "distill_beats_finetune": {k: v["distill"] > v["finetune"]
                                       for k, v in summary.items()}}


# ----------------------------------------------------------------------------- minilm


def minilm_config(quick: bool) -> DistillConfig:
    return DistillConfig(loss="embedding-cosine", lr=1e-4, batch_size=32, epochs=100,
                         max_steps=15 if quick else 150, seed=0)


def minilm_section(quick: bool, started: float) -> dict[str, Any]:
    teacher = load_model("builtin:minilm")
    train_texts, test_texts = split_sentences(300 if quick else 4800, 64 if quick else 256)
    train, test = text_data(teacher, train_texts), text_data(teacher, test_texts)
    reference = embeddings(teacher, test)
    student = shallow_student(teacher, keep_every=2)
    before = cosine_to(reference, student, test)
    log(started, f"3-layer student before distillation: {before}")
    result = distill(student, teacher, train, minilm_config(quick))
    after = cosine_to(reference, result.model, test)
    log(started, f"after {result.sections['steps']} steps "
                 f"({result.sections['cpu_seconds']} CPU s): {after}")
    return {"student": "every 2nd encoder layer of 6 (layers 1, 3, 5), teacher weights",
            "train_sentences": len(train_texts), "held_out_sentences": len(test_texts),
            "config": result.sections["config"], "steps": result.sections["steps"],
            "cpu_seconds": result.sections["cpu_seconds"],
            "wall_seconds": result.sections["wall_seconds"],
            "loss_first_last": [result.sections["loss"][0], result.sections["loss"][-1]],
            "held_out_before": before, "held_out_after": after,
            "speed": speed(teacher, replace(result.model, name="minilm-3L"), quick)}


def speed(teacher: Model, student: Model, quick: bool) -> dict[str, Any]:
    from slimkit.bench.core import BenchConfig, benchmark

    config = BenchConfig(runtimes=("onnxruntime",), threads=(1,), batches=(1,), sequence=128,
                         warmup=3, rounds=3 if quick else 9,
                         round_seconds=0.3 if quick else 1.0)
    meter = CpuMeter()
    result = benchmark([teacher, student], config)
    rows = [asdict(row) for row in result.rows]
    p50 = {r["model"]: r["p50_ms"] for r in rows}
    return {"rows": rows, "speedup_p50": round(p50[teacher.name] / p50[student.name], 3),
            "warnings": result.warnings, "contention": meter.cores()}


def pruned_section(quick: bool, started: float) -> dict[str, Any]:
    from slimkit.prune import PruneConfig, prune

    if "head_ratio" not in PruneConfig.__dataclass_fields__:
        return {"skipped": "this slimkit's PruneConfig has no head_ratio/ffn_ratio"}
    teacher = load_model("builtin:minilm")
    train_texts, test_texts = split_sentences(300 if quick else 4000, 64 if quick else 256)
    train, test = text_data(teacher, train_texts), text_data(teacher, test_texts)
    reference = embeddings(teacher, test)
    pruned = prune(teacher, PruneConfig(head_ratio=1 / 3, ffn_ratio=0.5, importance="l1")).model
    before = cosine_to(reference, pruned, test)
    result = distill(pruned, teacher, train, minilm_config(quick))
    after = cosine_to(reference, result.model, test)
    log(started, f"pruned MiniLM: {before} -> {after}")
    return {"pruning": "a third of the heads (12 -> 8 per layer), half of the FFN neurons, L1",
            "steps": result.sections["steps"], "cpu_seconds": result.sections["cpu_seconds"],
            "held_out_before": before, "held_out_after": after}


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, indicative numbers")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args(argv)
    chosen = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {SECTIONS}")
    torch.set_num_threads(1)  # one thread: the machine is shared; CPU seconds stay comparable
    started = time.perf_counter()
    path = HERE / "results" / ("distill-quick.json" if args.quick else "distill.json")
    out: dict[str, Any] = {"benchmark": "distill", "quick": args.quick,
                           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "machine": {"platform": platform.platform(), "cpu": cpu_detail(),
                                       "torch_threads": 1},
                           "git": git_state()}
    runners = {"digits": digits_section, "minilm": minilm_section, "pruned": pruned_section}
    for name in chosen:
        try:
            out[name] = runners[name](args.quick, started)
        except Exception as exc:  # a failed section is recorded; the others still run
            out[name] = {"error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc(limit=6)}
            log(started, f"{name} failed: {exc}")
        out["total_wall_seconds"] = round(time.perf_counter() - started, 1)
        write_json(path, out)  # after every section: a long run keeps what it measured
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
