"""Weight-only quantization of SmolLM2 (slimkit.llm.wquant) against the anchors, in one run.

Rows, all of builtin:smollm2 (fp32 dequantized from its Q4_1 GGUF):
- fp32: slimkit's export (the reference graph);
- ORT GenAI model builder, built here in-process: int8 (its defaults), int4 default (block 32
  symmetric, int4 shared embedding/head, accuracy level 4), int4 block 128 symmetric;
- llama.cpp on the shipped Q4_1 GGUF and its requantizations to Q8_0 and Q4_0 (run by a Python
  that has llama-cpp-python, --llama-python; skipped when there is none);
- slimkit quantize_weights at several settings: RTN / GPTQ / AWQ / HQQ at block 128 symmetric
  on the decoder layers only (head and embedding fp32: the "two thirds" target, and the torch
  RTN anchor, whose grid ORT's RTN is), and candidate models for the Pareto table.

Perplexity, KL and top-1 agreement against the fp32 torch model on the evaluation part of
builtin:python-reference (8 windows of 512 tokens; 2 with --quick); decode tokens/s (64 new
tokens) and prefill (128-token prompt) in ONNX Runtime GenAI's generator for every ONNX row (the
runtime of the builder anchors), 1 thread, interleaved rounds, medians. Then the targets:
Pareto dominance of each anchor and GPTQ/AWQ's cut of RTN's perplexity increase.
Writes benchmarks/results/llm_quant.json (llm_quant-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import llm_timers as timers  # noqa: E402
from common import git_state, write_json  # noqa: E402

LAYERS_ONLY = {"lm_head": "fp32", "embeddings": "fp32"}
SLIMKIT_ROWS: dict[str, dict[str, Any]] = {
    "rtn b128 sym (layers)": {"block_size": 128, **LAYERS_ONLY},
    "gptq b128 sym (layers)": {"block_size": 128, "method": "gptq", **LAYERS_ONLY},
    "gptq b128 sym act-order (layers)": {"block_size": 128, "method": "gptq", "act_order": True,
                                         **LAYERS_ONLY},
    "awq b128 sym (layers)": {"block_size": 128, "method": "awq", **LAYERS_ONLY},
    "hqq b128 asym (layers)": {"block_size": 128, "method": "hqq", **LAYERS_ONLY},
    "int8 rtn b32 sym": {"mode": "int8"},
    "int8 gguf grid": {"mode": "int8", "method": "gguf"},
    "int4 gguf grid, int zero points": {"method": "gguf"},
    "int4 gguf grid, float zero points (exact)": {"method": "gguf", "float_zero_points": True},
    "int4 gptq b32 sym": {"method": "gptq"},
    "int4 gptq b32 asym": {"method": "gptq", "symmetric": False},
    "int4 gptq b64 sym, int4 head": {"method": "gptq", "block_size": 64, "lm_head": "int4"},
    "int4 gptq b128 sym, int4 head": {"method": "gptq", "block_size": 128, "lm_head": "int4"},
    "int4 gptq b128 sym act-order, int4 head": {"method": "gptq", "block_size": 128,
                                                "lm_head": "int4", "act_order": True},
    "int4 awq b128 sym, int4 head": {"method": "awq", "block_size": 128, "lm_head": "int4"},
    "int4 gptq b128 sym, keep 10% at 8 bits": {"method": "gptq", "block_size": 128,
                                               "keep_8bit": 0.1},
}
QUICK_ROWS = ("rtn b128 sym (layers)", "gptq b128 sym (layers)", "int8 rtn b32 sym",
              "int4 gptq b128 sym, int4 head")
BUILDER_ROWS = {  # name -> (precision, extra options)
    "ort-genai builder int8": ("int8", {}),
    "ort-genai builder int4 default (b32 sym)": ("int4", {}),
    "ort-genai builder int4 b128 sym": ("int4", {"block_size": "128"}),
}
ANCHORS = {  # the anchors -> the row that re-measures each here
    "llama.cpp Q4_1": "llama.cpp Q4_1", "llama.cpp Q8_0": "llama.cpp Q8_0",
    "llama.cpp Q4_0": "llama.cpp Q4_0", "ORT GenAI builder int8": "ort-genai builder int8",
    "ORT GenAI builder int4 default": "ort-genai builder int4 default (b32 sym)",
    "ORT GenAI builder int4 b128 sym": "ort-genai builder int4 b128 sym",
    "torch RTN int4 b128 sym (layers, fake-quant)": "rtn b128 sym (layers)",
}


def build_slimkit(model: Any, rows: list[str], scratch: Path, quick: bool) -> dict[str, Any]:
    from slimkit.llm.wquant import AdvancedWeightQuantConfig, WeightQuantConfig, quantize_weights

    out = {}
    for name in rows:
        kw = dict(SLIMKIT_ROWS[name])
        advanced = AdvancedWeightQuantConfig(
            ppl_windows=1, speed_rounds=0, float_zero_points=kw.pop("float_zero_points", False),
            gptq_act_order=kw.pop("act_order", False),
            calibration_windows=8 if quick else 16)
        start = time.perf_counter()
        result = quantize_weights(model, scratch / f"s{len(out)}",
                                  WeightQuantConfig(advanced=advanced, **kw))
        report = result.report
        out[name] = {"folder": result.folder, "config": report["config"],
                     "seconds": round(time.perf_counter() - start, 1),
                     "accuracy_level": report["accuracy_level"], "size": report["size"],
                     "op_types": report["op_types"], "graph_check": report["graph_check"],
                     "layers_8bit": sum(1 for layer in report["layers"] if layer["bits"] == 8)}
        print(f"built {name} in {out[name]['seconds']} s", file=sys.stderr, flush=True)
    return out


def build_builder(model: Any, scratch: Path) -> dict[str, Any]:
    """The builder's own int8/int4 models, made in-process from the same fp32 weights."""
    import contextlib
    import io

    from onnxruntime_genai.models import builder

    from slimkit.llm.load import save_hf_folder

    hf = save_hf_folder(model, scratch / "hf")
    out = {}
    for name, (precision, options) in BUILDER_ROWS.items():
        folder = scratch / f"b{len(out)}"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            extra = builder.parse_extra_options(None, str(hf), str(folder), precision, "cpu",
                                                str(scratch / "cache"),
                                                [f"{k}={v}" for k, v in options.items()])
            builder.create_model(None, str(hf), str(folder), precision, "cpu",
                                 str(scratch / "cache"), **extra)
        out[name] = {"folder": folder, "options": {"precision": precision, **options},
                     "size": {"quantized_bytes": sum(p.stat().st_size for p in folder.iterdir()
                                                     if p.name.startswith("model.onnx"))}}
    return out


def quality(model: Any, folders: dict[str, Path], windows: int) -> dict[str, Any]:
    from slimkit.llm.evaluate import PerplexityConfig, compare
    from slimkit.llm.load import load_generation_folder

    config = PerplexityConfig(window=512, stride=512, max_tokens=512 * windows)
    out = {}
    for name, folder in folders.items():
        out[name] = compare(load_generation_folder(folder), model, config, threads=2)
        print(f"  {name}: ppl {out[name]['perplexity']:.3f} "
              f"({100 * out[name]['perplexity_change']:+.2f}%)", file=sys.stderr, flush=True)
    return out


def speed(folders: dict[str, Path], prompt: list[int], rounds: int, new: int,
          scratch: Path) -> dict[str, Any]:
    """GenAI generator timing, all rows interleaved, 1 thread."""
    models = {n: timers.genai_model(f, 1, scratch) for n, f in folders.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in models}
    for m in models.values():
        timers.time_genai(m, prompt, 4)
    for _ in range(rounds):
        for name, m in models.items():
            first, steps = timers.time_genai(m, prompt, new)
            samples[name][0].append(first)
            samples[name][1].extend(steps)
    return {n: {"prefill_ms": round(1000 * float(np.median(f)), 1),
                "decode_tok_s": round(1 / float(np.median(s)), 2)}
            for n, (f, s) in samples.items()}


def llama_rows(python: str | None, gguf: str, ids: np.ndarray, prompt: list[int], rounds: int,
               new: int, scratch: Path) -> dict[str, Any]:
    if not python or not Path(python).is_file():
        return {}
    np.save(scratch / "ids.npy", ids)
    np.save(scratch / "prompt.npy", np.asarray(prompt))
    done = subprocess.run([python, str(HERE / "llama_cpp_rows.py"), gguf,
                           str(scratch / "ids.npy"), str(scratch / "prompt.npy"), "--rounds",
                           str(rounds), "--new", str(new)], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        print(f"llama.cpp rows failed: {done.stderr[-500:]}", file=sys.stderr)
        return {}
    rows = json.loads(done.stdout)
    version = rows.pop("version")
    return {f"llama.cpp {k}": {**v, "llama_cpp": version} for k, v in rows.items()}


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pareto dominance of each anchor, and GPTQ/AWQ's cut of RTN's increase at b128 sym."""
    ours = {n: r for n, r in rows.items() if r.get("kind") == "slimkit" and "decode_tok_s" in r}
    pareto = {}
    for anchor, row in ANCHORS.items():
        a = rows.get(row)
        if a is None:
            continue
        winners = [n for n, r in ours.items() if n != row
                   and r["ppl_increase"] <= max(a["ppl_increase"], 0.0) + 1e-9
                   and ("decode_tok_s" not in a or (r["decode_tok_s"] >= a["decode_tok_s"]
                                                    and r["prefill_ms"] <= a["prefill_ms"]))]
        pareto[anchor] = {"anchor_row": row, "dominated_by": winners, "met": bool(winners)}
    rtn = rows.get("rtn b128 sym (layers)", {}).get("ppl_increase")
    cuts = {}
    for method in ("gptq", "awq"):
        other = rows.get(f"{method} b128 sym (layers)", {}).get("ppl_increase")
        if rtn and other is not None:
            cuts[method] = {"rtn": rtn, method: other, "cut": round(1 - other / rtn, 3),
                            "met": other <= rtn / 3}
    return {"pareto": pareto, "two_thirds_cut_at_b128_sym": cuts}


def row_names(text: str) -> list[str]:
    """The rows of a comma-separated list whose names may hold commas themselves."""
    names, current = [], ""
    for part in text.split(","):
        current = f"{current},{part}" if current else part
        if current.strip() in SLIMKIT_ROWS:
            names.append(current.strip())
            current = ""
    if current:
        raise SystemExit(f"unknown rows: {current.strip()!r}; known: {', '.join(SLIMKIT_ROWS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 slimkit rows, 2 windows, 1 round")
    p.add_argument("--rows", help="comma-separated slimkit rows (default: all)")
    p.add_argument("--llama-python", default="/work/wt-llm/.venv/bin/python",
                   help="a Python with llama-cpp-python for the llama.cpp rows")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    from slimkit.bench.environment import environment
    from slimkit.llm.evaluate import token_ids
    from slimkit.llm.export import export_for_generation
    from slimkit.llm.load import load_smollm2
    from slimkit.llm.text import python_reference

    started, load_before = time.perf_counter(), os.getloadavg()
    windows, rounds, new = (2, 1, 64) if args.quick else (8, 3, 64)
    names = row_names(args.rows) if args.rows else list(QUICK_ROWS if args.quick
                                                        else SLIMKIT_ROWS)
    model = load_smollm2()
    ids = token_ids(model.tokenizer, python_reference("evaluation").text, 8192)
    prompt = ids[1000:1128].tolist()
    with tempfile.TemporaryDirectory(prefix="bench-wq-") as tmp:
        scratch = Path(tmp)
        fp32 = export_for_generation(model, scratch / "fp32").folder
        built = {"fp32 (slimkit export)": {"folder": fp32}}
        built.update({n: {**r, "kind": "builder"} for n, r in build_builder(model,
                                                                           scratch).items()})
        built.update({n: {**r, "kind": "slimkit"} for n, r in build_slimkit(
            model, names, scratch, args.quick).items()})
        folders = {n: r["folder"] for n, r in built.items()}
        scores = quality(model, folders, windows)
        timing = speed(folders, prompt, rounds, new, scratch)
        llama = llama_rows(args.llama_python, model.meta["gguf_file"], ids[:512 * windows],
                           prompt, rounds, new, scratch)
    reference = scores["fp32 (slimkit export)"]["reference_perplexity"]
    rows: dict[str, dict[str, Any]] = {}
    for name, info in built.items():
        rows[name] = {**{k: v for k, v in info.items() if k != "folder"}, **timing[name],
                      "perplexity": scores[name]["perplexity"],
                      "ppl_increase": scores[name]["perplexity_change"],
                      "kl_mean": scores[name]["kl_mean"],
                      "top1_agreement": scores[name]["top1_agreement"]}
    for name, info in llama.items():
        rows[name] = {**info, "kind": "llama.cpp",
                      "ppl_increase": info["perplexity"] / reference - 1}
    payload = {
        "benchmark": "weight-only int4/int8 of SmolLM2-135M: perplexity increase, KL, top-1 vs "
                     "fp32; decode tok/s (64 new tokens) and prefill (128 tokens), 1 thread",
        "text": f"builtin:python-reference:evaluation, {windows} windows of 512 tokens",
        "calibration": "builtin:python-reference:calibration",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_llm_quant.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "rounds": rounds, "environment": environment(),
        "git": git_state(), "load_average": {"before": load_before, "after": os.getloadavg()},
        "reference_perplexity": reference, "rows": rows, "targets": targets(rows),
        "total_seconds": round(time.perf_counter() - started, 1)}
    output = args.output or HERE / "results" / ("llm_quant-quick.json" if args.quick
                                                else "llm_quant.json")
    write_json(output, json.loads(json.dumps(payload, default=str)))
    print(markdown(rows))
    print(json.dumps(payload["targets"], indent=1))
    print(f"wrote {output} in {payload['total_seconds']} s", file=sys.stderr)
    return 0


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| row | ppl increase | KL | top-1 | decode tok/s | prefill ms | MB |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        size = r.get("size", {}).get("quantized_bytes")
        lines.append(f"| {name} | {100 * r['ppl_increase']:+.2f}% | {r.get('kl_mean', '-')} | "
                     f"{r.get('top1_agreement', '-')} | {r.get('decode_tok_s', '-')} | "
                     f"{r.get('prefill_ms', '-')} | {size / 1e6 if size else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
