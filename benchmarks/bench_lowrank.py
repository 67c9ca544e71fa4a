"""Low-rank factorisation benchmark: MACs, ONNX Runtime latency and fidelity at several ranks,
side by side, on MiniLM's Linear layers and on resnet18-cifar.

Sections of the result:

    minilm      all-MiniLM-L6-v2, every encoder Linear (q, k, v, attention output, FFN in and
                out) by truncated SVD at fixed ranks (and by 90% energy): parameters and MACs
                (128 tokens), mean cosine and top-5 neighbour agreement of the sentence
                embeddings to the original's on generated sentences, ONNX Runtime latency
                (batch 1 x 128 tokens, 1 thread) of all variants in ONE slimkit.bench.core call;
                then the lowest rank recovered by embedding distillation (a few CPU minutes).
    resnet      resnet18-cifar, every conv and the classifier, channel SVD and Tucker-2 at
                several rank ratios: MACs, latency (batch 1, 1 thread, one bench call),
                output SQNR and top-1 agreement. With --trained (default in a full run) the
                network is first trained on upsampled digits (bench_prune's cached model) and
                test accuracy is reported; otherwise it is the untrained zoo architecture on
                synthetic inputs (a random network has flat spectra: fidelity is a lower bound).

Every factorised model is exported to ONNX and verified against torch by slimkit.low_rank.

Usage:
    python benchmarks/bench_lowrank.py            # full run (results/lowrank.json)
    python benchmarks/bench_lowrank.py --quick    # smoke run (results/lowrank-quick.json)
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
    digits_as,
    embeddings,
    git_state,
    split_sentences,
    text_data,
    trained_resnet18_cifar,
    write_json,
)

from slimkit import load_model  # noqa: E402
from slimkit.bench.core import BenchConfig, benchmark  # noqa: E402
from slimkit.data import Dataset, synthetic  # noqa: E402
from slimkit.lowrank import LowRankConfig, low_rank  # noqa: E402
from slimkit.model import Model  # noqa: E402

SECTIONS = ("minilm", "resnet")


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)


def bench_side_by_side(models: list[Model], quick: bool, sequence: int = 128) -> dict[str, Any]:
    config = BenchConfig(runtimes=("onnxruntime",), threads=(1,), batches=(1,),
                         sequence=sequence, warmup=3, rounds=3 if quick else 9,
                         round_seconds=0.3 if quick else 1.0)
    meter = CpuMeter()
    result = benchmark(models, config)
    rows = [asdict(row) for row in result.rows]
    base = rows[0]["p50_ms"]
    return {"p50_ms": {r["model"]: round(r["p50_ms"], 3) for r in rows},
            "speedup_p50": {r["model"]: round(base / r["p50_ms"], 3) for r in rows},
            "warnings": result.warnings, "contention": meter.cores()}


def row_of(name: str, r: Any) -> dict[str, Any]:
    size = r.sections["size"]
    return {"variant": name, "factorised_layers": len(r.sections["layers"]),
            "skipped_layers": len(r.sections["skipped"]),
            "parameters_ratio": size["parameters_ratio"], "macs_ratio": size["macs_ratio"],
            "macs_after": size["macs_after"],
            "mean_energy": (round(float(np.mean([x["energy"] for x in r.sections["layers"]])),
                                  4) if r.sections["layers"] else None),
            "ranks": sorted({tuple(x["ranks"]) for x in r.sections["layers"]})[:6],
            "onnx_verified_max_abs_diff": r.sections.get("onnx_verified", {}).get(
                "max_abs_diff")}


# ----------------------------------------------------------------------------- minilm

def minilm_section(quick: bool, started: float) -> dict[str, Any]:
    from slimkit.distill import DistillConfig, distill

    model = load_model("builtin:minilm")
    train_texts, test_texts = split_sentences(300 if quick else 2000, 64 if quick else 256)
    test = text_data(model, test_texts)
    reference = embeddings(model, test)
    layers = ("re:encoder\\.layer\\.\\d+\\.",)
    variants = [("rank128", LowRankConfig(rule="rank", rank=128, layers=layers)),
                ("rank64", LowRankConfig(rule="rank", rank=64, layers=layers))]
    if not quick:
        variants += [("rank32", LowRankConfig(rule="rank", rank=32, layers=layers)),
                     ("energy0.9", LowRankConfig(rule="energy", energy=0.9, layers=layers))]
    rows, models = [], [model]
    for name, config in variants:
        r = low_rank(model, config, test)
        row = row_of(name, r)
        row["held_out"] = cosine_to(reference, r.model, test)
        rows.append(row)
        log(started, f"minilm {name}: {row}")
        if row["factorised_layers"]:
            models.append(replace(r.model, name=f"minilm-{name}"))
    speed = bench_side_by_side(models, quick)
    log(started, f"minilm latency: {speed['speedup_p50']}")
    # recovery of the lowest rank by embedding distillation from the original
    r = low_rank(model, replace(variants[-1 if quick else 2][1], verify=False), test)
    cfg = DistillConfig(loss="embedding-cosine", lr=1e-4, batch_size=32, epochs=100,
                        max_steps=10 if quick else 150, seed=0)
    recovered = distill(r.model, model, text_data(model, train_texts), cfg)
    recovery = {"variant": variants[-1 if quick else 2][0], "steps": cfg.max_steps,
                "cpu_seconds": recovered.sections["cpu_seconds"],
                "held_out_before": cosine_to(reference, r.model, test),
                "held_out_after": cosine_to(reference, recovered.model, test)}
    log(started, f"minilm recovery: {recovery}")
    return {"layers": "every Linear of the 6 encoder layers (36)", "rows": rows,
            "latency": speed, "distillation_recovery": recovery}


# ----------------------------------------------------------------------------- resnet

def resnet_section(quick: bool, started: float, trained: bool) -> dict[str, Any]:
    model: Model
    test: Dataset
    if trained:

        model = trained_resnet18_cifar(4)
        test = digits_as(model, "test")
    else:
        model = load_model("builtin:resnet18-cifar")
        test = synthetic(model.inputs, 64, seed=3)
    variants = [("channel-0.5", LowRankConfig(rule="ratio", ratio=0.5)),
                ("channel-0.25", LowRankConfig(rule="ratio", ratio=0.25))]
    if not quick:
        variants += [("channel-0.125", LowRankConfig(rule="ratio", ratio=0.125)),
                     ("tucker2-0.5", LowRankConfig(rule="ratio", ratio=0.5,
                                                   conv_method="tucker2")),
                     ("tucker2-0.25", LowRankConfig(rule="ratio", ratio=0.25,
                                                    conv_method="tucker2"))]
    rows, models = [], [model]
    for name, config in variants:
        r = low_rank(model, config, test)
        row = row_of(name, r)
        row["fidelity"] = r.sections["fidelity"]
        if trained:
            row["test_accuracy"] = accuracy(r.model, test)
        rows.append(row)
        models.append(replace(r.model, name=f"resnet18-cifar-{name}"))
        log(started, f"resnet {name}: {row}")
    speed = bench_side_by_side(models, quick)
    log(started, f"resnet latency: {speed['speedup_p50']}")
    out = {"model": "resnet18-cifar trained on upsampled digits" if trained
           else "resnet18-cifar untrained (random init), synthetic inputs",
           "rows": rows, "latency": speed}
    if trained:
        out["original_test_accuracy"] = accuracy(model, test)
    return out


def accuracy(model: Model, data: Dataset) -> float:
    module = model.require_module("accuracy")
    with torch.no_grad():
        logits = torch.cat([module(torch.from_numpy(x["input"])) for x, _ in data.batches(128)])
    return round(float((logits.argmax(1).numpy() == data.labels).mean()), 4)


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, indicative numbers")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--trained", action=argparse.BooleanOptionalAction, default=None,
                        help="train resnet18-cifar on digits first (default: on unless --quick)")
    args = parser.parse_args(argv)
    chosen = [s for s in args.sections.split(",") if s]
    if set(chosen) - set(SECTIONS):
        raise SystemExit(f"unknown sections {sorted(set(chosen) - set(SECTIONS))}")
    trained = (not args.quick) if args.trained is None else args.trained
    torch.set_num_threads(1)
    started = time.perf_counter()
    path = HERE / "results" / ("lowrank-quick.json" if args.quick else "lowrank.json")
    out: dict[str, Any] = {"benchmark": "lowrank", "quick": args.quick,
                           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "machine": {"platform": platform.platform(), "cpu": cpu_detail(),
                                       "torch_threads": 1},
                           "git": git_state()}
    for name in chosen:
        try:
            out[name] = (minilm_section(args.quick, started) if name == "minilm"
                         else resnet_section(args.quick, started, trained))
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
