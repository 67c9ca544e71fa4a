"""Automatic search: deterministic proxies, resumable storage (interrupted == uninterrupted),
refusal to mix studies, the noise warning, the budget miss, the CLI, and the Ray executor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError
from slimkit.search import SearchConfig, parse_duration, search
from slimkit.search.space import SearchSpace
from slimkit.testing.cnns import cnn_model

pytest.importorskip("optuna")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def net():
    return cnn_model("resnet-basic")


@pytest.fixture(scope="module")
def data(net):
    return synthetic(net.inputs, 24, seed=0)


def _config(**overrides):
    base = {"trials": 6, "finalists": 1, "finetune_epochs": 0, "max_drop": 0.5,
            "ratios": (0.0, 0.25, 0.5), "quant_layer_choices": 2, "objective": "both",
            "eval_examples": 24, "seed": 3}
    return SearchConfig(**{**base, **overrides})


def _trials(result):
    return [(t["number"], t["params"], t["values"]) for t in result.sections["trials"]]


def test_config_checks_and_durations():
    assert parse_duration("30m") == 1800.0
    with pytest.raises(InputError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(InputError, match="objective 'speed' is not one of"):
        SearchConfig(objective="speed")
    with pytest.raises(InputError, match="ratios must be in"):
        SearchConfig(ratios=(0.5, 1.0))


def test_interrupted_search_resumes_to_the_same_result(tmp_path, net, data, one_torch_thread):
    full = search(net, data, tmp_path / "full", _config())
    # the interrupted run: 2 trials, then a crash while trial 2 was being evaluated (left
    # RUNNING in the storage), then a restart asking for all 6
    from slimkit.search import study as study_mod

    part = tmp_path / "part"
    search(net, data, part, _config(trials=2))
    optuna = study_mod.optuna_module()
    cfg = _config()
    url = f"sqlite:///{part / 'search.db'}"
    (name,) = optuna.get_all_study_names(storage=url)
    space = SearchSpace.from_dict(full.sections["space"])
    crashed = optuna.load_study(study_name=name, storage=url,
                                sampler=study_mod.make_sampler(cfg, 2))
    space.suggest(crashed.ask())  # asked, never told: what a killed process leaves behind
    resumed = search(net, data, part, cfg)
    assert _trials(resumed) == _trials(full)
    assert resumed.sections["best"]["params"] == full.sections["best"]["params"]
    assert resumed.sections["front"] == full.sections["front"]
    assert resumed.recipe == full.recipe


def test_search_writes_a_verified_model_and_a_replayable_recipe(tmp_path, net, data,
                                                                one_torch_thread):
    from slimkit.recipe import compress, load_recipe

    result = search(net, data, tmp_path / "s", _config(trials=4))
    folder = tmp_path / "s"
    assert {"model.onnx", "recipe.yaml", "search-report.json", "search.db",
            "candidates"} <= {p.name for p in folder.iterdir()}
    report = json.loads((folder / "search-report.json").read_text())
    assert report["sensitivity"]["cached"] is False and report["noise"]["metric"] == "cosine_mean"
    drops = [d for group in report["sensitivity"]["prune"].values() for d in group.values()]
    assert drops and max(drops) > 0  # each group was really pruned alone
    assert result.met_budget and result.front
    assert {"p50_ms", "bytes", "drop"} <= set(result.sections["best"])
    replay = compress(net, load_recipe(folder / "recipe.yaml"), tmp_path / "replay", data,
                      measure=False)
    assert replay.sections["verification"]["drop"] == pytest.approx(
        result.sections["best"]["drop"], abs=1e-6)
    again = search(net, data, tmp_path / "s2", _config(trials=4))
    assert again.sections["sensitivity"]["cached"] is True  # keyed by the model digest


def test_storage_of_another_model_or_space_is_refused(tmp_path, net, data, one_torch_thread):
    storage = str(tmp_path / "shared.db")
    search(net, data, tmp_path / "a", _config(trials=2, storage=storage, study_name="s"))
    with pytest.raises(InputError, match="refusing to mix"):
        search(net, data, tmp_path / "b", _config(trials=2, storage=storage, study_name="s",
                                                  ratios=(0.0, 0.5)))
    other = cnn_model("resnet-basic", seed=1)
    with pytest.raises(InputError, match="model_digest"):
        search(other, data, tmp_path / "c", _config(trials=2, storage=storage, study_name="s"))


def test_noise_warning_and_budget_miss(tmp_path, net, one_torch_thread):
    labels = np.random.default_rng(0).integers(0, 10, 24)
    noisy = Dataset(synthetic(net.inputs, 24, seed=0).inputs, labels)
    result = search(net, noisy, tmp_path / "n", _config(
        trials=2, max_drop=0.0, ratios=(0.5,), quantize=False))
    warnings = " ".join(result.sections["warnings"])
    assert "within the evaluation noise" in warnings
    assert result.met_budget is False and "no candidate met the budget" in warnings
    assert (tmp_path / "n" / "model.onnx").is_file() and result.front


def test_cli_auto_exit_codes(tmp_path, one_torch_thread):
    from slimkit.cli import main

    args = ["--quiet", "compress", "slimkit.testing.cnns:tiny_resnet_basic",
            "--input-shape", "1x3x16x16",
            "--auto", "--trials", "2", "--finalists", "1", "--finetune-epochs", "0",
            "--finetune-workers", "1", "--refine-steps", "0", "--no-int8", "--objective",
            "size"]
    assert main([*args, "--max-drop", "1", "-o", str(tmp_path / "ok")]) == 0
    assert main([*args, "--max-drop", "0", "--ratios", "0.5",
                 "-o", str(tmp_path / "miss")]) == 5
    assert (tmp_path / "miss" / "recipe.yaml").is_file()


@pytest.mark.slow
def test_ray_executor_gives_the_in_process_front(tmp_path, net, data):
    pytest.importorskip("ray")
    cfg = {"trials": 4, "workers": 2}
    local = search(net, data, tmp_path / "local", _config(**cfg))
    ray_run = search(net, data, tmp_path / "ray", _config(**cfg, executor="ray"))
    assert _trials(ray_run) == _trials(local)
    assert ray_run.sections["proxy_front"] == local.sections["proxy_front"]
    assert ray_run.sections["best"]["params"] == local.sections["best"]["params"]


def test_uniform_points_open_the_study_and_fine_tuned_finalists_bisect_the_front(
        tmp_path, net, one_torch_thread):
    labels = np.random.default_rng(0).integers(0, 10, 24)
    labelled = Dataset(synthetic(net.inputs, 24, seed=0).inputs, labels)
    result = search(net, labelled, tmp_path / "ft", _config(
        trials=4, finalists=2, finetune_epochs=1, quantize=False, objective="latency",
        max_drop=1.0))
    first = [t["params"] for t in result.sections["trials"][:2]]
    assert [set(p.values()) for p in first] == [{0.25}, {0.5}]  # every group at one ratio
    # fine-tuned finalists: the proxy is unconstrained, so no group was bounded by a scan
    assert result.sections["sensitivity"]["prune"] == {}
    assert all(list(g["ratios"]) == [0.0, 0.25, 0.5] for g in result.sections["space"]["groups"])
    stages = [next(iter(s)) for s in result.recipe.to_dict()["stages"]]
    assert stages[:3] == ["prune", "batchnorm", "finetune"]
    # first round: one finalist, the middle of the proxy front (cheapest first)
    macs = {t["number"]: t["values"][0] for t in result.sections["trials"]}
    front = sorted(result.sections["proxy_front"], key=lambda n: (macs[n], n))
    rows = result.sections["finalists"]
    assert rows[0]["trial"] == front[(len(front) - 1) // 2] and rows[0]["met_budget"]
    assert rows[0]["stage"] == "first"
    # it met the budget, so its proxy drop bounds the second round: a walk down from it
    second = result.sections["second_round"]
    assert second["limit"] == pytest.approx(rows[0]["proxy"]["drop"], abs=1e-6)
    assert second["start"] == rows[0]["trial"]
    start = rows[0]["params"]
    can_move = any(v < 0.5 for k, v in start.items() if k.startswith("ratio:"))
    assert bool(second["trials"]) == can_move  # one step's neighbours were evaluated
    walked = {second["offset"] + t["number"]: t for t in second["trials"]}
    costs = [walked[n]["values"][0] for n in second["path"]]
    assert costs == sorted(costs, reverse=True) and all(c < macs[rows[0]["trial"]]
                                                        for c in costs)
    assert all(walked[n]["drop"] <= second["limit"] for n in second["path"])
    # the other finalist (if the walk found a cheaper point) comes from the walk
    assert [r["stage"] for r in rows[1:]] == (["second"] if second["path"] else [])
    assert all(r["trial"] in second["path"] for r in rows[1:])


@given(size=st.integers(1, 40), boundary=st.integers(0, 40))
def test_bisection_finds_the_cheapest_point_that_holds(size, boundary):
    from slimkit.search.finalists import bisect_front

    tried: list[int] = []

    def met(i):
        tried.append(i)
        return i >= boundary

    bisect_front(size.bit_length(), met, size)
    held = [i for i in tried if i >= boundary]
    assert len(set(tried)) == len(tried)
    assert min(held, default=size) == min(boundary, size)


@pytest.fixture
def judged_by_proxy(monkeypatch, tmp_path):
    """Finalists judged without fine-tuning: a point "holds the budget" when its proxy drop
    is at most HOLDS; latency is its proxy MACs. The search's rounds run for real."""
    from slimkit.search.finalists import Finalists, point_recipe

    holds = 0.25  # between the proxy drops of the tiny net's uniform 0.5 and 0.75 points
    dummy = tmp_path / "dummy.onnx"
    dummy.write_bytes(b"onnx")

    def run(self, trial, number, stage):
        drop = trial.user_attrs["drop"]
        self.rows.append({"trial": number, "stage": stage, "params": dict(trial.params),
                          "proxy": {k: trial.user_attrs[k] for k in ("macs", "bytes", "drop")},
                          "metric": 1 - drop, "drop": drop, "bytes": trial.user_attrs["bytes"],
                          "met_budget": drop <= holds, "path": str(dummy), "model": self.model,
                          "recipe": point_recipe(self.space, trial.params, self.config,
                                                 f"t{number}").to_dict()})
        return drop <= holds

    def measure(self):
        for row in self.rows:
            row["p50_ms"], row["speedup"] = row["proxy"]["macs"], 1 / row["proxy"]["macs"]
        return {"p50_ms": 1.0}

    monkeypatch.setattr(Finalists, "run", run)
    monkeypatch.setattr(Finalists, "measure", measure)
    return holds


def test_the_second_round_walks_cheaper_under_the_calibrated_limit_and_resumes(
        tmp_path, net, data, judged_by_proxy, one_torch_thread):
    cfg = {"trials": 6, "finalists": 4, "finetune_epochs": 1, "quantize": False,
           "objective": "latency", "ratios": (0.0, 0.25, 0.5, 0.75)}
    full = search(net, data, tmp_path / "full", _config(**cfg, refine_steps=3))
    second = full.sections["second_round"]
    met = [r for r in full.sections["finalists"] if r["stage"] == "first" and r["met_budget"]]
    assert met and second["limit"] == max(r["proxy"]["drop"] for r in met)
    start = min(met, key=lambda r: r["proxy"]["macs"])
    assert second["start"] == start["trial"] and 1 <= len(second["path"]) <= 3
    walked = {second["offset"] + t["number"]: t for t in second["trials"]}
    costs = [walked[n]["values"][0] for n in second["path"]]
    assert costs == sorted(costs, reverse=True) and costs[0] < start["proxy"]["macs"]
    assert all(walked[n]["drop"] <= second["limit"] for n in second["path"])
    # each step moved exactly one group up one ratio
    previous = start["params"]
    for n in second["path"]:
        moved = {k for k, v in walked[n]["params"].items() if v != previous[k]}
        assert len(moved) == 1
        previous = walked[n]["params"]
    assert full.sections["best"]["trial"] in second["path"]  # cheaper than the first round
    # a walk cut short (1 step), then resumed to 3, is the uninterrupted walk
    search(net, data, tmp_path / "part", _config(**cfg, refine_steps=1))
    resumed = search(net, data, tmp_path / "part", _config(**cfg, refine_steps=3))
    keys = ("limit", "start", "path")
    assert {k: resumed.sections["second_round"][k] for k in keys} == {k: second[k] for k in keys}
    assert resumed.sections["best"]["params"] == full.sections["best"]["params"]


def test_when_no_finalist_holds_the_cheapest_proxy_safe_point_is_tried(
        tmp_path, net, data, judged_by_proxy, monkeypatch, one_torch_thread):
    from slimkit.search.finalists import Finalists

    judged = Finalists.run

    def only_unpruned_holds(self, trial, number, stage):  # fine-tuning never recovers here
        judged(self, trial, number, stage)
        pruned = any(v > 0 for k, v in trial.params.items() if k.startswith("ratio:"))
        self.rows[-1]["met_budget"] = not pruned
        return not pruned

    monkeypatch.setattr(Finalists, "run", only_unpruned_holds)
    result = search(net, data, tmp_path / "f", _config(
        trials=6, finalists=2, finetune_epochs=1, max_drop=0.01, ratios=(0.0, 0.5)))
    first = [t["params"] for t in result.sections["trials"]]
    assert first[1]["int8"] and all(v == 0.0 for k, v in first[1].items()
                                    if k.startswith("ratio:"))  # int8 alone is a seed
    stages = [r["stage"] for r in result.sections["finalists"]]
    assert stages[-1] == "fallback" and result.met_budget
    assert result.sections["best"]["stage"] == "fallback"
    assert result.sections["best"]["proxy"]["drop"] <= 0.01
