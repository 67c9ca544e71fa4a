import json
import os
import re
from pathlib import Path

import pytest

from slimkit.cli import main
from slimkit.errors import InputError
from slimkit.report.document import Report
from slimkit.report.html import SECTIONS, RunDocument, build_html, load_run, write_html_report
from slimkit.testing.browser import check_page, find_chromium

VIEW_TITLES = ("Before and after", "Latency by operator type", "Per-layer sparsity",
               "Search: Pareto front", "Sensitivity", "Steps taken and their effect",
               "Layers skipped and why", "Environment and seed")


def full_report(layers: int = 300) -> Report:
    """A report with data for every view; ``layers`` rows of per-layer data."""
    r = Report("every section", seed=7, environment={
        "cpu": {"model": "AMD EPYC", "cores": 2, "arch": "x86_64", "simd": ["avx2", "fma"]},
        "onnxruntime": "1.32.0", "torch_threads": 1})
    r.add("comparison", [
        {"variant": "fp32", "size_bytes": 640_000, "parameters": 160_000, "macs": 2_400_000,
         "p50_ms": 0.2, "p99_ms": 0.4, "throughput": 5000.0, "speedup": 1.0, "metric": 0.99},
        {"variant": "int8", "size_bytes": 170_000, "parameters": 160_000, "macs": 2_400_000,
         "p50_ms": 0.19, "p99_ms": 0.5, "throughput": 5200.0, "speedup": 1.05, "metric": 0.98}])
    r.add("latency_by_op", {"unit": "ms", "models": {
        "fp32": {f"Op{i}": 1.0 / (i + 1) for i in range(40)},
        "int8": {f"Op{i}": 0.8 / (i + 1) for i in range(0, 40, 2)}}})
    r.add("layers", [{"layer": f"encoder.layer.{i}.dense", "sparsity": (i % 10) / 10,
                      "bits": 8 if i % 7 else 32} for i in range(layers)])
    r.add("search", {"objectives": [{"name": "latency_ms", "minimize": True},
                                    {"name": "accuracy", "minimize": False}],
                     "trials": [{"latency_ms": 1 + i % 9, "accuracy": 0.9 + (i % 9) / 100 -
                                 (i % 4) / 200} for i in range(60)]})
    r.add("sensitivity", {"x": "pruning ratio", "y": "accuracy", "layers": {
        f"layer{i}": [[x / 10, 1 - x * i / 400] for x in range(6)] for i in range(40)}})
    r.add("steps", [{"step": "quantize static", "effect": "accuracy 0.99 -> 0.98"}])
    r.add("skipped", [{"layer": "head", "why": "excluded by rule name:head"}])
    r.add("behaviour_diff", {"kind": "behaviour_diff", "original": "a", "compressed": "b",
                             "examples": 10, "top1_agreement": 0.9, "fidelity": {"sqnr_db": 20},
                             "accuracy": {"original": 1.0, "compressed": 0.9},
                             "per_class": [{"class": 0, "examples": 10, "original": 1.0,
                                            "compressed": 0.9, "delta": -0.1}],
                             "flipped": [{"index": 3, "original": 0, "compressed": 1,
                                          "original_confidence": 0.6,
                                          "compressed_confidence": 0.5}], "flipped_total": 1,
                             "layer_sqnr": [{"layer": f"l{i}", "sqnr_db": 40 - i}
                                            for i in range(8)]})
    return r


def write_run(folder: Path, report: Report) -> Path:
    folder.mkdir(exist_ok=True)
    report.write(folder)
    return folder


def test_every_view_is_drawn_and_long_layer_lists_are_folded(tmp_path):
    page = build_html(load_run(write_run(tmp_path / "run", full_report(layers=300))))
    for title in VIEW_TITLES:
        assert title in page
    assert "Missing from this run" not in page
    assert page.count("<svg") >= 6  # op types, 2 per-layer, Pareto, sensitivity, diff
    assert "275 others (mean)" in page  # 300 layers -> top 25 + the rest folded
    assert "(12 of 40 that move most)" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network
    data = re.search(r'<script type="application/json" id="slimkit-data">(.*?)</script>', page,
                     re.S)
    assert json.loads(data.group(1))["seed"] == 7


def test_missing_sections_are_marked_not_fatal(tmp_path):
    r = Report("bare", seed=0)
    r.add("notes", ["nothing else"])
    page = build_html(load_run(write_run(tmp_path / "run", r)))
    assert page.count("Missing from this run") >= 6
    assert "no search was run" in page


def test_other_version_is_marked_and_a_broken_section_does_not_lose_the_page(tmp_path):
    data = full_report(layers=3).to_dict()
    data["version"] = 99
    data["sections"]["behaviour_diff"] = {"top1_agreement": "n/a", "per_class": 5}
    data["sections"]["search"] = {"objectives": "latency"}
    (tmp_path / "report.json").write_text(json.dumps(data))
    doc = load_run(tmp_path)
    assert any("format version 99" in w for w in doc.warnings)
    page = build_html(doc)
    assert "format version 99" in page
    assert "written by another" in page  # the broken search view and diff section are marked
    assert "Before and after" in page and "<svg" in page


def test_bad_run_folders_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(InputError, match="holds no slimkit report"):
        load_run(tmp_path)
    (tmp_path / "report.json").write_text('{"title": "cut sh')
    with pytest.raises(InputError, match="not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "report.json").write_text('{"title": "no sections"}')
    with pytest.raises(InputError, match="no 'sections'"):
        load_run(tmp_path)


def test_single_command_reports_are_merged(tmp_path):
    quantize = {"path": "x.onnx", "config": {"mode": "static"},
                "preflight": {"mode": "static", "activation_type": "u8", "expected_speedup": 1.0,
                              "pays": False, "reasons": ["no VNNI"]},
                "metric": {"name": "accuracy", "float": 0.99, "quantized": 0.98, "drop": 0.01},
                "size": {"float_bytes": 100, "quantized_bytes": 30},
                "diagnosis": [{"layer": "conv", "type": "Conv", "sqnr_db": 30.0}],
                "kept_float": [{"layer": "fc", "why": "excluded by rule"}]}
    (tmp_path / "x.onnx.report.json").write_text(json.dumps(quantize))
    doc = load_run(tmp_path)
    assert list(doc.sections) == ["quantize"] and doc.warnings  # no report.json: noted
    page = build_html(doc)
    assert "no VNNI" in page and "excluded by rule" in page and "<svg" in page


def test_a_technique_registers_its_own_section_renderer():
    @SECTIONS.register("test-cluster")
    def render(content, doc):
        return f"<p>clusters: {content['k']}</p>"

    page = build_html(RunDocument("t", {"test-cluster": {"k": 16}}))
    assert "<p>clusters: 16</p>" in page


def test_cli_report(tmp_path, capsys):
    run = write_run(tmp_path / "run", full_report(layers=5))
    out = tmp_path / "page.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def artefact_dir(tmp_path: Path) -> Path:
    """Screenshots go to $SLIMKIT_TEST_ARTIFACTS when set (CI keeps them), else tmp_path."""
    folder = Path(os.environ.get("SLIMKIT_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_renders_in_chromium(page: Path, shot: Path, plots: int) -> None:
    """Every plot drawn with a non-zero size, no errors, no network, fits a phone's width."""
    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    desktop = check_page(page, shot)
    assert desktop.errors == []
    assert desktop.resources == []
    assert len(desktop.rendered_plots) == len(desktop.svgs) >= plots
    assert shot.stat().st_size > 10_000
    phone = check_page(page, width=390, height=844)
    assert phone.errors == []
    assert phone.scroll_width <= phone.inner_width  # wide tables scroll inside their box
    assert all(0 < s["width"] <= phone.inner_width for s in phone.svgs)


def test_report_renders_in_headless_chromium(tmp_path):
    run = write_run(tmp_path / "run", full_report(layers=300))
    page = write_html_report(run, tmp_path / "report.html")
    assert_renders_in_chromium(page, artefact_dir(tmp_path) / "report-every-section.png", 6)


def test_prune_report_with_its_sensitivity_scan(tmp_path):
    prune = {"config": {"mode": "structured", "ratio": 0.5}, "seed": 0,
             "size": {"parameters_before": 100, "parameters_after": 30, "parameters_ratio": 0.3,
                      "macs_before": 1000, "macs_after": 250, "macs_ratio": 0.25,
                      "bytes_before": 400, "bytes_after": 120},
             "groups": [{"group": i, "layers": f"conv{i}", "channels": 32, "kept": 16}
                        for i in range(3)],
             "skipped": [{"layer": "fc", "why": "output layer"}],
             "sensitivity": {"baseline": 0.99, "metric": "accuracy", "rows": [
                 {"group": g, "layers": f"conv{g}", "channels": 32, "ratio": r, "kept": 8,
                  "metric": 0.99 - g * r / 10, "drop": g * r / 10}
                 for g in range(3) for r in (0.25, 0.5)]}}
    (tmp_path / "prune.report.json").write_text(json.dumps(prune))
    page = build_html(load_run(tmp_path))
    assert "no sensitivity analysis" not in page and "prune: sensitivity" in page
    assert "channels kept per group" in page and "output layer" in page
    assert "MACs x0.25" in page


def test_advice_and_its_profile_are_shown(tmp_path):
    advice = {"kind": "advice", "model": "m", "verified": True, "ordering_agrees": True,
              "seed": 3, "notes": [],
              "measurements": {"cpu": "x", "latency_by_op": {"MatMul": 0.9, "Add": 0.1},
                               "gemm_ratio_u8s8": 1.0},
              "recommendations": [
                  {"technique": "structured pruning 50%", "predicted_speedup": 1.8,
                   "measured_speedup": 1.9, "size_ratio": 0.7, "pays": True, "why": "MACs x0.5",
                   "fidelity": "", "trial": "slimkit.prune"},
                  {"technique": "int8 dynamic", "predicted_speedup": 1.0,
                   "measured_speedup": 0.95, "size_ratio": 0.3, "pays": False,
                   "why": "integer GEMM measured 1.00x", "fidelity": "", "trial": ""}]}
    (tmp_path / "advice.json").write_text(json.dumps(advice))
    doc = load_run(tmp_path)
    page = build_html(doc)
    assert doc.seed == 3 and "matches the measured ordering" in page
    assert "integer GEMM measured 1.00x" in page and "no ONNX Runtime profile" not in page
