"""The summary views of the HTML report. Each gathers its data from whichever sections carry it
(the demo's, ``slimkit quantize``'s, ``slimkit prune``'s, a search's) and returns None when the
run has none, so the page marks it as missing.

Section layouts a view reads (other techniques add data by writing these):

- ``comparison``: rows ``{variant, size_bytes, parameters, macs, p50_ms, p99_ms, throughput,
  metric, metric_delta}`` (any subset).
- ``latency_by_op``: ``{"unit": "ms", "models": {name: {op_type: value}}}``.
- ``layers``: rows ``{layer, <numeric columns: sparsity, bits, rank, sqnr_db, ...>}``.
- ``search``: ``{"objectives": [{"name", "label", "minimize"}, x2], "trials": [rows]}`` (the
  proxy trials, drawn on the two objectives) and/or ``"finalists": [rows with p50_ms, drop]``.
- ``sensitivity``: ``{"x": label, "y": label, "layers": {layer: [[x, y], ...]}}``.
- ``steps``: rows ``{step, effect}``; ``skipped``: rows ``{layer, why}``.
"""

from __future__ import annotations

from typing import Any

from slimkit.report.html import plots
from slimkit.report.html.comparison import comparison_rows
from slimkit.report.html.load import RunDocument
from slimkit.report.html.render import VIEWS, View, esc, table

LAYER_COLUMNS = ("sparsity", "bits", "rank", "kept_ratio", "sqnr_db")


def _sections(doc: RunDocument, kind: str) -> list[tuple[str, Any]]:
    """Sections named ``kind`` or ``kind (2)``..."""
    return [(n, c) for n, c in doc.sections.items() if n == kind or n.startswith(kind + " (")]


def before_after(doc: RunDocument) -> str | None:
    rows = comparison_rows(doc)
    if not rows:
        return None
    columns = ["variant", "size_bytes", "parameters", "macs", "p50_ms", "p99_ms", "throughput",
               "speedup", "metric", "metric_delta"]
    present = [c for c in columns if any(c in r for r in rows)]
    note = ('<p class="muted">Latency at batch 1 (the first thread setting); speed-up = '
            "p50 of the first row / p50 of the row, measured side by side in one run.</p>")
    return table(rows, present) + note


def latency_by_op(doc: RunDocument) -> str | None:
    charts = []
    for name, content in _sections(doc, "latency_by_op"):
        models = content["models"]
        unit = content.get("unit", "share")
        charts.append(plots.grouped_bars(models, f"Kernel time by operator type ({name})",
                                         f"ONNX Runtime kernel time ({unit} per run)"))
    analyses = [(n, c) for n, c in _sections(doc, "analysis")]
    analyses += [(n, c["measurements"]) for n, c in _sections(doc, "advice")]
    for name, content in analyses:
        shares = content["latency_by_op"]
        charts.append(plots.bars(list(shares.items()), f"Kernel time by operator type ({name})",
                                 "share of kernel time", rest="sum"))
    return "".join(charts) or None


def per_layer(doc: RunDocument) -> str | None:
    charts: list[str] = []
    for name, rows in _sections(doc, "layers"):
        charts += _layer_charts(rows, name)
    for name, q in _sections(doc, "quantize"):
        charts += _layer_charts(q.get("diagnosis", []), f"{name}: output SQNR per layer")
    for name, p in _sections(doc, "prune"):
        groups = [{"layer": g["layers"], "kept_ratio": g["kept"] / max(g["channels"], 1)}
                  for g in p.get("groups", []) if isinstance(g.get("channels"), int)]
        charts += _layer_charts(groups, f"{name}: channels kept per group")
        charts += _layer_charts(p.get("sparsity", {}).get("layers", []),
                                f"{name}: sparsity per layer")
    return "".join(charts) or None


def _layer_charts(rows: list[dict[str, Any]], name: str) -> list[str]:
    charts = []
    for column in LAYER_COLUMNS:
        items = [(str(r.get("layer", r.get("name", "?"))), float(r[column])) for r in rows
                 if isinstance(r.get(column), (int, float)) and not isinstance(r[column], bool)]
        if items:
            label = column.replace("_", " ")
            charts.append(plots.bars(items, f"{label} per layer ({name}, {len(items)} layers)",
                                     label))
    return charts


def pareto(doc: RunDocument) -> str | None:
    charts = []
    for name, s in _sections(doc, "search"):
        if "objectives" in s:  # a malformed list fails here: the view is marked, not missing
            x, y = s["objectives"][:2]
            charts.append(_front_chart(s.get("trials", []), (x, y),
                                       f"{name}: {{n}} proxy trials"))
        measured = {"name": "p50_ms", "label": "latency p50 (ms, measured)", "minimize": True}
        drop = {"name": "drop", "label": "metric drop (after fine-tuning)", "minimize": True}
        if any("p50_ms" in r for r in s.get("finalists", [])):
            charts.append(_front_chart(s["finalists"], (measured, drop),
                                       f"{name}: {{n}} finalists, measured"))
    return "".join(charts) or None


def _front_chart(rows: list[dict[str, Any]], axes: tuple[dict[str, Any], dict[str, Any]],
                 title: str) -> str:
    x, y = axes
    points = [(float(r[x["name"]]), float(r[y["name"]])) for r in rows
              if isinstance(r.get(x["name"]), (int, float))
              and isinstance(r.get(y["name"]), (int, float))]
    front = plots.pareto_front(points, (bool(x.get("minimize", True)),
                                        bool(y.get("minimize", False))))
    labels = (str(x.get("label", x["name"])), str(y.get("label", y["name"])))
    return plots.pareto(points, front, labels, title.format(n=len(points)))


def sensitivity(doc: RunDocument) -> str | None:
    scans = list(_sections(doc, "sensitivity"))
    scans += [(f"{name}: sensitivity", p["sensitivity"]) for name, p in _sections(doc, "prune")
              if isinstance(p.get("sensitivity"), dict)]
    charts = []
    for name, s in scans:
        series, labels = _sensitivity_series(s)
        charts.append(plots.curves(series, labels, f"{name}: metric per layer"))
    return "".join(charts) or None


def _sensitivity_series(s: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str]]:
    """Curves from ``{"layers": {name: [[x, y], ...]}}`` or from the rows of
    ``slimkit.prune.sensitivity_scan`` (``{group, layers, ratio, metric}``, plus the baseline)."""
    if "rows" in s:
        series: dict[str, Any] = {}
        for row in s["rows"]:
            key = str(row.get("layers") or f"group {row.get('group')}")
            start = [(0.0, float(s["baseline"]))] if "baseline" in s else []
            series.setdefault(key, start).append((float(row["ratio"]), float(row["metric"])))
        return series, ("pruning ratio of the group alone", str(s.get("metric", "metric")))
    layers = s["layers"]
    if isinstance(layers, list):  # rows {layer, points}
        layers = {row["layer"]: row["points"] for row in layers}
    series = {str(k): [(float(p[0]), float(p[1])) for p in v] for k, v in layers.items()}
    return series, (s.get("x", "ratio"), s.get("y", "metric"))


def steps(doc: RunDocument) -> str | None:
    from slimkit.report.html.comparison import derived_steps

    rows = [row for _, s in _sections(doc, "steps") for row in s] or derived_steps(doc)
    return table(rows, ["step", "effect"]) if rows else None


def skipped(doc: RunDocument) -> str | None:
    rows: list[dict[str, Any]] = []
    recorded = False  # a technique that records skipped layers ran (so none is a finding)
    for kind, key in (("skipped", None), ("prune", "skipped"), ("quantize", "kept_float")):
        for name, content in _sections(doc, kind):
            items = content if key is None else content.get(key)
            recorded = recorded or items is not None
            rows += [{"from": name, "layer": r.get("layer", ""), "why": r.get("why", "")}
                     for r in items or []]
    q = doc.sections.get("quantization", {})
    recorded = recorded or (isinstance(q, dict) and q.get("integer_kernels") is not None)
    if not rows:
        return "<p>No layer was skipped.</p>" if recorded else None
    return table(rows, ["from", "layer", "why"])


def environment(doc: RunDocument) -> str | None:
    env = doc.environment
    if not env:
        return f"<p>seed {esc(doc.seed)}</p>" if doc.seed is not None else None
    cpu = env.get("cpu", {}) if isinstance(env.get("cpu"), dict) else {}
    rows = [{"key": "seed", "value": doc.seed},
            {"key": "CPU", "value": f"{cpu.get('model', '?')} ({cpu.get('cores', '?')} cores, "
                                    f"{cpu.get('arch', '?')}, family {cpu.get('family', '?')} "
                                    f"model {cpu.get('model_number', '?')})"},
            {"key": "SIMD flags", "value": ", ".join(cpu.get("simd", [])) or "none found"}]
    rows += [{"key": k, "value": v} for k, v in env.items() if k != "cpu"]
    return table(rows, ["key", "value"])


for _view in (
    View("Before and after", before_after, "no comparison of the original and the compressed "
         "model (a demo, quantize or prune report gives one)", 10),
    View("Latency by operator type", latency_by_op, "no ONNX Runtime profile (section "
         "'latency_by_op'; 'slimkit demo' and 'slimkit analyze' measure one)", 20),
    View("Per-layer sparsity, bit-width, rank and error", per_layer, "no per-layer data "
         "(quantize, prune or a 'layers' section give it)", 30),
    View("Search: Pareto front", pareto, "no search was run (section 'search')", 40),
    View("Sensitivity", sensitivity, "no sensitivity analysis was run (section "
         "'sensitivity')", 45),
    View("Steps taken and their effect", steps, "no steps recorded", 50),
    View("Layers skipped and why", skipped, "no record of skipped layers", 60),
    View("Environment and seed", environment, "the environment was not recorded", 90),
):
    VIEWS.register(_view.title)(_view)
