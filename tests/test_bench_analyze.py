import pytest

from slimkit.analyse.profile import analyze
from slimkit.bench.core import BenchConfig, benchmark
from slimkit.errors import InputError
from slimkit.export.onnx import export_onnx
from slimkit.testing import tiny_model

QUICK = {"rounds": 2, "round_seconds": 0.01, "warmup": 1}


def test_benchmark_rows_interleaved_and_ratios(tmp_path):
    model = tiny_model("cnn")
    onnx_model = export_onnx(model, tmp_path / "m.onnx").model
    result = benchmark([model, onnx_model], BenchConfig(threads=(1, 2), batches=(1, 4), **QUICK))
    rows = result.rows
    # per setting: tiny-cnn on torch and onnxruntime, the ONNX file on onnxruntime only
    assert len(rows) == 4 * 3
    assert result.skipped == [{"model": "tiny-cnn", "runtime": "torch",
                               "reason": "an ONNX file has no torch module to run"}]
    for row in rows:
        assert row.p50_ms <= row.p90_ms <= row.p99_ms and row.runs >= 2 * 3
        assert row.throughput == pytest.approx(row.batch * 1e3 / row.p50_ms)
    firsts = [r for r in rows if r.runtime == "torch"]
    assert all(r.speedup == 1.0 for r in firsts)
    assert result.to_dict()["config"]["threads"] == (1, 2)


def test_bench_config_validation():
    with pytest.raises(InputError):
        BenchConfig(threads=(0,))
    with pytest.raises(InputError):
        BenchConfig(runtimes=())


def test_threads_are_restored():
    import torch

    before = torch.get_num_threads()
    benchmark([tiny_model()], BenchConfig(runtimes=("torch",), threads=(1,), **QUICK))
    assert torch.get_num_threads() == before


def test_analyze_reports_ops_and_layers():
    result = analyze(tiny_model("cnn"), runs=3).to_dict()
    assert result["macs_by_type"]["Conv2d"] == 8 * 8 * 8 * 27
    assert abs(sum(result["latency_by_op"].values()) - 1.0) < 1e-6
    assert "Conv" in result["latency_by_op"] and result["kernel_ms_per_run"] > 0
    assert result["top_layers"][0]["name"] == "conv"


def test_peak_memory_counts_what_the_model_takes_to_run():
    # regression: the RSS rise of a session read 0 MB (the allocator reused freed memory, and
    # a torch module's weights were resident before the session opened)
    import torch

    from slimkit.model import Model, TensorSpec

    model = Model("wide", "test", (TensorSpec("x", ("batch", 1024)),),
                  module=torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU()))
    weights_mb = 1024 * 1025 * 4 / 2**20
    rows = benchmark([model], BenchConfig(rounds=1, round_seconds=0.01)).rows
    assert {r.runtime for r in rows} == {"torch", "onnxruntime"}
    for row in rows:
        assert weights_mb * 0.9 <= row.peak_memory_mb < 20 * weights_mb, row
