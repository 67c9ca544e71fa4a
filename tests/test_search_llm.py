"""``search_llm`` and ``slimkit compress --auto`` on a causal LM, on a tiny random-init Llama:
the screen ranks and respects the budget, the front is non-dominated, finalists are exported,
verified and load back, the report draws the front, the CLI routes and exits 5 when the budget
is missed, bad input is one line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from slimkit.cli import main  # noqa: E402
from slimkit.errors import DataError, InputError, OutputPathError  # noqa: E402
from slimkit.search.llm import LLMSearchConfig, search_llm  # noqa: E402
from slimkit.search.llm.measure import pick_finalists  # noqa: E402
from slimkit.search.llm.space import Candidate, cost, enumerate_space  # noqa: E402
from slimkit.testing.llm import tiny_llama_folder  # noqa: E402

FAST = {"screen_windows": 1, "screen_window": 64, "eval_windows": 1, "eval_window": 64,
        "calibration_windows": 1, "calibration_window": 64, "speed_rounds": 0,
        "int4_methods": ("rtn", "hqq"), "block_sizes": (32,), "lm_head": ("int8",)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from slimkit.llm.load import load_causal_lm

    folder = tiny_llama_folder(tmp_path_factory.mktemp("llmsearch"))
    return folder, load_causal_lm(folder)


@pytest.fixture(scope="module")
def searched(tiny, tmp_path_factory):
    cfg = LLMSearchConfig(max_ppl_increase=0.05, precisions=("int4", "int8", "fp32"),
                          keep_8bit=(0.0, 0.5), finalists=2, **FAST)
    return search_llm(tiny[1], tmp_path_factory.mktemp("out") / "best", cfg)


def test_config_is_validated():
    assert LLMSearchConfig().budget == ("ppl_increase", 0.05)
    assert LLMSearchConfig(max_kl=0.01).budget == ("kl", 0.01)
    with pytest.raises(InputError, match="one budget"):
        LLMSearchConfig(max_ppl_increase=0.05, max_kl=0.1)
    with pytest.raises(InputError, match="precisions"):
        LLMSearchConfig(precisions=("int2",))
    with pytest.raises(InputError, match="max_ppl_increase"):
        LLMSearchConfig(max_ppl_increase=-1)


def test_space_and_costs_order_precisions(tiny):
    from slimkit.llm.load import hf_module
    from slimkit.search.llm.space import linear_shapes

    space = enumerate_space(LLMSearchConfig(keep_8bit=(0.0, 0.25)))  # 3 methods x 3 blocks
    assert len(space) == 3 * 3 * 2 * 2 + 3 and space[0].single
    shapes = linear_shapes(hf_module(tiny[1]))
    b = {p: cost(Candidate(p), shapes)["bytes_per_token"] for p in ("int4", "int8", "fp32")}
    assert b["int4"] < b["int8"] < b["fp32"]
    assert cost(Candidate("int4", keep_8bit=0.5), shapes)["bytes_per_token"] > b["int4"]
    assert not Candidate("int4", depth=0.25).single


def test_screen_ranks_and_respects_the_budget(searched):
    s = searched.report
    assert s["kind"] == "search" and s["screen"].startswith("exhaustive")
    by_label = {t["label"]: t for t in s["trials"]}
    assert by_label["fp32"]["ppl_increase"] == 0 and by_label["fp32"]["feasible"]
    for t in s["trials"]:
        assert t["feasible"] == (t["ppl_increase"] <= 0.05)
    # fewer bytes read per token: a higher estimated decode speed
    ordered = sorted(s["trials"], key=lambda t: t["bytes_per_token"])
    speeds = [t["tokens_per_s"] for t in ordered]
    assert speeds == sorted(speeds, reverse=True)


def test_front_is_non_dominated():
    trials = [{"label": str(i), "trial": i, "precision": "int4", "single": i in (2, 3),
               "bytes_per_token": b, "ppl_increase": p, "feasible": p <= 0.05}
              for i, (b, p) in enumerate([(1, 0.04), (2, 0.01), (2, 0.03), (3, 0.02),
                                          (0.5, 0.2)])]
    picked = pick_finalists(trials, LLMSearchConfig(finalists=5))
    labels = [r["label"] for r in picked["rows"]]
    # 2 and 3 are dominated by 1; the two singles, fewest bytes first, are measured too
    assert labels == ["0", "1", "2", "3"]
    assert picked["single"]["label"] == "2"
    assert all(r["feasible"] for r in picked["rows"])


def test_finalists_are_measured_and_the_choice_loads_back(searched):
    from slimkit.llm.evaluate import PerplexityConfig, perplexity

    s = searched.report
    assert s["met_budget"] and searched.met_budget
    assert s["best"]["met_budget"] and s["best"]["ppl_increase"] <= 0.05
    assert s["best_single"] is not None and s["best_single"]["single"]
    assert all(r["size_bytes"] < s["original"]["size_bytes"] for r in s["finalists"])
    names = {p.name for p in searched.folder.iterdir()}
    assert {"model.onnx", "search.json", "report.json", "genai_config.json"} <= names
    assert not any(p.name.startswith(".slimkit-llmsearch")
                   for p in searched.folder.parent.iterdir())
    r = perplexity(searched.model, PerplexityConfig(window=64, stride=64, max_tokens=64),
                   runtime="onnxruntime")
    assert r["perplexity"] == pytest.approx(s["best"]["ppl"], rel=1e-3)


def test_report_draws_the_front(searched, tmp_path):
    from slimkit.report.html import write_html_report
    from slimkit.report.html.render import undrawn

    page = write_html_report(searched.folder, tmp_path / "r.html").read_text()
    assert "Search: Pareto front" not in undrawn(page)
    assert "proxy trials" in page


def test_sampled_screen_and_speed(tiny, tmp_path):
    cfg = LLMSearchConfig(max_ppl_increase=0.5, precisions=("int4", "int8"),
                          keep_8bit=(0.0, 0.5), trials=3, finalists=1,
                          **{**FAST, "speed_rounds": 1})
    cfg = LLMSearchConfig(**{**cfg.to_dict(), "speed_prompt": 8, "speed_new_tokens": 4,
                             **{k: tuple(v) for k, v in cfg.to_dict().items()
                                if isinstance(v, list)}})
    r = search_llm(tiny[1], tmp_path / "s", cfg)
    assert r.report["screen"].startswith("Optuna TPE") and len(r.report["trials"]) <= 3
    assert r.report["best"]["decode_tok_s"] > 0 and r.report["original"]["decode_tok_s"] > 0
    from slimkit.report.html import write_html_report

    page = write_html_report(r.folder, tmp_path / "r.html").read_text()
    assert "finalists, measured" in page and "searched: " in page


def test_cli_routes_and_exit_code_5(tiny, tmp_path, capsys):
    folder = str(tiny[0])
    fast = ["--threads", "1", "--trials", "2", "--finalists", "1", "--speed-rounds", "0",
            "--eval-windows", "1", "--precisions", "int4", "--int4-methods", "rtn",
            "--block-sizes", "128"]
    code = main(["compress", folder, "--auto", "--max-kl", "1e-9", "-o",
                 str(tmp_path / "o"), "--json", *fast])
    report = json.loads(capsys.readouterr().out)
    assert code == 5 and not report["met_budget"] and report["warnings"]
    assert (tmp_path / "o" / "model.onnx").is_file()
    code = main(["compress", folder, "--auto", "--max-drop", "0.1", "-o",
                 str(tmp_path / "p")])
    assert code == 2 and "do not apply to a causal LM" in capsys.readouterr().err
    code = main(["compress", "builtin:digits-cnn", "--auto", "--max-kl", "0.1", "-o",
                 str(tmp_path / "q")])
    assert code == 2 and "--max-kl apply to causal LMs only" in capsys.readouterr().err


def test_bad_inputs_are_refused(tiny, tmp_path):
    model = tiny[1]
    short = tmp_path / "short.txt"
    short.write_text("A few words only.", encoding="utf-8")
    cfg = LLMSearchConfig(precisions=("int8",), **FAST)
    with pytest.raises(DataError, match="fewer than one window"):
        search_llm(model, tmp_path / "a", cfg, calib=str(short))
    with pytest.raises(InputError, match="evaluation part"):
        search_llm(model, tmp_path / "a", cfg, calib="builtin:python-reference:evaluation")
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(OutputPathError, match="not an empty folder"):
        search_llm(model, taken, cfg)
    strict = LLMSearchConfig(precisions=("int8",), max_perplexity=1.0, **FAST)
    with pytest.raises(InputError, match="already misses the budget"):
        search_llm(model, tmp_path / "b", strict)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_structural_variants_compose_with_precision(tiny, tmp_path):
    cfg = LLMSearchConfig(max_ppl_increase=5.0, precisions=("int8",), depth_ratios=(0.0, 0.5),
                          distill_steps=1, finalists=1, **FAST)
    r = search_llm(tiny[1], tmp_path / "d", cfg)
    labels = {t["label"] for t in r.report["trials"]}
    assert labels == {"int8", "int8_depth-0.5"}
    pruned = next(v for v in r.report["variants"] if v["depth"])
    assert pruned["distill"]["steps"] == 1 and pruned["cpu_s"] >= 0
    assert r.report["best"]["label"] == "int8_depth-0.5"  # fewest bytes under a loose budget
