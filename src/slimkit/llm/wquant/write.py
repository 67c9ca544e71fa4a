"""From the fake-quantized working copy to the verified, measured generation folder: export it
(fp32, ORT GenAI builder, verified against the copy), swap the MatMul/Gather weights for
MatMulNBits/GatherBlockQuantized, check the graph against the copy at fp32 compute, judge it
against the original model and time it side by side with the fp32 graph."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from slimkit.llm.wquant.config import WeightQuantConfig
from slimkit.model import Model

WEIGHTS = "model.onnx.data"


def write_folder(model: Model, work: Any, part: dict[str, Any], config: WeightQuantConfig,
                 tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The quantized folder under ``tmp`` and the graph half of the report."""
    from slimkit.hardware import cpu_info
    from slimkit.llm.export import GenerationExportConfig, export_for_generation, op_counts
    from slimkit.llm.load import CausalLM
    from slimkit.llm.verify import VerifyConfig
    from slimkit.llm.wquant.measure import copy_side_files, folder_bytes

    fake = dataclasses.replace(model, module=CausalLM(work).eval(), meta=dict(model.meta))
    fp32 = export_for_generation(fake, tmp / "fp32", GenerationExportConfig(
        verify=VerifyConfig(prompts=1, decode_steps=4, atol=1e-3))).folder
    built = tmp / "out"
    copy_side_files(fp32, built)
    level, measured = _accuracy_level(work, config)
    done = _rewrite(fp32, built, work, part, level)
    report: dict[str, Any] = {"cpu": cpu_info(), "accuracy_level": {"chosen": level,
                                                                    "measured_s": measured},
                              "matmuls": done, "op_types": op_counts(built),
                              "size": _sizes(folder_bytes(fp32), folder_bytes(built))}
    report["graph_check"] = _check(built, fake, config)
    report["quality"] = _quality(built, model, config)
    if config.advanced.speed_rounds:
        report["speed"] = _speed(fp32, built, model, config)
    return built, report


def _accuracy_level(work: Any, config: WeightQuantConfig) -> tuple[int, Any]:
    from slimkit.llm.wquant.accuracy import measure_levels, pick_level

    if config.accuracy_level != "auto":
        return int(config.accuracy_level), None
    hidden = int(work.config.hidden_size)
    inner = int(getattr(work.config, "intermediate_size", 4 * hidden))
    times = measure_levels(hidden, inner, config.bits, config.block_size, config.is_symmetric,
                           config.advanced.speed_prompt, config.threads)
    return pick_level(times, config.advanced.speed_new_tokens), times


def _rewrite(fp32: Path, built: Path, work: Any, part: dict[str, Any],
             level: int) -> dict[str, Any]:
    import onnx

    from slimkit.llm.wquant.head import same_grid
    from slimkit.llm.wquant.nbits import Linear, rewrite

    model = onnx.load(str(fp32 / "model.onnx"))
    linears = [Linear(name, work.get_submodule(name).weight.detach(), q)
               for name, q in part["layers"].items()]
    if part["head"] is not None:
        linears.append(Linear("lm_head", work.get_output_embeddings().weight.detach(),
                              part["head"]))
    embedding = None if part["embedding"] is None else Linear(
        "model.embed_tokens", work.get_input_embeddings().weight.detach(), part["embedding"])
    done = rewrite(model, linears, embedding, level, same_grid(part["head"], part["embedding"]))
    onnx.save_model(model, str(built / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=WEIGHTS, size_threshold=1024)
    return done


def _sizes(fp32: int, quantized: int) -> dict[str, Any]:
    return {"fp32_bytes": fp32, "quantized_bytes": quantized,
            "ratio": round(fp32 / max(quantized, 1), 2)}


def _check(built: Path, fake: Model, config: WeightQuantConfig) -> dict[str, Any]:
    from slimkit.llm.verify import VerifyConfig, verification_prompts
    from slimkit.llm.wquant.measure import check_graph

    verify = VerifyConfig(prompts=2, prompt_tokens=config.advanced.verify_tokens)
    vocab = int(fake.meta.get("vocab_size") or 0) or 2
    prompts = verification_prompts(fake, verify, vocab)
    return check_graph(built, fake, prompts, atol=5e-3, rtol=5e-3, threads=config.threads)


def _quality(built: Path, model: Model, config: WeightQuantConfig) -> dict[str, Any]:
    from slimkit.llm.evaluate import PerplexityConfig, compare
    from slimkit.llm.load import load_generation_folder
    from slimkit.llm.wquant.measure import check_finite

    window = config.advanced.ppl_window
    evaluation = PerplexityConfig(window=window, stride=window,
                                  max_tokens=window * config.advanced.ppl_windows)
    quality = compare(load_generation_folder(built), model, evaluation, threads=config.threads)
    check_finite(quality)
    return quality


def _speed(fp32: Path, built: Path, model: Model, config: WeightQuantConfig) -> dict[str, Any]:
    from slimkit.llm.evaluate import token_ids
    from slimkit.llm.text import python_reference
    from slimkit.llm.wquant.measure import side_by_side

    advanced = config.advanced
    if model.tokenizer is not None:
        ids = token_ids(model.tokenizer, python_reference("evaluation").text, 4096)
        prompt = ids[1000:1000 + advanced.speed_prompt].tolist()
    else:
        prompt = [(7 * i) % 100 + 3 for i in range(advanced.speed_prompt)]
    rows = side_by_side({"fp32": fp32, "quantized": built}, prompt, advanced.speed_new_tokens,
                        advanced.speed_rounds, config.threads)
    return {**rows, "decode_speedup": round(rows["quantized"]["decode_tok_s"]
                                            / rows["fp32"]["decode_tok_s"], 2),
            "prefill_speedup": round(rows["fp32"]["prefill_ms"]
                                     / rows["quantized"]["prefill_ms"], 2),
            "runtime": "slimkit engine on ONNX Runtime", "threads": config.threads}
