"""W8A8 for a causal LM on CPU: SmoothQuant + int8 weights + dynamic int8 activations, side by
side with ONNX Runtime fp32 and torch's dynamic int8 (the anchor of issue 18), in one process.

SmolLM2-135M-Instruct (builtin:smollm2). slimkit's ``quantize_w8a8`` with its defaults (alpha
searched per layer by emulated error, per-token activations, LM head weight-only int8) and, in
the full run, ablations: no smoothing, per-tensor activations (ONNX Runtime's
``quantize_dynamic``), one global alpha, the LM head float, an int8 KV cache. Also ORT's
weight-only int8 (MatMulNBits, block 32, accuracy level 4, head included) on the fp32 graph:
the decode reference for a memory-bound step, and the most a hybrid (W8A8 prefill, weight-only
decode) could reach at decode.

Timing: a prompt of 128 tokens of held-out text, exactly 64 greedy new tokens, every row run by
slimkit's engine, rounds interleaved after a warm-up, 1 thread; prefill ms = time to the first
token (median), decode tok/s = 1 / median step. Fidelity against the fp32 torch model on the
evaluation part of builtin:python-reference (8 windows of 512; 2 with --quick): perplexity
increase, mean KL, top-1 agreement. Calibration only on the calibration part.
Writes benchmarks/results/llm_w8a8.json (llm_w8a8-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import CpuMeter, cpu_record, git_state, load_now, log, write_json  # noqa: E402

FP32 = "onnxruntime fp32"
MAIN = "w8a8 slimkit (per-layer SmoothQuant, per-token)"
TORCH_INT8 = "torch dynamic int8 (no smoothing)"
WEIGHT_ONLY = "weight-only int8 MatMulNBits (acc 4)"


def variants(quick: bool) -> dict[str, dict[str, Any]]:
    """Row name -> W8A8Config fields changed from the defaults."""
    rows: dict[str, dict[str, Any]] = {MAIN: {}}
    if not quick:
        rows.update({
            "w8a8 no smoothing (per-token)": {"smoothing": "off"},
            "w8a8 per-layer SmoothQuant, per-tensor (ORT quantize_dynamic)":
                {"activations": "tensor"},
            "w8a8 global alpha (per-token)": {"smoothing": "global"},
            "w8a8 LM head float": {"lm_head": "float"},
            "w8a8 + int8 KV cache": {"kv_cache": "int8"},
        })
    return rows


def make_w8a8(model: Any, scratch: Path, quick: bool, ppl: Any) -> dict[str, Any]:
    from slimkit.llm.w8a8 import AdvancedW8A8, W8A8Config, quantize_w8a8

    advanced = AdvancedW8A8(calibration_tokens=2048, search_tokens=512) if quick \
        else AdvancedW8A8()
    made = {}
    for i, (name, fields) in enumerate(variants(quick).items()):
        started = time.perf_counter()
        config = W8A8Config(evaluation=ppl, speed=None, advanced=advanced, **fields)
        result = quantize_w8a8(model, scratch / f"w8a8-{i}", config, threads=1)
        made[name] = {"folder": result.folder, "report": result.report,
                      "seconds": round(time.perf_counter() - started, 1)}
        log(START, f"{name}: {_fidelity_line(result.report['fidelity'])}")
    return made


def weight_only_int8(fp32: Path, out: Path) -> Path:
    """ORT's own weight-only int8 (MatMulNBits, block 32, accuracy level 4), head included."""
    import shutil

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    out.mkdir()
    for item in fp32.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".data"):
            shutil.copy2(item, out / item.name)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32 / "model.onnx")), bits=8,
                                     block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out / "model.onnx"), use_external_data_format=True)
    return out


def _fidelity_line(f: dict[str, Any]) -> str:
    return (f"ppl {f['perplexity']:.3f} ({100 * f['perplexity_change']:+.2f}%), KL "
            f"{f['kl_mean']:.4f}, top-1 {f['top1_agreement']:.3f}")


def targets(rows: dict[str, Any]) -> dict[str, Any]:
    main, fp32, torch8 = rows[MAIN], rows[FP32], rows[TORCH_INT8]
    speedup = fp32["speed"]["prefill_ms"] / main["speed"]["prefill_ms"]
    change = main["fidelity"]["perplexity_change"]
    return {
        "prefill_2x_fp32_at_3pct": {"prefill_speedup": round(speedup, 2),
                                    "perplexity_change": round(change, 4),
                                    "met": speedup >= 2.0 and change <= 0.03},
        "dominates_torch_dynamic_int8": {
            "met": (change <= torch8["fidelity"]["perplexity_change"]
                    and main["speed"]["decode_tok_s"] >= torch8["speed"]["decode_tok_s"]
                    and main["speed"]["prefill_ms"] <= torch8["speed"]["prefill_ms"])},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    from slimkit.llm.evaluate import PerplexityConfig, compare
    from slimkit.llm.export import export_for_generation
    from slimkit.llm.load import load_generation_folder, load_smollm2
    from slimkit.llm.runtime import open_runtime
    from slimkit.llm.w8a8.measure import measure, prompt_ids, torch_dynamic_int8

    rounds, new = (1, 16) if args.quick else (3, 64)
    ppl = PerplexityConfig(max_tokens=1024 if args.quick else 4096)
    output = args.output or HERE / "results" / ("llm_w8a8-quick.json" if args.quick
                                                else "llm_w8a8.json")
    load_before = load_now()
    model = load_smollm2()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-w8a8-") as tmp:
        scratch = Path(tmp)
        fp32 = export_for_generation(model, scratch / "fp32").folder
        made = make_w8a8(model, scratch, args.quick, ppl)
        folders = {FP32: fp32, **{name: m["folder"] for name, m in made.items()}}
        if not args.quick:
            folders[WEIGHT_ONLY] = weight_only_int8(fp32, scratch / "weight-only")
        torch8 = torch_dynamic_int8(model)
        runtimes = {name: open_runtime(load_generation_folder(f), "onnxruntime", args.threads)
                    for name, f in folders.items()}
        runtimes[TORCH_INT8] = open_runtime(torch8, "torch", args.threads)
        prompt = prompt_ids(model, ppl.text, 128)
        log(START, f"timing {len(runtimes)} rows, {rounds} rounds of {new} tokens")
        meter = CpuMeter()
        timing = measure(runtimes, prompt, new, rounds, args.threads)
        busy = meter.cores()
        for name, speed in timing.items():
            rows[name] = {"speed": speed}
            log(START, f"{name}: {speed}")
        for name, m in made.items():
            rows[name].update(fidelity=m["report"]["fidelity"], graph=m["report"]["graph"],
                              verb_seconds=m["seconds"])
        rows[MAIN]["smoothing"] = made[MAIN]["report"]["smoothing"]
        rows[FP32]["fidelity"] = {"perplexity_change": 0.0, "note": "verified equal to torch"}
        rows[TORCH_INT8]["fidelity"] = compare(torch8, model, ppl, threads=args.threads)
        if WEIGHT_ONLY in folders:
            rows[WEIGHT_ONLY]["fidelity"] = compare(load_generation_folder(folders[WEIGHT_ONLY]),
                                                    model, ppl, threads=args.threads)
        log(START, f"{TORCH_INT8}: {_fidelity_line(rows[TORCH_INT8]['fidelity'])}")
    payload = {
        "benchmark": "W8A8 (SmoothQuant + int8 weights + dynamic int8 activations) for a causal "
                     f"LM on CPU, batch 1, {args.threads} thread(s), prompt {len(prompt)} "
                     f"tokens, {new} new tokens",
        "model": "builtin:smollm2 (SmolLM2-135M-Instruct, fp32 from the Q4_1 GGUF)",
        "text": "calibration: builtin:python-reference:calibration; evaluation: "
                f"builtin:python-reference:evaluation, {ppl.max_tokens} tokens in windows of "
                f"{ppl.window}",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_llm_w8a8.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "cpu": cpu_record(), "git": git_state(),
        "load_average": {"before": load_before, "after": load_now()},
        "other_processes_while_timing": busy,
        "rows": rows, "targets": targets(rows),
        "total_seconds": round(time.perf_counter() - START, 1),
    }
    write_json(output, payload)
    for name, row in rows.items():
        f, s = row["fidelity"], row["speed"]
        print(f"| {name} | {100 * f['perplexity_change']:+.2f}% | {s['decode_tok_s']} | "
              f"{s['prefill_ms']} |")
    print(f"targets: {payload['targets']}")
    log(START, f"wrote {output}")
    return 0


START = time.perf_counter()

if __name__ == "__main__":
    sys.exit(main())
