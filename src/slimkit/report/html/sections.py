"""Detail renderers of the sections slimkit's own commands write. A technique adds its own with
``@SECTIONS.register("name")``; a section without a renderer is shown as plain tables."""

from __future__ import annotations

from typing import Any

from slimkit.report.format import fmt
from slimkit.report.html import plots
from slimkit.report.html.load import RunDocument
from slimkit.report.html.render import SECTIONS, esc, generic, table

BENCH_COLUMNS = ["model", "runtime", "threads", "batch", "p50_ms", "p90_ms", "p99_ms",
                 "throughput", "speedup", "other_cpu_cores"]


@SECTIONS.register("latency")
def latency(rows: list[dict[str, Any]], doc: RunDocument) -> str:
    note = ('<p class="muted">Rows of one thread/batch setting were measured interleaved in one '
            "run; compare their speed-up column, not milliseconds across machines.</p>")
    return table(rows, [c for c in BENCH_COLUMNS if any(c in r for r in rows)]) + note


def _reasons(reasons: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>"


@SECTIONS.register("quantize")
def quantize(q: dict[str, Any], doc: RunDocument) -> str:
    pre, metric = q["preflight"], q["metric"]
    parts = [f"<p><b>Preflight</b> ({esc(pre['mode'])}, {esc(pre['activation_type'])} "
             f"activations): expected {fmt(pre['expected_speedup'])}x, "
             f"{'expected to pay' if pre['pays'] else 'not expected to pay here'}</p>",
             _reasons(pre.get("reasons", [])),
             f"<p><b>{esc(metric.get('name', 'metric'))}</b>: float {fmt(metric['float'])}, "
             f"quantized {fmt(metric['quantized'])}</p>"]
    verdict = q.get("verdict")
    if verdict:
        cls = "good" if verdict.get("faster") else "bad"
        parts.append(f'<p class="{cls}">measured {fmt(verdict["measured_speedup"])}x over float'
                     f"{': ' + esc(verdict['why']) if 'why' in verdict else ''}</p>")
    rest = {k: v for k, v in q.items() if k not in ("preflight", "metric", "verdict")}
    return "".join(parts) + generic(rest, doc)


@SECTIONS.register("behaviour_diff")
def behaviour_diff(d: dict[str, Any], doc: RunDocument) -> str:
    parts = [f"<p>{esc(d.get('original', 'original'))} vs {esc(d.get('compressed', 'compressed'))}"
             f" on {fmt(d.get('examples'))} examples: top-1 agreement "
             f"<b>{fmt(d.get('top1_agreement'))}</b></p>"]
    if d.get("accuracy"):
        parts.append(table([{"model": k, "accuracy": v} for k, v in d["accuracy"].items()]))
    if d.get("per_class"):
        parts.append("<h4>Per-class accuracy</h4>" + table(d["per_class"]))
    if d.get("flipped") is not None:
        parts.append(f"<h4>Flipped predictions ({fmt(d.get('flipped_total', len(d['flipped'])))}"
                     f" in all)</h4>" + (table(d["flipped"]) if d["flipped"] else
                                          "<p>none: every prediction is the same</p>"))
    layers = d.get("layer_sqnr")
    if isinstance(layers, list) and layers:
        points = [(float(i), float(r["sqnr_db"])) for i, r in enumerate(layers)
                  if isinstance(r.get("sqnr_db"), (int, float))]
        parts.append(plots.curves({"output SQNR": points}, ("layer index (input to output)",
                                                             "SQNR (dB)"),
                                  "Per-layer output SQNR along the network"))
        parts.append("<details><summary>per-layer table</summary>" + table(layers) + "</details>")
    elif d.get("layer_sqnr_note"):
        parts.append(f'<p class="missing">per-layer SQNR: {esc(d["layer_sqnr_note"])}</p>')
    if d.get("neighbours"):
        parts.append("<h4>Nearest neighbours that changed</h4>" + table(d["neighbours"]))
    return "".join(parts)


@SECTIONS.register("advice")
def advice(a: dict[str, Any], doc: RunDocument) -> str:
    rows = a["recommendations"]
    measured = any(r.get("measured_speedup") is not None for r in rows)
    columns = ["technique", "predicted_speedup", *(["measured_speedup"] if measured else []),
               "size_ratio", "pays", "why", *(["fidelity", "trial"] if measured else [])]
    parts = [table(rows, columns)]
    if measured and "ordering_agrees" in a:
        cls = "good" if a["ordering_agrees"] else "bad"
        parts.append(f'<p class="{cls}">predicted ordering '
                     f"{'matches' if a['ordering_agrees'] else 'does NOT match'} the measured "
                     "ordering</p>")
    parts.append(generic(a.get("measurements", {}), doc))
    return "".join(parts)
