"""Recipes: YAML -> the API's config dataclasses, errors naming the key path, the shipped
recipes, and ``slimkit compress --recipe`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimkit.errors import InputError
from slimkit.prune import PruneConfig
from slimkit.quantize import QuantizeConfig
from slimkit.recipe import STAGES, FinetuneConfig, Recipe, compress, load_recipe
from slimkit.testing import tiny_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["cpu-latency", "smallest-file", "edge-int8"])
def test_shipped_recipes_load_and_round_trip(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name and recipe.max_drop is not None
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_stages_load_into_the_api_config_classes(tmp_path):
    recipe = load_recipe(_write(tmp_path, """
stages:
  - prune: {ratio: 0.25, exclude: ["name:fc"], layer_ratios: [["name:conv", 0.5]]}
  - finetune: {epochs: 1}
  - quantize: {mode: static, max_drop: 0.02}
"""))
    prune, finetune, quant = (s.config for s in recipe.stages)
    assert prune == PruneConfig(ratio=0.25, exclude=("name:fc",),
                                layer_ratios=(("name:conv", 0.5),))
    assert finetune == FinetuneConfig(epochs=1)
    assert quant == QuantizeConfig(mode="static", max_drop=0.02)


@pytest.mark.parametrize(("text", "expected"), [
    ("stages: [prune, {quantise: {}}]", "stages[1]: unknown stage 'quantise'; allowed: "),
    ("stages: [{prune: {ratoi: 0.5}}]", "stages[0].prune.ratoi: unknown key; allowed: "),
    ("stages: [prune, {quantize: {mode: int3}}]",
     "stages[1].quantize.mode: 'int3' is not allowed; allowed: dynamic, static"),
    ("stages: [{quantize: {per_channel: 'yes'}}]",
     "stages[0].quantize.per_channel: expected true/false"),
    ("stages: [{prune: {ratio: 1.5}}]", "stages[0].prune: ratio must be in [0, 1)"),
    ("stages: [{prune: {round_to: 2.5}}]", "stages[0].prune.round_to: expected an integer"),
    ("stages: [{prune: {exclude: fc}}]", "stages[0].prune.exclude: expected a list"),
    ("stages: [{prune: {layer_ratios: [[fc, high]]}}]",
     "stages[0].prune.layer_ratios[0][1]: expected a number"),
    ("stages: [quantize, prune]", "stages[1].prune: needs a PyTorch model"),
    ("stages: []", "stages: a recipe needs at least one stage"),
    ("stage: [prune]", "stage: unknown key; allowed: name, description, max_drop, stages"),
    ("stages: [{prune: {}, export: {}}]", "stages[0]: expected one stage name"),
    ("max_drop: lots\nstages: [prune]", "max_drop: expected a number"),
])
def test_bad_recipes_name_the_key_path(tmp_path, text, expected):
    with pytest.raises(InputError) as info:
        load_recipe(_write(tmp_path, text))
    assert expected in str(info.value)


def test_yaml_is_loaded_safely(tmp_path):
    text = "stages: !!python/object/apply:os.system ['echo hacked']\n"
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(_write(tmp_path, text))


def test_optional_techniques_register_when_installed():
    import importlib.util

    for name, module in (("distill", "slimkit.distill"), ("cluster", "slimkit.cluster"),
                         ("lowrank", "slimkit.lowrank"), ("tune", "slimkit.bench.tune")):
        Recipe.from_dict({"stages": ["export"]})  # triggers optional registration
        assert (name in STAGES) == (importlib.util.find_spec(module) is not None)


def test_compress_prunes_exports_and_verifies_without_touching_the_input(tmp_path,
                                                                        one_torch_thread):
    model = tiny_model("cnn")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    recipe = Recipe.from_dict({"stages": [{"prune": {"ratio": 0.5, "round_to": 2}}, "export"],
                               "max_drop": 0.5})
    result = compress(model, recipe, tmp_path / "out", measure=False)
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    assert result.met_budget is True
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"model.onnx", "report.json",
                                                               "recipe.yaml"}
    assert load_recipe(tmp_path / "out" / "recipe.yaml") == recipe
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stages"][0]["size"]["macs_ratio"] == 0.5
    assert report["verification"]["metric"] == "cosine_mean"
    assert report["verification"]["compressed"] > 0.5


@pytest.mark.parametrize("stage", ["cluster", "lowrank"])
def test_optional_stage_runs_in_a_recipe(tmp_path, stage, one_torch_thread):
    if stage not in STAGES:
        pytest.skip(f"{stage} is not installed")
    settings = {"cluster": {"clusters": 8}, "lowrank": {"rule": "ratio", "ratio": 0.5,
                                                  "layers": ["type:Linear"]}}[stage]
    recipe = Recipe.from_dict({"stages": [{stage: settings}]})
    result = compress(tiny_model("mlp"), recipe, tmp_path / "out", measure=False)
    assert result.sections["stages"][0]["stage"] == stage
    assert result.sections["verification"]["compressed"] > 0.5


def test_cli_cpu_latency_recipe_end_to_end_on_digits(tmp_path, digits_cnn, one_torch_thread):
    from slimkit.cli import main

    out = tmp_path / "out"
    code = main(["--quiet", "compress", "builtin:digits-cnn", "--recipe",
                 str(RECIPES / "cpu-latency.yaml"), "--data", "builtin:digits", "-o", str(out),
                 "--json"])
    report = json.loads((out / "report.json").read_text())
    check = report["verification"]
    assert check["metric"] == "accuracy" and 300 < check["examples"] < 400  # the val split
    assert code == (0 if check["drop"] <= 0.01 else 5)
    assert check["compressed"] > 0.9
    assert report["stages"][0]["size"]["macs_ratio"] < 0.35
    assert report["latency"][1]["model"].endswith("model.onnx") or report["latency"]


def test_cli_exit_code_5_when_the_recipe_budget_is_missed(tmp_path, one_torch_thread):
    from slimkit.cli import main

    recipe = _write(tmp_path, "max_drop: 0.0\nstages: [{prune: {ratio: 0.75, round_to: 1}}]\n")
    code = main(["--quiet", "compress", "slimkit.testing:tiny_cnn", "--input-shape", "1x3x8x8",
                 "--recipe", str(recipe), "-o", str(tmp_path / "out")])
    assert code == 5
    assert (tmp_path / "out" / "model.onnx").is_file()
