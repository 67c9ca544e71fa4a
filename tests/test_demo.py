import json

import pytest

from slimkit.cli import main
from slimkit.report.html import undrawn
from test_report_html import artefact_dir, assert_renders_in_chromium


def test_demo_writes_report_with_accuracy_fidelity_and_latency(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "Digits CNN" in printed and "ONNX export verified" in printed
    report = json.loads((out / "report.json").read_text())
    sections = report["sections"]
    assert sections["accuracy"]["torch"] >= 0.95 and sections["accuracy"]["onnxruntime"] >= 0.95
    assert sections["onnx_vs_torch"]["top1_agreement"] == 1.0
    assert sections["onnx_vs_torch"]["max_abs_error"] < 1e-4
    runtimes = {(row["runtime"], row["batch"]) for row in sections["latency"]}
    assert runtimes == {("torch", 1), ("onnxruntime", 1), ("torch", 32), ("onnxruntime", 32)}
    # torch: original, student, .slim; ORT: those + int8 + searched; at batch 1 and 32
    assert len(sections["latency"]) == 16
    assert all(row["peak_memory_mb"] > 0 for row in sections["latency"])
    assert report["environment"]["cpu"]["cores"] >= 1 and report["seed"] == 0
    assert (out / "report.md").read_text().startswith("# slimkit demo")
    assert (out / "digits-cnn.onnx").exists() and (out / "digits-cnn-int8.onnx").exists()
    quant = sections["quantization"]
    assert quant["integer_kernels"] and quant["accuracy_int8"] >= quant["accuracy_fp32"] - 0.005
    assert "int8: integer kernels confirmed" in printed
    models = {(row["model"], row["runtime"]) for row in sections["latency"]}
    assert ("digits-cnn-int8", "onnxruntime") in models
    pruning = sections["pruning"]
    assert pruning["parameters_after"] < 0.2 * pruning["parameters_before"]
    assert pruning["accuracy_pruned"] < pruning["accuracy_distilled"]
    assert pruning["accuracy_distilled"] >= 0.9 and pruning["accuracy_finetuned"] >= 0.9
    flat = " ".join(printed.split())  # rich wraps long lines at the terminal width
    assert "distilled from the original" in flat
    compact = sections["deep_compression"]
    assert compact["loaded_equals_compressed"] and compact["ratio"] > 10
    assert (out / "digits-cnn.slim").stat().st_size == compact["file_bytes"]
    assert sections["search"]["met_budget"] in (True, False) and "automatic search" in flat
    assert (out / "search" / "model.onnx").exists()
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    variants = [row["variant"] for row in sections["comparison"]]
    assert variants == ["digits-cnn (torch)", "digits-cnn (onnxruntime)",
                        "digits-cnn-int8 (onnxruntime)",
                        "digits-cnn-pruned-distilled (onnxruntime)",
                        "digits-cnn.slim (onnxruntime)", "searched (onnxruntime)"]
    assert all("metric" in row and "p50_ms" in row for row in sections["comparison"])
    assert sections["comparison"][4]["size_bytes"] == compact["file_bytes"]
    assert len(sections["sensitivity"]["rows"]) >= 6  # 3+ groups x 3 ratios
    # int8 layer SQNR: the same tensors as the behaviour diff (2-5 dB before a fix)
    assert min(row["sqnr_db"] for row in sections["layers"]) > 25
    page = (out / "report.html").read_text()
    for section in ("Before and after", "Latency by operator type", "Per-layer", "Steps taken",
                    "Layers skipped", "Environment and seed", "Flipped predictions",
                    "proxy trials", "Sensitivity"):
        assert section in page
    assert undrawn(page) == []  # every view drawn from the demo's own data
    assert "report.html" in printed
    # op types before/after, bits and SQNR per layer, SQNR along the network (behaviour diff)
    assert_renders_in_chromium(out / "report.html", artefact_dir(tmp_path) / "demo-report.png", 4)


def test_demo_refuses_a_folder_holding_other_files(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--quick"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds other files" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_demo_into_an_unusable_folder_fails_in_one_line_writing_nothing(tmp_path, capsys,
                                                                        monkeypatch, where):
    from pathlib import Path

    target = tmp_path / "out"
    if where == "file":
        target.write_text("a file")
    else:  # root ignores permission bits: make the write probe fail as a read-only disk would
        real = Path.write_bytes

        def refuse(self, data):
            if self.name == ".slimkit-write-check":
                raise PermissionError(13, "Permission denied")
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", refuse)
    assert main(["demo", "--out", str(target), "--quick"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err, err
    assert "Traceback" not in err
    if where == "unwritable":
        assert list(target.iterdir()) == []


def test_a_folder_an_earlier_demo_wrote_is_reused(tmp_path):
    from slimkit.demo.run import is_demo_folder
    from slimkit.io import prepare_output_folder
    from slimkit.report import Report

    out = tmp_path / "demo"
    Report("slimkit demo: digits CNN", seed=0).write(out.mkdir() or out)
    (out / "digits-cnn.onnx").write_bytes(b"")
    assert prepare_output_folder(out, reuse=is_demo_folder) == out
