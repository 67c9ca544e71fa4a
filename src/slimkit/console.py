"""Terminal output of the CLI: rich tables built from the result objects (no logic here)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from slimkit.report import fmt

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
# (examples/s for throughput; peak_memory_mb: resident-memory rise while the session was created
# and warmed up)


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
    acc = s["accuracy"]
    rows = [
        {"runtime": rt, "accuracy": acc[rt], "parameters": size["parameters"],
         "MACs": size["macs"], "size_KB": size["size_bytes"] / 1024}
        for rt, size in zip(("torch", "onnxruntime"), s["size"], strict=True)
    ]
    print_table(f"Digits CNN on {acc['test_examples']} test images", rows)
    fid = s["onnx_vs_torch"]
    console.print(
        f"ONNX export verified: max abs diff {fid['max_abs_error']:.2g}, "
        f"top-1 agreement {fid['top1_agreement']:.4f}, SQNR {fid['sqnr_db']:.1f} dB"
    )
    print_bench(s["latency"], [])
    console.print(f"report: {paths['json']} and {paths['markdown']}")


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
