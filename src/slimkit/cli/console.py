"""Terminal output of the CLI: rich tables built from the result objects (no logic here)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from slimkit.report.format import fmt

# a pipe or a log file has no width; rich would then cut tables at 80 columns
console = Console(width=None if sys.stdout.isatty() else 140)


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    if not rows:
        console.print(f"[bold]{title}[/bold]: nothing to show")
        return
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        left = column in ("model", "runtime", "type", "name", "op", "key", "value", "format")
        table.add_column(column, justify="left" if left else "right")
    for row in rows:
        table.add_row(*(fmt(row.get(c, "")) for c in columns))
    console.print(table)


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    print_table(title, [{"key": k, "value": v} for k, v in mapping.items()], ["key", "value"])


BENCH_COLUMNS = ["model", "runtime", "threads", "batch", "p50_ms", "p90_ms", "p99_ms",
                 "throughput", "peak_memory_mb", "speedup"]
# (examples/s for throughput; peak_memory_mb: what the model takes to run, weights included: see
# BenchRow)


def print_bench(rows: list[dict[str, Any]], skipped: list[dict[str, str]],
                warnings: Sequence[str] = ()) -> None:
    print_table("Latency (ms; speedup vs the first row of each thread/batch setting)", rows,
                BENCH_COLUMNS)
    for item in skipped:
        console.print(f"skipped {item['model']} on {item['runtime']}: {item['reason']}")
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def print_demo(report: Any, paths: dict[str, Any]) -> None:
    s = report.sections
    rows = [{"model": r["format"], "accuracy": r["accuracy"], "parameters": r["parameters"],
             "MACs": r["macs"], "size_KB": r["size_bytes"] / 1024} for r in s["size"]]
    print_table(f"Digits CNN on {s['accuracy']['test_examples']} test images", rows)
    q = s["quantization"]
    fid = s["onnx_vs_torch"]
    console.print(
        f"ONNX export verified: max abs diff {fid['max_abs_error']:.2g}, "
        f"top-1 agreement {fid['top1_agreement']:.4f}, SQNR {fid['sqnr_db']:.1f} dB"
    )
    console.print(
        f"int8: integer kernels {'confirmed' if q['integer_kernels'] else 'MISSING'} "
        f"({q['integer_ops']} integer ops); preflight expected {q['preflight_expected_speedup']}x"
        f" ({'pays' if q['preflight_pays'] else 'not expected to pay on this CPU'})")
    pr = s.get("pruning")
    if pr:
        console.print(
            f"pruned {pr['ratio']:.0%} of channels: {fmt(pr['parameters_before'])} -> "
            f"{fmt(pr['parameters_after'])} parameters, accuracy {pr['accuracy_original']:.4f} "
            f"-> {pr['accuracy_pruned']:.4f}; after {pr['steps']} steps: fine-tuned "
            f"{pr['accuracy_finetuned']:.4f}, distilled from the original "
            f"{pr['accuracy_distilled']:.4f}")
    dc = s.get("deep_compression")
    if dc:
        console.print(
            f"Deep Compression: {dc['file']} is {dc['file_bytes']:,} bytes, "
            f"{dc['ratio']:.1f}x smaller than fp32 safetensors; accuracy "
            f"{dc['accuracy']['before']:.4f} -> {dc['accuracy']['after']:.4f}")
    se = s.get("search")
    if se and "skipped" in se:
        console.print(f"automatic search skipped: {se['skipped']}")
    elif se:
        best = se.get("best") or {}
        verdict = "met" if se["met_budget"] else "NOT met (closest model written)"
        speed = f", {best['speedup']:.2f}x faster" if best.get("speedup") else ""
        console.print(f"automatic search (max drop {se['max_drop']}): budget {verdict}; best: "
                      f"trial {best.get('trial')}, drop {best.get('drop', float('nan')):.4f}"
                      f"{speed}, {best.get('bytes', 0):,} bytes -> {se['folder']}")
    print_bench(s["latency"], [])
    html = f" and {paths['html']}" if "html" in paths else ""
    console.print(f"report: {paths['json']}, {paths['markdown']}{html}")


def print_analysis(data: dict[str, Any]) -> None:
    console.print(f"[bold]{data['model']['name']}[/bold] ({data['model']['framework']}): "
                  f"{fmt(data['parameters'])} parameters, {fmt(data['macs'])} MACs at inputs "
                  f"{data['input_shapes']}, {data['size_bytes'] / 2**20:.2f} MiB "
                  f"({data['compressed_bytes'] / 2**20:.2f} MiB compressed)")
    print_table("Inputs", data["model"]["inputs"])
    macs = data["macs"] or 1
    print_table("MACs by layer type", [
        {"type": t, "macs": v, "share": v / macs} for t, v in data["macs_by_type"].items()])
    print_table("Parameters by layer type", [
        {"type": t, "parameters": v} for t, v in data["params_by_type"].items()])
    print_table("Top layers by MACs", [
        {"name": row["name"], "type": row["type"], "macs": row["macs"],
         "share": row["macs"] / macs} for row in data["top_layers"]])
    print_table(f"Measured ONNX Runtime kernel time by op type "
                f"({data['kernel_ms_per_run']:.3g} ms per run, {data['threads']} thread(s))", [
        {"op": op, "share": share} for op, share in data["latency_by_op"].items()
        if share >= 0.001])


def print_quantize(report: dict[str, Any], report_path: Any) -> None:
    pre = report["preflight"]
    console.print(f"[bold]preflight[/bold] ({pre['mode']}, {pre['activation_type']} activations "
                  f"on {pre['cpu']}): expected speed-up {pre['expected_speedup']:.2f}x -> "
                  f"{'expected to pay' if pre['pays'] else 'NOT expected to pay here'}")
    for reason in pre["reasons"]:
        console.print(f"  - {reason}")
    metric = report["metric"]
    console.print(f"[bold]{metric['name']}[/bold]: float {metric['float']:.4f}, quantized "
                  f"{metric['quantized']:.4f} (drop {metric['drop']:+.4f}); fidelity "
                  f"{fmt(metric['fidelity'])}")
    proof = report.get("proof")
    if proof is not None:
        state = "integer kernels confirmed" if proof["ok"] else "NO integer kernels"
        console.print(f"[bold]kernels[/bold]: {state} ({proof['integer_ops']} integer ops, "
                      f"{proof['float_compute_ops']} float compute ops left; unfused QDQ: "
                      f"{len(proof['unfused_qdq'])})")
    worst = sorted(report.get("diagnosis", []), key=lambda row: -row["added_db"])[:3]
    for row in worst:
        channels = row["outlier_channels"]
        outliers = f", outlier channels {channels}" if channels else ""
        console.print(f"  adds error: {row['layer']} ({row['type']}): output SQNR "
                      f"{row['sqnr_db']:.1f} dB{outliers}")
    aware = report.get("accuracy_aware")
    if aware is not None:
        console.print(f"[bold]accuracy budget[/bold] {aware['budget']:.4g}: "
                      f"{len(aware['steps']) - 1} revert step(s), kept in float: "
                      f"{aware['reverted'] or 'none'}")
        if "message" in aware:
            console.print(f"[yellow]{aware['message']}[/yellow]")
    if "latency" in report:
        print_bench(report["latency"], [])
        verdict = report["verdict"]
        line = f"measured speed-up {verdict['measured_speedup']:.2f}x over the float model"
        console.print(line if verdict["faster"] else f"[yellow]{line}: {verdict['why']}[/yellow]")
    size = report["size"]
    console.print(f"size {size['float_bytes'] / 2**20:.2f} MiB -> "
                  f"{size['quantized_bytes'] / 2**20:.2f} MiB; wrote {report['path']} and "
                  f"{report_path}")


def print_prune(sections: dict[str, Any], folder: Any) -> None:
    size = sections.get("size", {})
    print_mapping("Pruning: before and after", size)
    scan = sections.get("sensitivity")
    if scan:
        print_table(f"Sensitivity ({scan['metric']}, unpruned {scan['baseline']:.4f}; each "
                    "group pruned alone)", scan["rows"],
                    ["group", "layers", "channels", "ratio", "kept", "metric", "drop"])
    tuning = sections.get("finetune")
    if tuning:
        print_table("Prune -> fine-tune steps (metric before / after fine-tuning)",
                    [{k: v for k, v in step.items() if k != "losses"}
                     for step in tuning["steps"]])
    latency = sections.get("latency")
    if latency:
        print_bench(latency["rows"], [], latency.get("warnings", []))
    for note in (sections.get("speed"), *[f"left unpruned: {s}" for s in
                                         sections.get("skipped", [])][:10]):
        if note:
            console.print(str(note))
    console.print(f"wrote {folder} (load it with slimkit.load_model or any command)")


def print_diff(d: dict[str, Any], path: Any = None) -> None:
    console.print(f"[bold]{d['compressed']}[/bold] vs [bold]{d['original']}[/bold] on "
                  f"{d['examples']} examples: output SQNR {fmt(d['fidelity']['sqnr_db'])} dB")
    if d["top1_agreement"] is not None:
        console.print(f"top-1 agreement {d['top1_agreement']:.4f}; accuracy "
                      f"{fmt(d['accuracy']) or 'n/a (no labels)'}")
        print_table("Per-class accuracy (original -> compressed)", d["per_class"])
        print_table(f"Flipped predictions ({d['flipped_total']} in all; most confident "
                    "originals first)", d["flipped"] or [])
    if d["embedding"]:
        print_mapping("Embedding fidelity", d["embedding"])
        print_table("Nearest neighbours that changed", d["neighbours"])
    if d["layer_sqnr"]:
        print_table("Per-layer output SQNR (dB), input to output", d["layer_sqnr"],
                    ["layer", "sqnr_db"])
    elif d["layer_sqnr_note"]:
        console.print(f"per-layer SQNR not available: {d['layer_sqnr_note']}")
    if path:
        console.print(f"wrote {path}")


def print_advice(a: dict[str, Any], path: Any = None) -> None:
    m = a["measurements"]
    simd = ", ".join(m["simd"]) or "no SIMD flags"
    dot = "yes" if m["int8_dot_product"] else "no"
    console.print(f"[bold]{a['model']}[/bold] on {m['cpu']} ({simd}; int8 dot product: {dot}), "
                  f"{m['threads']} thread(s): {m['kernel_ms_per_run']:.3g} ms of kernels per run;"
                  f" integer GEMM measured {m['gemm_ratio_u8s8']:.2f}x fp32 (u8 x s8)")
    top = sorted(m["latency_by_op"].items(), key=lambda kv: -kv[1])[:6]
    console.print("time by op: " + ", ".join(f"{op} {share:.0%}" for op, share in top))
    columns = ["technique", "predicted_speedup", "measured_speedup", "size_ratio", "pays"]
    if not a["verified"]:
        columns.remove("measured_speedup")
    print_table("Recommendations, best predicted first (speed-up over float, batch "
                "latency in ONNX Runtime)", a["recommendations"], columns)
    for rec in a["recommendations"]:
        console.print(f"[bold]{rec['technique']}[/bold]: {rec['why']}")
        if rec["trial"] or rec["fidelity"]:
            console.print("  trial: " + "; ".join(t for t in (rec["trial"], rec["fidelity"]) if t))
    if a["ordering_agrees"] is not None:
        state = "matches" if a["ordering_agrees"] else "does NOT match"
        console.print(f"predicted ordering {state} the measured ordering")
    for note in a["notes"]:
        console.print(f"[dim]{note}[/dim]")
    if path:
        console.print(f"wrote {path}")
