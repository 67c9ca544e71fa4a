"""``slimkit demo``: the whole pipeline that exists, end to end, on the embedded default model.

Train (once, cached) the built-in digits CNN, evaluate it, export it to ONNX and verify the
export, compare both runtimes' accuracy and fidelity, quantize it to static int8 (with the speed
preflight and the proof of integer kernels), prune 70% of its channels and recover them by
fine-tuning and by distillation side by side (after a sensitivity scan of every channel group),
Deep-Compress it into a ``.slim`` file, run a short automatic search under a 1-point budget
(``demo_stages.py``), benchmark the original (torch and ONNX Runtime), int8, the pruned student,
the ``.slim`` model and the searched model side by side, and write ``report.json``,
``report.md`` and ``report.html``. Each technique added to slimkit adds its stage here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimkit.io import prepare_output_folder
from slimkit.report.document import REPORT_FORMAT, Report

DEMO_MODEL = "builtin:digits-cnn"
DEMO_TITLE = "slimkit demo"


@dataclass(frozen=True)
class DemoConfig:
    """``quick`` shortens the benchmark (for tests); the numbers are then only indicative."""

    out: Path = Path("slimkit-demo")
    seed: int = 0
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1, 32)
    quick: bool = False


def run_demo(config: DemoConfig | None = None) -> Report:
    """Run the demo and write its report into ``config.out``; return the report.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "demo"
        >>> report = run_demo(DemoConfig(out=out, quick=True))
        >>> report.sections["accuracy"]["onnxruntime"] >= 0.95
        True
    """
    from slimkit.bench.core import BenchConfig, benchmark
    from slimkit.bench.environment import environment
    from slimkit.data import load_data
    from slimkit.demo import stages
    from slimkit.evaluate.diff import behaviour_diff
    from slimkit.evaluate.metrics import accuracy, output_fidelity, predict
    from slimkit.export.onnx import export_onnx
    from slimkit.load import load_model
    from slimkit.quantize import QuantizeConfig, QuantMode, quantize

    config = config or DemoConfig()
    out = prepare_output_folder(config.out, reuse=is_demo_folder)
    model = load_model(DEMO_MODEL, seed=config.seed)
    test = load_data("builtin:digits:test", model)
    train = load_data("builtin:digits:train", model)
    val = load_data("builtin:digits:val", model)
    exported = export_onnx(model, out / "digits-cnn.onnx", sample=test.take(64))
    torch_logits = predict(model, test, "torch")
    ort_logits = predict(exported.model, test, "onnxruntime")
    labels = test.labels if test.labels is not None else torch_logits.argmax(1)
    int8 = quantize(model, out / "digits-cnn-int8.onnx", QuantizeConfig(mode=QuantMode.STATIC),
                    calib=train, eval_data=test,
                    measure=False)
    int8_model = replace(int8.model, name="digits-cnn-int8")
    sensitivity = stages.sensitivity(model, val, config.seed)
    pruning, student = stages.pruning_and_recovery(model, train, test, out, config.seed,
                                                   config.quick)
    compact, slim = stages.deep_compression(model, train, test, out, config.seed, config.quick)
    searched_section, searched = stages.auto_search(model, train, val, out, config.seed,
                                                    config.quick)
    variants = [model, int8_model, student, slim] + ([searched] if searched else [])
    bench = benchmark(variants, BenchConfig(
        threads=config.threads, batches=config.batches, seed=config.seed,
        rounds=2 if config.quick else 7, round_seconds=0.05 if config.quick else 0.4))
    accuracies = {
        ("digits-cnn", "torch"): accuracy(torch_logits, labels),
        ("digits-cnn", "onnxruntime"): accuracy(ort_logits, labels),
        ("digits-cnn-int8", "onnxruntime"): int8.sections["metric"]["quantized"],
        (student.name, "onnxruntime"): pruning["accuracy_distilled"],
        (slim.name, "onnxruntime"): compact["accuracy"]["after"],
    }
    if searched is not None:
        accuracies[(searched.name, "onnxruntime")] = accuracy(
            predict(searched, test, "onnxruntime"), labels)

    report = Report(f"{DEMO_TITLE}: digits CNN, torch vs ONNX Runtime, fp32 vs int8",
                    seed=config.seed,
                    environment=environment())
    report.add("model", {**model.describe(), "trained": model.meta})
    report.add("accuracy", {"torch": accuracies[("digits-cnn", "torch")],
                            "onnxruntime": accuracies[("digits-cnn", "onnxruntime")],
                            "test_examples": len(test)})
    report.add("export", exported.to_dict())
    report.add("onnx_vs_torch", output_fidelity(torch_logits, ort_logits))
    report.add("quantization", {
        "mode": "static int8 (QDQ), calibrated on the digits train split",
        "accuracy_fp32": int8.sections["metric"]["float"],
        "accuracy_int8": int8.sections["metric"]["quantized"],
        "preflight_expected_speedup": int8.sections["preflight"]["expected_speedup"],
        "preflight_pays": int8.sections["preflight"]["pays"],
        "preflight_reasons": int8.sections["preflight"]["reasons"],
        "integer_kernels": int8.sections["proof"]["ok"],
        "integer_ops": int8.sections["proof"]["integer_ops"],
        "size_bytes": int8.sections["size"]["quantized_bytes"],
    })
    report.add("sensitivity", sensitivity)
    report.add("pruning", pruning)
    report.add("deep_compression", compact)
    report.add("search", searched_section)
    sizes = [("torch", model, accuracies[("digits-cnn", "torch")], None),
             ("onnx", exported.model, accuracies[("digits-cnn", "onnxruntime")], None),
             ("onnx int8", int8.model, accuracies[("digits-cnn-int8", "onnxruntime")], None),
             ("onnx pruned + distilled", student, pruning["accuracy_distilled"], None),
             (".slim (Deep Compression)", slim, compact["accuracy"]["after"],
              compact["file_bytes"])]
    if searched is not None:
        sizes.append(("onnx searched", searched, accuracies[(searched.name, "onnxruntime")],
                      None))
    report.add("size", [_size_row(*row) for row in sizes])
    rows = bench.to_dict()["rows"]
    report.add("latency", rows)
    report.add("comparison", _comparison(
        [(model, "torch"), (exported.model, "onnxruntime"), *(
            (m, "onnxruntime") for m in variants[1:])], rows, accuracies,
        {slim.name: compact["file_bytes"]}))
    report.add("latency_by_op", _op_profile(
        {"ORT fp32": exported.model, "ORT int8": int8.model}, 3 if config.quick else 20))
    report.add("layers", [{**row, "bits": 8} for row in int8.sections.get("diagnosis", [])])
    report.add("behaviour_diff", behaviour_diff(exported.model, int8_model, test).to_dict())
    report.add("notes", [
        "Latency rows of one thread/batch setting were measured interleaved in one run; "
        "compare their speedup column, not milliseconds across machines.",
        "speedup = p50 of the first row of the same setting / p50 of the row.",
        "peak_memory_mb = what the model takes to run here (weights and runtime buffers).",
    ])
    report.write(out, html=True)
    return report


def _comparison(variants: list[tuple[Any, str]], rows: list[dict[str, Any]],
                accuracies: dict[tuple[str, str], float],
                file_bytes: dict[str, int]) -> list[dict[str, Any]]:
    """Before/after rows: size, parameters, MACs, batch-1 latency and accuracy per variant
    (``file_bytes`` overrides the size of variants stored in their own format)."""
    from slimkit.analyse.stats import model_stats
    from slimkit.report.html import comparison_row

    out = []
    for model, runtime in variants:
        name = model.name
        row = next((r for r in rows if r["model"] == name and r["runtime"] == runtime
                    and r["batch"] == 1), None)
        stats = model_stats(model).to_dict()
        if name in file_bytes:
            stats["size_bytes"] = file_bytes[name]
        out.append(comparison_row(f"{name} ({runtime})", stats, row,
                                  accuracies.get((name, runtime))))
    return out


def _op_profile(models: dict[str, object], runs: int) -> dict[str, object]:
    """ONNX Runtime kernel milliseconds per op type, per model (its own profiler)."""
    from slimkit.analyse.profile import profile_ops

    result = {}
    for label, model in models.items():
        shares, ms = profile_ops(model, 1, 128, 1, runs)  # type: ignore[arg-type]
        result[label] = {op: share * ms for op, share in shares.items()}
    return {"unit": "ms", "models": result}


def _size_row(name: str, model: Any, accuracy: float, file_bytes: int | None) -> dict[str, Any]:
    from slimkit.analyse.stats import model_stats

    stats = model_stats(model)
    return {"format": name, "accuracy": accuracy, "parameters": stats.parameters,
            "macs": stats.macs, "size_bytes": file_bytes or stats.size_bytes,
            "compressed_bytes": file_bytes or stats.compressed_bytes}


def is_demo_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the report of an earlier ``slimkit demo``."""
    import json

    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(report, dict) and report.get("format") == REPORT_FORMAT
            and str(report.get("title", "")).startswith(DEMO_TITLE))
