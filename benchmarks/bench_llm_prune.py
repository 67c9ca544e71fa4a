"""Pruning a decoder LM on CPU, side by side in one run: what each method costs in perplexity,
what it saves in size and what it gains (or not) in ONNX Runtime decode speed at fp32.

SmolLM2-135M-Instruct (builtin:smollm2, fp32). Variants, each made by ``slimkit.llm.prune``
(calibrated on the calibration part of builtin:python-reference only):

- depth 25% (block influence: 8 of 30 layers), recovered by ``slimkit.llm.distill``
  (next-token KL from the original, through the one training loop; steps, tokens and CPU
  minutes recorded); width: FFN 1536 -> 1152 alone, and with query heads 9 -> 6 (evenly per
  key/value group);
- 2:4 and 50% unstructured with magnitude, Wanda and SparseGPT: same shapes, so the report
  shows their size in a sparse format and compressed (zlib), and measures their (absent) speed.

Every variant is exported with ``slimkit.llm.export_for_generation`` (fp32, verified against its
torch model) and timed in ONNX Runtime GenAI's generator, 1 thread, interleaved rounds: prompt of
128 tokens (TTFT) then 64 greedy tokens (decode tok/s, p50 of the step times). Perplexity, KL and
top-1 agreement against the unpruned model on the evaluation part (8 windows of 512; 2 with
--quick). Writes benchmarks/results/llm_prune.json (llm_prune-quick.json with --quick).
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import llm_timers as timers  # noqa: E402
from bench_llm import prompts, summarise  # noqa: E402
from bench_quantize import git_state  # noqa: E402
from bench_runtimes import write_json  # noqa: E402

STRUCTURED = {
    "depth 25%": {"method": "depth", "ratio": 0.25},
    "width FFN 25%": {"method": "width", "head_ratio": 0.0, "ffn_ratio": 0.25},
    "width heads 1/3 + FFN 25%": {"method": "width", "head_ratio": 0.34, "ffn_ratio": 0.25},
}
DISTILLED = ("depth 25%",)  # distillation costs ~15 CPU s a step of 1,024 tokens here
SPARSE = {
    "magnitude 2:4": {"method": "magnitude", "pattern": "2:4"},
    "wanda 2:4": {"method": "wanda", "pattern": "2:4"},
    "sparsegpt 2:4": {"method": "sparsegpt", "pattern": "2:4"},
    "wanda 50%": {"method": "wanda", "ratio": 0.5},
    "sparsegpt 50%": {"method": "sparsegpt", "ratio": 0.5},
}
QUICK = ("depth 25%", "wanda 2:4")
DEFAULT = ("depth 25%", "width FFN 25%", "magnitude 2:4", "wanda 2:4", "sparsegpt 2:4",
           "wanda 50%")  # the others with --variants


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def make_variants(model: Any, names: list[str], distill: tuple[int, float],
                  windows: int) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (pruned model, record of how it was made)."""
    from slimkit.llm.distill import LLMDistillConfig, distill_llm
    from slimkit.llm.prune import LLMPruneConfig, prune_llm

    out: dict[str, tuple[Any, dict[str, Any]]] = {"unpruned": (model, {})}
    for name in names:
        settings = {**STRUCTURED, **SPARSE}[name]
        result = prune_llm(model, LLMPruneConfig(**settings, windows=windows))
        report = {k: v for k, v in result.report.items() if k not in ("sparsity", "plan")}
        if "sparsity" in result.report:
            report["sparsity"] = result.report["sparsity"]["decoder_linear"]
        log(f"{name}: pruned in {report['seconds']} s, check {report['check']}")
        out[name] = (result.model, {"prune": report})
        if name in DISTILLED and distill[0]:
            config = LLMDistillConfig(steps=distill[0], lr=distill[1], threads=1)
            distilled = distill_llm(result.model, model, config=config)
            d = distilled.report
            log(f"{name} + distill: {d['steps']} steps, {d['tokens']} tokens, "
                f"{d['cpu_minutes']} CPU min, KL {d['kl_before']} -> {d['kl_after']}")
            out[f"{name} + distill"] = (distilled.model, {"prune": report, "distill": d})
    return out


def sizes(model: Any, compress: bool) -> dict[str, Any]:
    """fp32 and sparse-format bytes; zlib level 1 (gzip -1) bytes where zeros are the point."""
    from slimkit.llm.prune.size import compressed_bytes, weight_bytes

    hf = model.module.model
    return {**weight_bytes(hf), "zlib": compressed_bytes(hf, level=1) if compress else None}


def quality(variants: dict[str, tuple[Any, dict[str, Any]]], reference: Any,
            max_tokens: int) -> dict[str, Any]:
    from slimkit.llm.evaluate import PerplexityConfig, compare

    config = PerplexityConfig(window=512, stride=512, max_tokens=max_tokens)
    out = {}
    for name, (model, _) in variants.items():
        r = compare(model, reference, config, threads=2)
        out[name] = {k: r[k] for k in ("perplexity", "reference_perplexity", "perplexity_change",
                                       "kl_mean", "top1_agreement", "tokens_scored")}
        log(f"{name}: ppl {r['perplexity']:.3f} ({100 * r['perplexity_change']:+.1f}%)")
    return out


def export_all(variants: dict[str, tuple[Any, dict[str, Any]]], scratch: Path) -> dict[str, Path]:
    from slimkit.llm.export import export_for_generation

    folders = {}
    for i, (name, (model, _)) in enumerate(variants.items()):
        result = export_for_generation(model, scratch / f"v{i}")
        v = result.report["verification"]
        log(f"{name}: exported, verified (max abs logit diff {v['max_abs_logit_diff']:.2g})")
        folders[name] = result.folder
    return folders


def time_all(folders: dict[str, Path], prompt: list[int], scratch: Path, rounds: int,
             new: int) -> dict[str, Any]:
    models = {name: timers.genai_model(folder, 1, scratch) for name, folder in folders.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in models}
    for model in models.values():  # warm-up, untimed
        timers.time_genai(model, prompt, 4)
    names = list(models)
    for r in range(rounds):  # the order rotates: no variant is always first after a switch
        for name in names[r % len(names):] + names[:r % len(names)]:
            ttft, steps = timers.time_genai(models[name], prompt, new)
            samples[name][0].append(ttft)
            samples[name][1].extend(steps)
    out = {name: summarise(*s) for name, s in samples.items()}
    base = out["unpruned"]["decode_tok_s_p50"]
    for name, row in out.items():
        row["decode_speedup"] = round(row["decode_tok_s_p50"] / base, 3)
        log(f"  {name:28s} {row}")
    del models
    gc.collect()
    return out


def markdown(rows: dict[str, Any]) -> str:
    lines = ["| variant | ppl (change) | KL | decode tok/s (x unpruned) | TTFT ms | fp32 MB | "
             "sparse-format MB | zlib MB | CPU min (prune + distill) |", "|---" * 9 + "|"]
    for name, r in rows.items():
        q, t, s = r["quality"], r["timing"], r["bytes"]
        zlib = f"{s['zlib'] / 1e6:.0f}" if s["zlib"] else "-"
        cpu = (r.get("prune", {}).get("seconds", {}).get("cpu", 0)
               + r.get("distill", {}).get("seconds", {}).get("cpu", 0)) / 60
        lines.append(f"| {name} | {q['perplexity']:.2f} ({100 * q['perplexity_change']:+.1f}%) "
                     f"| {q['kl_mean']:.3f} | {t['decode_tok_s_p50']} ({t['decode_speedup']}x) "
                     f"| {t['ttft_ms']:.0f} | {s['dense'] / 1e6:.0f} | "
                     f"{s['sparse_format'] / 1e6:.0f} | "
                     f"{zlib} | {cpu:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--variants", help="comma-separated subset of: "
                   + ", ".join([*STRUCTURED, *SPARSE]).replace("%", "%%"))
    p.add_argument("--distill-steps", type=int, help="steps of 4 x 256 tokens (default 48; "
                   "--quick 4)")
    p.add_argument("--distill-lr", type=float, default=2e-4, help="peak learning rate")
    p.add_argument("--model", default="builtin:smollm2",
                   help="the causal LM (default builtin:smollm2; a tiny HF folder for a smoke run)")
    p.add_argument("--windows", type=int, default=32, help="calibration windows of 512")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5; --quick 2)")
    p.add_argument("--ppl-tokens", type=int, help="evaluation tokens (default 4096; --quick "
                   "1024)")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    from slimkit.bench.environment import environment
    from slimkit.load import load_model

    rounds, new, ppl_tokens, steps = (2, 32, 1024, 4) if args.quick else (5, 64, 4096, 48)
    steps = steps if args.distill_steps is None else args.distill_steps
    rounds = args.rounds or rounds
    ppl_tokens = args.ppl_tokens or ppl_tokens
    names = args.variants.split(",") if args.variants else \
        list(QUICK if args.quick else DEFAULT)
    output = args.output or RESULTS / ("llm_prune-quick.json" if args.quick else "llm_prune.json")
    started, load_before = time.perf_counter(), os.getloadavg()
    model = load_model(args.model)
    variants = make_variants(model, names, (steps, args.distill_lr), args.windows)
    rows: dict[str, Any] = {name: dict(record) for name, (_, record) in variants.items()}
    for name, (variant, _) in variants.items():
        rows[name]["bytes"] = sizes(variant, name == "unpruned" or name in SPARSE)
    for name, result in quality(variants, model, ppl_tokens).items():
        rows[name]["quality"] = result
    with tempfile.TemporaryDirectory(prefix="bench-llm-prune-") as tmp:
        folders = export_all(variants, Path(tmp))
        prompt = prompts(model.tokenizer, (128,))[128]
        for name, result in time_all(folders, prompt, Path(tmp), rounds, new).items():
            rows[name]["timing"] = result
    payload = {
        "benchmark": "decoder LM pruning: perplexity, size, ONNX Runtime GenAI fp32 decode "
                     f"tok/s (1 thread, prompt 128, {new} greedy new tokens)",
        "model": args.model + (" (SmolLM2-135M-Instruct, fp32 from the Q4_1 GGUF)"
                               if args.model == "builtin:smollm2" else ""),
        "calibration": "builtin:python-reference:calibration",
        "evaluation": f"builtin:python-reference:evaluation, {ppl_tokens} tokens, windows of 512",
        "speed_note": "unstructured and 2:4 zeros leave every matrix dense in ONNX Runtime's "
                      "CPU kernels: no speed-up is expected and the timing rows show it",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_llm_prune.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "rounds": rounds, "environment": environment(),
        "git": git_state(), "load_average": {"before": load_before, "after": os.getloadavg()},
        "rows": rows, "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output, payload)
    print(markdown(rows))
    log(f"wrote {output} in {payload['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
