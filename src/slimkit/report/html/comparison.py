"""The before/after table and the list of steps, derived from the sections techniques write.

A run either carries a ``comparison`` section (rows built with :func:`comparison_row`, as the
demo does) or the table is derived from ``slimkit quantize``'s and ``slimkit prune``'s reports.
Steps come from a registry keyed by section name, so a new technique adds its line by
registering a function in ``STEPS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from slimkit.registry import Registry
from slimkit.report.format import fmt
from slimkit.report.html.load import RunDocument

StepDeriver = Callable[[Any], list[dict[str, str]]]
STEPS: Registry[StepDeriver] = Registry("report step")


def comparison_row(variant: str, stats: dict[str, Any] | None = None,
                   latency: dict[str, Any] | None = None,
                   metric: float | None = None) -> dict[str, Any]:
    """One row of the before/after table from ``model_stats(...).to_dict()`` and a bench row.

    Example:
        >>> comparison_row("int8", {"size_bytes": 10, "parameters": 5, "macs": 7},
        ...                {"p50_ms": 1.0, "p99_ms": 2.0, "throughput": 1000.0}, 0.98)["p99_ms"]
        2.0
    """
    row: dict[str, Any] = {"variant": variant}
    for key in ("size_bytes", "parameters", "macs"):
        if stats and stats.get(key) is not None:
            row[key] = stats[key]
    for key in ("p50_ms", "p99_ms", "throughput", "speedup"):
        if latency and latency.get(key) is not None:
            row[key] = latency[key]
    if metric is not None:
        row["metric"] = metric
    return row


def comparison_rows(doc: RunDocument) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, content in doc.sections.items():
        base = re.sub(r" \(\d+\)$", "", name)
        if base == "comparison" and isinstance(content, list):
            rows += [dict(r) for r in content]
        elif base == "quantize" and isinstance(content, dict):
            rows += _from_quantize(content)
        elif base == "prune" and isinstance(content, dict):
            rows += _from_prune(content)
    metrics = [r.get("metric") for r in rows if isinstance(r.get("metric"), (int, float))]
    for row in rows:
        if isinstance(row.get("metric"), (int, float)) and metrics and "metric_delta" not in row:
            row["metric_delta"] = row["metric"] - metrics[0]
    return rows


def first_setting(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latency rows of the first (threads, batch) setting, in order."""
    if not rows:
        return []
    key = (rows[0].get("threads"), rows[0].get("batch"))
    return [r for r in rows if (r.get("threads"), r.get("batch")) == key]


def _from_quantize(q: dict[str, Any]) -> list[dict[str, Any]]:
    size, metric = q.get("size", {}), q.get("metric", {})
    lat = first_setting(q.get("latency", []))
    mode = q.get("config", {}).get("mode", "quantized")
    return [comparison_row("float", {"size_bytes": size.get("float_bytes")},
                           lat[0] if lat else None, metric.get("float")),
            comparison_row(f"{mode} ({q.get('path', '')})",
                           {"size_bytes": size.get("quantized_bytes")},
                           lat[-1] if len(lat) > 1 else None, metric.get("quantized"))]


def _from_prune(p: dict[str, Any]) -> list[dict[str, Any]]:
    size = p.get("size", {})
    lat = first_setting(p.get("latency", {}).get("rows", []))
    before = {"size_bytes": size.get("bytes_before", size.get("compressed_bytes_before")),
              "parameters": size.get("parameters_before"), "macs": size.get("macs_before")}
    after = {"size_bytes": size.get("bytes_after", size.get("compressed_bytes_after")),
             "parameters": size.get("parameters_after"), "macs": size.get("macs_after")}
    mode = p.get("config", {}).get("mode", "pruned")
    return [comparison_row("original", before, lat[0] if lat else None),
            comparison_row(f"{mode} {p.get('config', {}).get('ratio', '')}", after,
                           lat[-1] if len(lat) > 1 else None)]


def derived_steps(doc: RunDocument) -> list[dict[str, str]]:
    rows = []
    for name, content in doc.sections.items():
        base = re.sub(r" \(\d+\)$", "", name)
        if base in STEPS:
            rows += STEPS.get(base)(content)
    return rows


@STEPS.register("export")
def _export(e: dict[str, Any]) -> list[dict[str, str]]:
    return [{"step": "export to ONNX", "effect": f"verified: {fmt(e.get('verified', e))}"}]


@STEPS.register("onnx_vs_torch")
def _onnx_vs_torch(f: dict[str, Any]) -> list[dict[str, str]]:
    return [{"step": "run in ONNX Runtime", "effect":
             f"top-1 agreement {fmt(f.get('top1_agreement'))}, max abs error "
             f"{fmt(f.get('max_abs_error'))}, SQNR {fmt(f.get('sqnr_db'))} dB vs torch"}]


@STEPS.register("quantization")
def _demo_quantization(q: dict[str, Any]) -> list[dict[str, str]]:
    kernels = "integer kernels confirmed" if q.get("integer_kernels") else "NO integer kernels"
    return [{"step": q.get("mode", "quantize"), "effect":
             f"accuracy {fmt(q.get('accuracy_fp32'))} -> {fmt(q.get('accuracy_int8'))}; "
             f"{kernels}; preflight expected {fmt(q.get('preflight_expected_speedup'))}x "
             f"({'pays' if q.get('preflight_pays') else 'not expected to pay on this CPU'})"}]


@STEPS.register("quantize")
def _quantize(q: dict[str, Any]) -> list[dict[str, str]]:
    metric, verdict = q.get("metric", {}), q.get("verdict", {})
    speed = (f"; measured {fmt(verdict['measured_speedup'])}x (expected "
             f"{fmt(verdict.get('expected_speedup'))}x)" if "measured_speedup" in verdict else "")
    return [{"step": f"quantize {q.get('config', {}).get('mode', '')}", "effect":
             f"{metric.get('name', 'metric')} {fmt(metric.get('float'))} -> "
             f"{fmt(metric.get('quantized'))}{speed}"}]


@STEPS.register("prune")
def _prune(p: dict[str, Any]) -> list[dict[str, str]]:
    size, cfg = p.get("size", {}), p.get("config", {})
    effect = (f"parameters x{fmt(size['parameters_ratio'])}, MACs x{fmt(size['macs_ratio'])}"
              if "macs_ratio" in size else str(p.get("speed", "")))
    if "latency" in p:
        effect += f"; measured speed-up {fmt(p['latency'].get('speedup'))}x"
    return [{"step": f"prune {cfg.get('mode', '')} {fmt(cfg.get('ratio'))}", "effect": effect}]


@STEPS.register("behaviour_diff")
def _diff(d: dict[str, Any]) -> list[dict[str, str]]:
    return [{"step": "behaviour diff", "effect":
             f"top-1 agreement {fmt(d.get('top1_agreement'))}, "
             f"{len(d.get('flipped', []))} flipped examples shown"}]


@STEPS.register("sensitivity")
def _sensitivity(s: dict[str, Any]) -> list[dict[str, str]]:
    rows = s.get("rows", [])
    worst = min(rows, key=lambda r: r.get("metric", 1.0), default=None)
    effect = (f"{len(rows)} points; most sensitive: {worst.get('layers')} at ratio "
              f"{fmt(worst.get('ratio'))} -> {fmt(worst.get('metric'))} "
              f"(baseline {fmt(s.get('baseline'))})" if worst else "no groups")
    return [{"step": "sensitivity scan (each channel group pruned alone)", "effect": effect}]


@STEPS.register("pruning")
def _demo_pruning(p: dict[str, Any]) -> list[dict[str, str]]:
    return [{"step": f"prune {fmt(p.get('ratio'))} of channels ({p.get('importance', '')})",
             "effect": f"parameters {fmt(p.get('parameters_before'))} -> "
                       f"{fmt(p.get('parameters_after'))}; accuracy "
                       f"{fmt(p.get('accuracy_original'))} -> {fmt(p.get('accuracy_pruned'))}"},
            {"step": f"recover {fmt(p.get('steps'))} steps: fine-tune vs distill",
             "effect": f"fine-tuned {fmt(p.get('accuracy_finetuned'))}, distilled "
                       f"{fmt(p.get('accuracy_distilled'))}"}]


@STEPS.register("deep_compression")
def _deep_compression(d: dict[str, Any]) -> list[dict[str, str]]:
    acc = d.get("accuracy", {})
    return [{"step": "Deep Compression (prune, share weights, entropy-code) into .slim",
             "effect": f"{fmt(d.get('file_bytes'))} bytes, {fmt(d.get('ratio'))}x smaller than "
                       f"fp32; accuracy {fmt(acc.get('before'))} -> {fmt(acc.get('after'))}"}]


@STEPS.register("search")
def _search(s: dict[str, Any]) -> list[dict[str, str]]:
    if "skipped" in s:
        return [{"step": "automatic search", "effect": f"skipped: {s['skipped']}"}]
    best = s.get("best") or {}
    verdict = "budget met" if s.get("met_budget") else "budget NOT met"
    speed = f", {fmt(best['speedup'])}x faster" if "speedup" in best else ""
    budget = s.get("max_drop", s.get("config", {}).get("max_drop"))
    return [{"step": f"automatic search (max drop {fmt(budget)})",
             "effect": f"{verdict}; best trial {best.get('trial')}: drop "
                       f"{fmt(best.get('drop'))}{speed}"}]
