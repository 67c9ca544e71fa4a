import json

from slimkit.cli import main
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
    # torch, ORT fp32, ORT int8, the pruned student in torch and ORT, at batch 1 and 32
    assert len(sections["latency"]) == 10
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
    page = (out / "report.html").read_text()
    for section in ("Before and after", "Latency by operator type", "Per-layer", "Steps taken",
                    "Layers skipped", "Environment and seed", "Flipped predictions"):
        assert section in page
    assert "report.html" in printed
    # op types before/after, bits and SQNR per layer, SQNR along the network (behaviour diff)
    assert_renders_in_chromium(out / "report.html", artefact_dir(tmp_path) / "demo-report.png", 4)
