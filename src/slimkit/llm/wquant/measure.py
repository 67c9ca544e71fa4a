"""What the report measures on the written graph: that it computes what the fake-quantized torch
model computes (exactness of the packing), that its logits are finite, and its speed side by
side with the fp32 graph (prefill and decode, interleaved rounds, medians)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import VerificationError
from slimkit.model import Model

CHECK_FILE = "model.check.onnx"


def fp32_compute_copy(folder: Path) -> Path:
    """A copy of the folder's graph (sharing its weight file) with every MatMulNBits at
    accuracy level 1 (fp32 compute), so it must match the fake-quantized torch model to float
    rounding."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = 1
    path = folder / CHECK_FILE
    onnx.save(model, str(path))
    return path


def check_graph(folder: Path, reference: Model, prompts: list[list[int]], atol: float,
                rtol: float, threads: int | None) -> dict[str, Any]:
    """Prefill logits of the written graph (at fp32 compute) against the fake-quantized torch
    model; a graph with non-finite logits or beyond tolerance is refused (nothing is kept)."""
    from slimkit.llm.load import load_generation_folder
    from slimkit.llm.runtime import open_runtime

    path = fp32_compute_copy(folder)
    try:
        handle = load_generation_folder(folder)
        handle.onnx_path = path
        graph = open_runtime(handle, "onnxruntime", threads)
        torch_rt = open_runtime(reference, "torch", threads)
        worst, excess = 0.0, -math.inf
        for prompt in prompts:
            a = torch_rt.forward(np.asarray([prompt]))[0]
            b = graph.forward(np.asarray([prompt]))[0]
            if not np.isfinite(b).all():
                raise VerificationError(
                    "the quantized model gives NaN or infinite logits (a block scale "
                    "overflowed?); nothing was written")
            diff = np.abs(b - a)
            worst = max(worst, float(diff.max()))
            excess = max(excess, float((diff - atol - rtol * np.abs(a)).max()))
    finally:
        path.unlink(missing_ok=True)
    if excess > 0:
        raise VerificationError(f"the MatMulNBits graph differs from the fake-quantized torch "
                                f"model by {worst:.3g} in logits (atol {atol:g}); nothing was "
                                "written")
    return {"prompts": len(prompts), "tokens": len(prompts[0]), "max_abs_logit_diff": worst,
            "atol": atol, "rtol": rtol, "compute": "fp32 (accuracy level 1 copy)"}


def check_finite(quality: dict[str, Any]) -> None:
    """Refuse a model whose perplexity or KL came out NaN or infinite."""
    values = [quality.get(k) for k in ("perplexity", "kl_mean")]
    if any(v is not None and not math.isfinite(v) for v in values):
        raise VerificationError("the quantized model gives NaN or infinite logits on the "
                                "evaluation text; nothing was written")


def side_by_side(folders: dict[str, Path], prompt: list[int], new_tokens: int, rounds: int,
                 threads: int | None) -> dict[str, dict[str, float]]:
    """Prefill (time to first token) and decode tokens/s of each folder, slimkit's engine on
    ONNX Runtime, one warm-up then ``rounds`` interleaved rounds; medians."""
    from slimkit.llm.engine import Engine
    from slimkit.llm.load import load_generation_folder
    from slimkit.llm.runtime import open_runtime

    engines = {name: Engine(open_runtime(load_generation_folder(f), "onnxruntime", threads),
                            stop_token_ids=()) for name, f in folders.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in engines}
    for engine in engines.values():
        engine.run(prompt, 4)
    for _ in range(rounds):
        for name, engine in engines.items():
            state = engine.run(prompt, new_tokens)
            samples[name][0].append(state.first_token_s)
            samples[name][1].extend(state.step_s)
    return {name: {"prefill_ms": round(1000 * float(np.median(first)), 2),
                   "decode_tok_s": round(1 / float(np.median(steps)), 2),
                   "prompt_tokens": len(prompt), "new_tokens": new_tokens, "rounds": rounds}
            for name, (first, steps) in samples.items()}


def folder_bytes(folder: Path) -> int:
    """Bytes of the graph and its weights."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))


def copy_side_files(source: Path, target: Path) -> None:
    """Everything of a generation folder but its graph and weights (config, tokenizer)."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if not item.name.startswith("model.onnx") and item.name != "slimkit_export.json":
            shutil.copy2(item, target / item.name)
