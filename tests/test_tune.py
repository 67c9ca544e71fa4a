"""Execution tuning: races keep the default unless beaten beyond noise; deployable configs."""

from __future__ import annotations

import json

import pytest

from slimkit.bench.tune import Candidate, TuneConfig, _pick, tune
from slimkit.errors import InputError
from slimkit.runtime import RuntimeOptions
from slimkit.runtime.config import RuntimeConfig
from slimkit.testing import tiny_model

QUICK = {"rounds": 4, "round_seconds": 0.01}
A, B, C = (Candidate(RuntimeOptions(threads=t)) for t in (1, 2, 3))


def rounds(*medians: float) -> list[list[float]]:
    return [[m, m, m] for m in medians]


def test_pick_keeps_the_incumbent_unless_clearly_better():
    config = TuneConfig(**QUICK)
    base = rounds(1.0, 1.0, 1.0, 1.0)
    assert _pick([A, B], [base, rounds(0.99, 0.98, 0.99, 0.99)], config) is A  # within noise
    assert _pick([A, B], [base, rounds(0.5, 0.5, 2.0, 2.0)], config) is A  # wins half the rounds
    assert _pick([A, B], [base, rounds(0.8, 0.8, 0.8, 1.1)], config) is B  # 3 of 4, 25% faster
    assert _pick([A, B, C], [base, rounds(0.8, 0.8, 0.8, 0.8),
                             rounds(0.5, 0.5, 0.5, 0.5)], config) is C


def test_throughput_bound_excludes_slow_batches():
    config = TuneConfig(objective="throughput", latency_bound_ms=5.0, **QUICK)
    big = Candidate(RuntimeOptions(), batch=32)
    # batch 32 at 10 ms: 3200/s, far more throughput, but over the 5 ms bound
    assert _pick([A, big], [rounds(1e-3, 1e-3, 1e-3, 1e-3), rounds(0.01, 0.01, 0.01, 0.01)],
                 config) is A
    loose = TuneConfig(objective="throughput", latency_bound_ms=50.0, **QUICK)
    assert _pick([A, big], [rounds(1e-3, 1e-3, 1e-3, 1e-3), rounds(0.01, 0.01, 0.01, 0.01)],
                 loose) is big


def test_tune_torch_and_deploy(tmp_path, one_torch_thread):
    result = tune(tiny_model(), TuneConfig(runtime="torch", threads=(1, 2), **QUICK))
    assert result.gain >= 1.0
    assert [s["step"] for s in result.steps] == ["intra-op threads", "final: default vs winner"]
    assert result.steps[0]["candidates"][0]["threads"] == 1  # the default is a candidate
    path = result.config.save(tmp_path / "tuned.json")
    loaded = RuntimeConfig.load(path)
    assert loaded == result.config and loaded.meta["objective"] == "latency"
    session = loaded.open(tiny_model())
    assert session.options == result.config.options


def test_tune_onnxruntime_throughput_runs_every_step():
    config = TuneConfig(objective="throughput", threads=(1,), batches=(1, 8), **QUICK)
    result = tune(tiny_model(), config)
    steps = [s["step"] for s in result.steps]
    assert steps == ["execution mode", "graph optimisation", "batch size",
                     "final: default vs winner"]
    assert result.unit == "examples/s" and result.chosen_score >= result.default_score * 0.9


def test_bad_configs():
    with pytest.raises(InputError, match="rounds must be >= 4"):
        TuneConfig(rounds=2)
    with pytest.raises(InputError, match="objective 'fast' is not one of"):
        TuneConfig(objective="fast")
    with pytest.raises(InputError, match="not a slimkit runtime config"):
        RuntimeConfig.from_dict({"threads": 2})


def test_cli_tune_then_bench_with_config(tmp_path, capsys):
    from slimkit.cli import main

    out = tmp_path / "tuned.json"
    assert main(["--quiet", "tune", "slimkit.testing:tiny_mlp", "--input-shape", "1x8",
                 "--threads", "1", "--rounds", "4", "--round-seconds", "0.01",
                 "-o", str(out)]) == 0
    assert json.loads(out.read_text())["runtime"] == "onnxruntime"
    capsys.readouterr()
    assert main(["--quiet", "bench", "slimkit.testing:tiny_mlp", "--input-shape", "1x8",
                 "--config", str(out), "--rounds", "1", "--round-seconds", "0.01",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["runtime"] for r in result["rows"]] == ["onnxruntime"]
    assert result["config"]["runtime_options"]["graph_optimization"] in (
        "basic", "extended", "all")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["bench", "slimkit.testing:tiny_mlp", "--config", str(bad)]) == 2


def test_auto_runtime_is_picked_by_measurement_then_tuned():
    from slimkit.bench.tune import AUTO_RUNTIMES

    result = tune(tiny_model(), TuneConfig(runtime="auto", threads=(1,), batches=(1,),
                                           rounds=4, round_seconds=0.01))
    first = result.steps[0]
    assert first["step"] == "runtime" and first["runtime"] == result.config.runtime
    measured = set(first["p50_ms"]) | {s["runtime"] for s in first["skipped"]}
    assert measured == set(AUTO_RUNTIMES)  # OpenVINO measured, or listed with its install line
