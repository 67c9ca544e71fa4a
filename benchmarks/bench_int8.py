"""int8 side by side on this CPU: ONNX Runtime's and OpenVINO's tools against slimkit, in one
process, at 1 and 2 threads (issue 19).

MiniLM (all-MiniLM-L6-v2, batch 1 x 128 tokens for speed; fidelity on held-out real sentences,
each run alone at its own length: mean/min cosine of the embeddings and top-5 neighbours):

    ort-fp32            the plain ONNX export on ONNX Runtime (baseline of every ratio)
    ort-dyn-pc          onnxruntime.quantization.quantize_dynamic(per_channel=True)
    slimkit-ort         slimkit.quantize defaults (dynamic int8 of the fused encoder, SmoothQuant
                        and FFN outlier split folded exactly into the graph)
    slimkit-ort-aware   the same with an accuracy budget (--max-drop 0.001 on calibration text)
    ov-fp32 / ov-bf16   OpenVINO on the plain export, INFERENCE_PRECISION_HINT f32 / bf16
    ov-nncf-int8        nncf.quantize(model_type=TRANSFORMER) on the same calibration text, run
                        with OpenVINO's default hints (what a user of NNCF gets)
    slimkit-ov          slimkit.quantize_openvino: NNCF + slimkit's verification and a measured
                        choice of f32/bf16 for the float ops

CNNs (ResNet-18 and MobileNetV2 at 224x224, random init; SQNR of the logits on synthetic
images): ort-fp32, ort-static-u8-pc (ORT's best recipe: quant_pre_process, QDQ, u8
activations, per-channel s8 weights), slimkit-static, ov-fp32, ov-nncf-int8, slimkit-ov.

Calibration: 128 generated sentences (benchmarks/data) for every tool; evaluation: real English
sentences of CPython's documentation (benchmarks/common.py), which no tool calibrated on.
Timing: interleaved rounds, medians; sessions pinned to the thread count. Run:

    python benchmarks/bench_int8.py            # ~15 min on 2 quiet cores
    python benchmarks/bench_int8.py --quick    # smoke run (small data, short rounds)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import (  # noqa: E402
    cpu_record,
    load_now,
    ort_op_profile,
    real_sentences,
    sentences,
    time_interleaved,
    write_json,
)
from int8_variants import depthwise_convs, nncf_int8, ort_dyn_pc, ort_static_best  # noqa: E402

TARGETS = {"ort_cosine": 0.995, "ort_top5": 0.95, "ov_cosine": 0.997, "ov_top5": 0.95}


@dataclasses.dataclass
class Variant:
    name: str
    path: Path
    runtime: str  # "onnxruntime" or "openvino"
    precision: str = "fp32"  # openvino: fp32 forces f32; bf16; "default" = OpenVINO's own
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- runners

def runner(v: Variant, model: Any, threads: int) -> tuple[Callable[[dict], list], Any]:
    """A callable running one input dict, and the object to keep alive."""
    if v.runtime == "onnxruntime":
        from slimkit.runtime import RuntimeOptions, create_session

        session = create_session(model.with_onnx(v.path), "onnxruntime",
                                 RuntimeOptions(threads=threads))
        return session.run, session
    import openvino as ov

    from slimkit.runtime.base import RuntimeOptions
    from slimkit.runtime.openvino import compile_config

    cfg = compile_config(RuntimeOptions(threads=threads, precision="bf16"
                                        if v.precision == "bf16" else "fp32"))
    if v.precision == "default":
        cfg.pop("INFERENCE_PRECISION_HINT")
    compiled = ov.Core().compile_model(str(v.path), "CPU", cfg)
    request = compiled.create_infer_request()

    def run(feed: dict) -> list:
        request.infer(feed)
        return [np.array(request.get_output_tensor(0).data)]
    return run, (compiled, request)


def outputs(v: Variant, model: Any, items: list[dict]) -> np.ndarray:
    run, _keep = runner(v, model, threads=2)
    return np.concatenate([run(item)[0] for item in items])


def proof(v: Variant) -> dict[str, Any]:
    if v.runtime == "onnxruntime":
        from slimkit.quantize.graph import prove_integer_kernels

        p = prove_integer_kernels(v.path).to_dict()
        return {"ok": p["ok"], "ops": {k: n for k, n in p["op_counts"].items()
                                       if k in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                                                "QAttention", "QLinearConv", "QLinearMatMul",
                                                "QGemm", "MatMulNBits", "MatMul", "Conv",
                                                "Attention", "FusedConv", "FusedMatMul")}}
    import openvino as ov

    from slimkit.quantize.openvino_target import openvino_proof
    return openvino_proof(ov.Core().compile_model(str(v.path), "CPU",
                                                  {"INFERENCE_PRECISION_HINT": "f32"}))


# ----------------------------------------------------------------------------- variants

def build(name: str, model: Any, float_path: Path, calib: Any, tmp: Path, t0: float,
          transformer: bool) -> list[Variant]:
    from slimkit.quantize import QuantizeConfig, quantize
    from slimkit.quantize.act_stats import examples
    from slimkit.quantize.openvino_target import quantize_openvino

    names = model.input_names
    items = list(examples(calib, names))
    plan: list[tuple[str, Callable[[], Variant]]] = [
        ("ort-fp32", lambda: Variant("ort-fp32", float_path, "onnxruntime")),
        ("ov-fp32", lambda: Variant("ov-fp32", float_path, "openvino", "fp32")),
        ("ov-bf16", lambda: Variant("ov-bf16", float_path, "openvino", "bf16")),
        ("ov-nncf-int8", lambda: Variant("ov-nncf-int8", nncf_int8(
            float_path, tmp / "nncf.xml", items, transformer), "openvino", "default")),
    ]
    if transformer:
        plan.append(("ort-dyn-pc", lambda: Variant("ort-dyn-pc", ort_dyn_pc(
            float_path, tmp / "ort-dyn-pc.onnx"), "onnxruntime")))
        for vname, cfg in (("slimkit-ort", QuantizeConfig()),
                           ("slimkit-ort-aware", QuantizeConfig(max_drop=0.001))):
            plan.append((vname, lambda vname=vname, cfg=cfg: Variant(vname, quantize(
                model, tmp / f"{vname}.onnx", cfg, calib=calib, measure=False).path,
                "onnxruntime")))
    else:
        plan.append(("ort-static-u8-pc", lambda: Variant("ort-static-u8-pc", ort_static_best(
            float_path, tmp / "ort-static.onnx", calib, names), "onnxruntime")))
        plan.append(("slimkit-static", lambda: Variant("slimkit-static", quantize(
            model, tmp / "slimkit-static.onnx", QuantizeConfig(mode="static"), calib=calib,
            measure=False).path, "onnxruntime")))
        depthwise = depthwise_convs(float_path)
        if depthwise:  # does int8 pay on depthwise convolutions here? measured, not assumed
            rules = tuple(f"name:{n}" for n in depthwise)
            plan.append(("slimkit-static-dw-float", lambda: Variant(
                "slimkit-static-dw-float", quantize(model, tmp / "dw-float.onnx", QuantizeConfig(
                    mode="static", exclude=rules), calib=calib, measure=False).path,
                "onnxruntime", info={"kept_float": f"{len(rules)} depthwise Conv"})))
    plan.append(("slimkit-ov", lambda: _slimkit_ov(model, tmp, calib, quantize_openvino)))
    variants = []
    for vname, make in plan:
        start = time.perf_counter()
        try:
            v = make()
        except Exception as exc:  # noqa: BLE001 - a failing variant is a finding
            log(t0, f"{name}: {vname} FAILED: {type(exc).__name__}: {exc}")
            variants.append(Variant(vname, Path("-"), "none", info={
                "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=4)}))
            continue
        v.info["make_seconds"] = round(time.perf_counter() - start, 1)
        log(t0, f"{name}: {vname} made in {v.info['make_seconds']} s")
        variants.append(v)
    return variants


def _slimkit_ov(model: Any, tmp: Path, calib: Any, fn: Callable[..., dict]) -> Variant:
    report = fn(model, tmp / "slimkit-ov.xml", calib=calib)
    return Variant("slimkit-ov", Path(report["path"]), "openvino",
                   report["precision"]["chosen"], {"report": report})


# ----------------------------------------------------------------------------- workloads

def workload(name: str, quick: bool, tmp: Path) -> tuple[Any, Path, Any, Any, dict[str, Any]]:
    """The model, its plain float export, calibration data, evaluation data, notes."""
    import slimkit
    from slimkit.data import Dataset

    model = slimkit.load_model(f"builtin:{name}")
    float_path = slimkit.export_onnx(model, tmp / f"{name}-fp32.onnx").path
    if name != "minilm":
        calib = slimkit.load_data(f"synthetic:{8 if quick else 32}", model, seed=11)
        evaluation = slimkit.load_data(f"synthetic:{8 if quick else 24}", model, seed=12)
        return model, float_path, calib, evaluation, {"data": "synthetic N(0,1) images, "
                                                      "random-init weights"}

    def encode(texts: list[str]) -> Dataset:
        enc = model.tokenizer(texts, padding="longest", truncation=True, max_length=128,
                              return_tensors="np")
        return Dataset({k: np.asarray(v, np.int64) for k, v in enc.items()}, None, "text")
    held_out = real_sentences(100 if quick else 400)
    calib_text = sentences(32 if quick else 128, seed=2)
    notes = {"evaluation": f"{len(held_out)} real sentences of CPython's documentation "
                           "(pydoc_data.topics), each run alone at its own length",
             "calibration": f"{len(calib_text)} generated sentences (benchmarks/data)",
             "examples": held_out[:3]}
    return model, float_path, encode(calib_text), encode(held_out), notes


def fidelity(kind: str, reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    from slimkit.evaluate import embedding_fidelity, output_fidelity

    fid = output_fidelity(reference, got)
    if kind == "minilm":
        fid.update(embedding_fidelity(reference, got, k=5))
    return {k: round(float(v), 5) for k, v in fid.items()}


def speed_feed(model: Any, name: str) -> dict[str, np.ndarray]:
    from slimkit.data import synthetic

    data = synthetic(model.inputs, 1, seed=0, dynamic=128)
    return {k: v[:1] for k, v in data.inputs.items()}


def run_workload(name: str, args: argparse.Namespace, tmp: Path, t0: float) -> dict[str, Any]:
    from slimkit.quantize.act_stats import examples

    model, float_path, calib, evaluation, notes = workload(name, args.quick, tmp)
    log(t0, f"{name}: exported; building variants")
    variants = build(name, model, float_path, calib, tmp, t0, transformer=name == "minilm")
    ok = [v for v in variants if "error" not in v.info]
    items = list(examples(evaluation, model.input_names))
    reference = outputs(ok[0], model, items)
    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        row: dict[str, Any] = {"runtime": v.runtime, "precision": v.precision, **{
            k: val for k, val in v.info.items() if k != "report"}}
        if v in ok:
            row["fidelity"] = fidelity(name, reference, outputs(v, model, items))
            row["proof"] = proof(v)
            size = v.path.with_suffix(".bin") if v.path.suffix == ".xml" else v.path
            row["bytes"] = size.stat().st_size
        rows[v.name] = row
    log(t0, f"{name}: fidelity and proofs done; timing")
    feed = speed_feed(model, name)
    for threads in args.threads:
        keep, runners = [], {}
        for v in ok:
            run, obj = runner(v, model, threads)
            keep.append(obj)
            runners[v.name] = (lambda run=run: run(feed))
        before = load_now()
        timing = time_interleaved(runners, args.rounds, args.round_seconds)
        for vname, t in timing.items():
            rows[vname][f"t{threads}"] = {**{k: round(x, 3) for k, x in t.items()},
                                          "load_before": before, "load_after": load_now()}
        log(t0, f"{name}: timed at {threads} thread(s)")
    ratios(rows, args.threads)
    result = {"notes": notes, "rows": rows, "verdict": verdict(name, rows, args.threads)}
    if name != "minilm":  # where the time goes, per op type (1 thread)
        result["op_profile_ms"] = {v.name: ort_op_profile(v.path, feed) for v in ok
                                   if v.runtime == "onnxruntime"}
    return result


def ratios(rows: dict[str, dict[str, Any]], threads: list[int]) -> None:
    for t in threads:
        key = f"t{t}"
        bases = {b: rows[b][key]["p50_ms"] for b in ("ort-fp32", "ort-dyn-pc", "ov-nncf-int8",
                                                    "ort-static-u8-pc")
                 if key in rows.get(b, {})}
        for row in rows.values():
            if key in row:
                row[key]["speed_vs"] = {b: round(ms / row[key]["p50_ms"], 3)
                                        for b, ms in bases.items()}


def verdict(name: str, rows: dict[str, dict[str, Any]], threads: list[int]) -> dict[str, Any]:
    """slimkit's pick per thread count (the fastest slimkit variant meeting the fidelity bar)
    and the issue's targets."""
    out: dict[str, Any] = {}
    for t in threads:
        key = f"t{t}"
        cands = {n: r for n, r in rows.items() if n.startswith("slimkit") and key in r}
        if name == "minilm":
            good = {n: r for n, r in cands.items()
                    if r["fidelity"]["cosine_mean"] >= TARGETS["ov_cosine"]
                    and r["fidelity"]["top5_neighbour_agreement"] >= TARGETS["ov_top5"]}
        else:
            good = cands
        pick = min(good, key=lambda n: good[n][key]["p50_ms"], default=None)
        res: dict[str, Any] = {"slimkit_pick": pick}
        if pick:
            res["pick_speed_vs"] = good[pick][key]["speed_vs"]
        ort = rows.get("slimkit-ort" if name == "minilm" else "slimkit-static", {})
        if key in ort:
            res["slimkit_ort_speed_vs"] = ort[key]["speed_vs"]
        out[key] = res
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data, short rounds")
    p.add_argument("--workloads", default="minilm,resnet18,mobilenetv2")
    p.add_argument("--threads", default="1,2")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    args.rounds, args.round_seconds = (3, 0.3) if args.quick else (9, 1.0)
    output = args.output or HERE / "results" / ("int8-quick.json" if args.quick else "int8.json")
    from slimkit.bench.environment import environment
    from slimkit.quantize.preflight import gemm_ratios

    t0 = time.perf_counter()
    u8s8, s8s8 = gemm_ratios()
    payload: dict[str, Any] = {
        "benchmark": "int8 side by side: ONNX Runtime, OpenVINO + NNCF, slimkit",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_int8.py", *(argv or sys.argv[1:])]),
        "cpu": cpu_record(), "environment": environment(),
        "versions": {p: _version(p) for p in ("openvino", "nncf", "onnxruntime")},
        "ort_gemm_ratio_vs_fp32": {"u8s8": round(u8s8, 2), "s8s8": round(s8s8, 2)},
        "load_before": load_now(), "targets": TARGETS, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for name in args.workloads.split(","):
            (Path(tmp) / name).mkdir()
            payload["workloads"][name] = run_workload(name, args, Path(tmp) / name, t0)
            write_json(output, payload)  # partial results survive a later failure
    payload["load_after"] = load_now()
    payload["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(output, payload)
    print(table(payload))
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def table(payload: dict[str, Any]) -> str:
    lines = []
    for name, w in payload["workloads"].items():
        threads = sorted({k for r in w["rows"].values() for k in r if k.startswith("t")})
        lines += [f"\n### {name}\n", "| variant | " + " | ".join(
            f"{t} ms | vs ORT fp32 | vs NNCF" for t in threads) + " | fidelity | int8 proof | MB |",
            "|---" * (4 + 3 * len(threads)) + "|"]
        for vname, r in w["rows"].items():
            if "error" in r:
                lines.append(f"| {vname} | failed: {r['error'][:100]} |")
                continue
            cells = []
            for t in threads:
                s = r.get(t, {})
                sv = s.get("speed_vs", {})
                cells.append(f"{s.get('p50_ms', float('nan')):.2f} | "
                             f"{sv.get('ort-fp32', float('nan')):.2f}x | "
                             f"{sv.get('ov-nncf-int8', float('nan')):.2f}x")
            f = r["fidelity"]
            fid = (f"cos {f['cosine_mean']:.4f} top5 {f['top5_neighbour_agreement']:.3f}"
                   if "cosine_mean" in f else f"SQNR {f['sqnr_db']:.1f} dB")
            lines.append(f"| {vname} | " + " | ".join(cells) +
                         f" | {fid} | {r['proof'].get('ok')} | {r['bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
