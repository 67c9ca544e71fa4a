"""Causal LM on CPU: time to first token and decode speed, side by side in one process.

SmolLM2-135M-Instruct (builtin:smollm2, fp32 dequantized from its Q4_1 GGUF). Prompts of 128
and 512 tokens cut from real English text (the Python Language Reference prose shipped with
Python, evaluation part: slimkit.llm.text), then exactly 64 greedy new tokens with a KV cache.
Rows, each at 1 and 2 threads, interleaved over rounds:

- torch: transformers' ``generate`` (HF generate, eager fp32);
- slimkit onnxruntime: the folder written by ``slimkit export`` (graph by ORT GenAI's model
  builder plus slimkit's last-token LM head, verified against torch) run by slimkit's Python
  engine (``slimkit.llm.engine``); the same folder in ONNX Runtime GenAI's C++ generator;
- ort-genai builder fp32: the builder's graph as it is (full LM head) in GenAI's generator,
  the anchor's row;
- plain torch.onnx export: the exporter alternative slimkit did not choose (TorchScript export
  with an explicit cache, no fused ops), run by slimkit's engine;
- llama.cpp (llama-cpp-python) on the original Q4_1 GGUF, where it is installed.

Time to first token (TTFT) is prefill plus choosing the first token; decode tokens/s is 1 / the
p50 (and p90) of the per-token step times, pooled over rounds. Perplexity of each on the same
text (disjoint windows of 512; 4,096 tokens, 1,024 with --quick). Writes
benchmarks/results/llm.json (llm-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import llm_timers as timers  # noqa: E402

BUILDER = "builder graph as is"
GENAI_ROW = "ort-genai builder fp32 (GenAI runtime)"  # the anchor's row
from bench_quantize import git_state  # noqa: E402
from bench_runtimes import write_json  # noqa: E402


def prompts(tokenizer: Any, lengths: tuple[int, ...]) -> dict[int, list[int]]:
    from slimkit.llm.evaluate import token_ids
    from slimkit.llm.text import python_reference

    ids = token_ids(tokenizer, python_reference("evaluation").text, 8192)
    return {n: ids[1000:1000 + n].tolist() for n in lengths}


def summarise(ttfts: list[float], steps: list[float]) -> dict[str, Any]:
    p50, p90 = np.percentile(steps, 50), np.percentile(steps, 90)
    return {"ttft_ms": round(float(np.median(ttfts)) * 1000, 1),
            "decode_tok_s_p50": round(1 / float(p50), 2),
            "decode_tok_s_p90": round(1 / float(p90), 2),  # the slow tail: 90th pct step time
            "rounds": len(ttfts), "steps": len(steps)}


def build_rows(model: Any, folders: dict[str, Path], threads: int, scratch: Path,
               gguf: str | None) -> dict[str, tuple[Any, Any]]:
    """name -> (timing function, its runtime object), all opened at ``threads``."""
    from slimkit.llm.load import load_generation_folder
    from slimkit.llm.runtime import open_runtime

    hf = model.module.model
    rows: dict[str, tuple[Any, Any]] = {"torch (HF generate)": (timers.time_hf_generate, hf)}
    for name, folder in folders.items():
        if name == BUILDER:
            continue
        runtime = open_runtime(load_generation_folder(folder), "onnxruntime", threads)
        rows[f"{name} (slimkit engine)"] = (timers.time_engine, runtime)
    rows["slimkit export (GenAI runtime)"] = (
        timers.time_genai, timers.genai_model(folders["slimkit onnxruntime"], threads, scratch))
    rows[GENAI_ROW] = (timers.time_genai, timers.genai_model(folders[BUILDER], threads, scratch))
    if gguf:
        rows["llama.cpp Q4_1 GGUF"] = (timers.time_llama_cpp,
                                       timers.llama_cpp_model(gguf, threads, 1024))
    return rows


def time_rows(rows: dict[str, tuple[Any, Any]], cases: dict[int, list[int]], threads: int,
              rounds: int, new: int) -> dict[str, Any]:
    import torch

    from slimkit.llm.runtime import torch_threads

    out: dict[str, Any] = {}
    with torch_threads(threads):
        for length, prompt in cases.items():
            samples: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r in rows}
            for fn, obj in rows.values():  # warm-up, untimed
                fn(obj, prompt, 4)
            for _ in range(rounds):
                for name, (fn, obj) in rows.items():
                    ttft, steps = fn(obj, prompt, new)
                    samples[name][0].append(ttft)
                    samples[name][1].extend(steps)
            for name, (ttfts, steps) in samples.items():
                out.setdefault(name, {})[f"prompt_{length}"] = summarise(ttfts, steps)
                print(f"  {threads}t prompt {length:4d} {name:45s} "
                      f"{out[name][f'prompt_{length}']}", file=sys.stderr)
    del torch
    return out


def perplexities(model: Any, folders: dict[str, Path], gguf: str | None,
                 max_tokens: int) -> dict[str, Any]:
    from slimkit.llm.evaluate import PerplexityConfig, compare, perplexity, token_ids
    from slimkit.llm.load import load_generation_folder
    from slimkit.llm.text import python_reference

    config = PerplexityConfig(window=512, stride=512, max_tokens=max_tokens)
    result: dict[str, Any] = {"torch": perplexity(model, config, threads=2)}
    for name, folder in folders.items():  # the builder's own graph scored through slimkit's
        key = GENAI_ROW if name == BUILDER else name  # ORT session: GenAI gives no all-logits
        result[key] = compare(load_generation_folder(folder), model, config, threads=2)
    if gguf:
        ids = token_ids(model.tokenizer, python_reference("evaluation").text, max_tokens)
        llm = timers.llama_cpp_model(gguf, 2, 512, logits_all=True)
        result["llama.cpp Q4_1 GGUF"] = {"perplexity": timers.llama_cpp_perplexity(llm, ids, 512)}
    return result


def export_folders(model: Any, scratch: Path, plain: bool) -> dict[str, Path]:
    from slimkit.llm.export import GenerationExportConfig, export_for_generation

    for name in ("slimkit", "builder"):
        (scratch / name).mkdir()
    start = time.perf_counter()
    result = export_for_generation(model, scratch / "slimkit" / "gen")
    print(f"exported + verified in {time.perf_counter() - start:.0f} s: "
          f"{result.report['verification']}", file=sys.stderr)
    as_is = export_for_generation(model, scratch / "builder" / "gen",
                                  GenerationExportConfig(last_token_head=False))
    folders = {"slimkit onnxruntime": result.folder, BUILDER: as_is.folder}
    if plain:
        folders["plain torch.onnx export"] = timers.plain_onnx_export(
            model.module.model, result.folder, scratch / "plain")
    return folders


def llama_cpp_gguf(model: Any) -> tuple[str | None, str | None]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None, "llama-cpp-python is not installed (it compiles llama.cpp from source)"
    return model.meta.get("gguf_file"), None


def markdown(payload: dict[str, Any]) -> str:
    """One table: a row per runtime, TTFT and decode p50 per thread count and prompt, ppl."""
    timing, ppl = payload["timing"], payload["perplexity"]
    columns = [(t, p) for t in timing for p in next(iter(timing[t].values()))]
    head = " | ".join(f"{t.split('_')[1]}t {p.split('_')[1]}: TTFT ms / tok/s"
                      for t, p in columns)
    lines = [f"| runtime | {head} | perplexity |", "|---" * (len(columns) + 2) + "|"]
    for name in next(iter(timing.values())):
        cells = [f"{timing[t][name][p]['ttft_ms']:.0f} / {timing[t][name][p]['decode_tok_s_p50']}"
                 for t, p in columns]
        key = {"torch (HF generate)": "torch", "slimkit export (GenAI runtime)":
               "slimkit onnxruntime"}.get(name, name.replace(" (slimkit engine)", ""))
        value = ppl.get(key)
        shown = f"{value['perplexity']:.3f}" if isinstance(value, dict) else "= slimkit graph"
        lines.append(f"| {name} | {' | '.join(cells)} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--no-plain-export", action="store_true",
                   help="skip the torch.onnx.export alternative")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    from slimkit.bench.environment import environment
    from slimkit.llm.load import load_smollm2

    rounds, new, lengths, ppl_tokens = ((1, 16, (128,), 1024) if args.quick
                                        else (3, 64, (128, 512), 4096))
    output = args.output or RESULTS / ("llm-quick.json" if args.quick else "llm.json")
    started, load_before = time.perf_counter(), os.getloadavg()
    model = load_smollm2()
    gguf, why_not = llama_cpp_gguf(model)
    cases = prompts(model.tokenizer, lengths)
    timing: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        folders = export_folders(model, Path(tmp), not args.no_plain_export)
        for threads in (int(t) for t in args.threads.split(",")):
            rows = build_rows(model, folders, threads, Path(tmp), gguf)
            timing[f"threads_{threads}"] = time_rows(rows, cases, threads, rounds, new)
            del rows
            gc.collect()
        ppl = perplexities(model, folders, gguf, ppl_tokens)
    payload = {
        "benchmark": "causal LM generation on CPU: TTFT and decode tokens/s, batch 1, greedy, "
                     f"{new} new tokens; perplexity on the same text",
        "model": "builtin:smollm2 (SmolLM2-135M-Instruct, fp32 from the Q4_1 GGUF)",
        "text": "builtin:python-reference:evaluation (Python Language Reference prose, "
                "shipped with CPython as pydoc_data.topics)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_llm.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "rounds": rounds, "new_tokens": new,
        "environment": environment(), "git": git_state(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "llama_cpp": why_not or "included",
        "timing": timing, "perplexity": ppl,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output, payload)
    print(markdown(payload))
    print(f"wrote {output} in {payload['total_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
