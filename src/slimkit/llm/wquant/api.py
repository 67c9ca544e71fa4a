"""``quantize_weights``: a causal LM -> a generation folder whose MatMul weights are int4/int8
``MatMulNBits`` (runs in slimkit's engine and unchanged in ONNX Runtime GenAI), verified and
measured against the fp32 model, with a report."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slimkit.llm.export import check_generation_output
from slimkit.llm.wquant.config import Method, WeightQuantConfig
from slimkit.model import Model

log = logging.getLogger(__name__)
REPORT_FILE = "slimkit_wquant.json"


@dataclass(frozen=True)
class WeightQuantResult:
    folder: Path
    model: Model  # a handle on the written generation folder
    report: dict[str, Any]


def quantize_weights(model: Model, output_folder: str | Path,
                     config: WeightQuantConfig | None = None,
                     calib: str | None = None) -> WeightQuantResult:
    """Quantize ``model``'s weights to MatMulNBits and write a generation folder + report.

    ``calib`` (a text spec, default ``config.calibration``) is what GPTQ, AWQ and ``keep_8bit``
    measure on. The written graph is checked against the fake-quantized torch model, then
    judged against ``model`` (perplexity, KL, top-1 agreement on the evaluation text) and timed
    side by side with the fp32 graph; NaN logits or a mismatch leave nothing written.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> from slimkit.llm.wquant.config import AdvancedWeightQuantConfig
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> m = load_causal_lm(tiny_llama_folder(root))
        >>> fast = AdvancedWeightQuantConfig(ppl_windows=1, ppl_window=64, speed_rounds=0)
        >>> r = quantize_weights(m, root / "q", WeightQuantConfig(advanced=fast))
        >>> r.report["op_types"]["MatMulNBits"] > 0, r.report["quality"]["top1_agreement"] > 0.5
        (True, True)
    """
    from slimkit.llm.export import check_supported
    from slimkit.llm.load import hf_module

    config = config or WeightQuantConfig()
    out = check_generation_output(Path(output_folder).expanduser(), "the quantized model")
    hf = hf_module(model)
    check_supported(hf)
    start = time.perf_counter()
    work, torch_part = _quantize_torch(model, hf, config, calib or config.calibration)
    with tempfile.TemporaryDirectory(prefix=".slimkit-wq-", dir=out.parent) as tmp:
        from slimkit.llm.wquant.write import write_folder

        built, graph_part = write_folder(model, work, torch_part, config, Path(tmp))
        report = {"source": model.source, "config": config.to_dict(), **torch_part["report"],
                  **graph_part, "seconds": round(time.perf_counter() - start, 1)}
        (built / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str),
                                         encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        built.rename(out)
    from slimkit.llm.load import load_generation_folder

    return WeightQuantResult(out, load_generation_folder(out, name=f"{model.name}-{config.mode}"),
                             report)


def fake_quantize(model: Model, config: WeightQuantConfig | None = None,
                  calib: str | None = None) -> Model:
    """A copy of ``model`` whose weights hold exactly the values ``quantize_weights`` writes
    (dequantized, in torch): a cheap perplexity before any export (the search screens on it).

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> m = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> fake_quantize(m).name.endswith("-fake-int4")
        True
    """
    from dataclasses import replace

    from slimkit.llm.load import CausalLM, hf_module

    config = config or WeightQuantConfig()
    work, _ = _quantize_torch(model, hf_module(model), config, calib or config.calibration)
    name = f"{model.name}-fake-{config.mode.value}"
    return replace(model, module=CausalLM(work).eval(), name=name)


def _quantize_torch(model: Model, hf: Any, config: WeightQuantConfig,
                    text: str) -> tuple[Any, dict[str, Any]]:
    """The fake-quantized working copy and every quantized tensor, with their report."""
    from slimkit.llm.runtime import torch_threads
    from slimkit.llm.text import load_text
    from slimkit.llm.wquant.calibrate import calibration_windows, check_calibration_text
    from slimkit.llm.wquant.head import quantize_embedding, quantize_head, same_grid
    from slimkit.llm.wquant.passes import (
        pick_eight_bit,
        quantize_decoder,
        sensitivity,
        working_copy,
    )

    windows, calibration = None, None
    if config.needs_calibration:
        check_calibration_text(text)
        if model.tokenizer is None:
            from slimkit.errors import InputError

            raise InputError(f"'{model.source}' has no tokenizer: {config.method.value} and "
                             "keep_8bit calibrate on text")
        loaded = load_text(text)
        windows = calibration_windows(model.tokenizer, loaded.text,
                                      config.advanced.calibration_window,
                                      config.advanced.calibration_windows)
        calibration = {**loaded.describe(), "windows": int(windows.shape[0]),
                       "tokens": int(windows.numel())}
    work = working_copy(hf)
    with torch.no_grad(), torch_threads(config.threads):
        embedding, embedding_report = quantize_embedding(work, config)
        errors = sensitivity(work, windows[: max(1, len(windows) // 4)], config) \
            if config.keep_8bit and windows is not None else {}
        eight_bit = pick_eight_bit(errors, config.keep_8bit) if errors else set()
        layers, reports = quantize_decoder(work, windows, config, eight_bit)
        head, head_report = quantize_head(work, windows, config)
        check_logits(work)
    report: dict[str, Any] = {"calibration": calibration,
              "layers": [r.to_dict() for r in reports],
              "lm_head": head_report.to_dict() if head_report else {"precision": "fp32"},
              "embeddings": embedding_report.to_dict() if embedding_report else
              {"precision": "fp32"},
              "tied_embeddings_shared": same_grid(head, embedding),
              "mixed_precision": {"keep_8bit": config.keep_8bit, "eight_bit": sorted(eight_bit),
                                  "sensitivity": errors} if config.keep_8bit else None}
    if config.method == Method.AWQ:
        report["awq"] = "scales folded into RMSNorm weights, up_proj and v_proj rows"
    return work, {"layers": layers, "head": head, "embedding": embedding, "report": report}


@torch.no_grad()
def check_logits(work: Any) -> None:
    """The fake-quantized model's logits on a short prompt are finite (else nothing is
    written: a model that overflows is reported before any export)."""
    from slimkit.errors import VerificationError

    logits = work(input_ids=torch.arange(16)[None] % 50 + 3, use_cache=False).logits
    if not bool(torch.isfinite(logits).all()):
        raise VerificationError("the quantized model gives NaN or infinite logits (weights "
                                "too large for its compute?); nothing was written")

