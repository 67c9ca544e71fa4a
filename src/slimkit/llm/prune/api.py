"""``prune_llm``: prune a causal LM (a copy) with one of five methods and report what it did.

The result is an ordinary Hugging Face ``*ForCausalLM`` inside a slimkit ``Model``: it saves as
a Hugging Face folder (config set to the new shape), exports with
``slimkit.llm.export_for_generation`` and generates like the original.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from slimkit.errors import InputError, OutputPathError, VerificationError
from slimkit.graph.plan import PrunePlan
from slimkit.llm.evaluate import kl_divergence
from slimkit.llm.load import hf_module, write_hf_folder
from slimkit.llm.prune.calibration import Calibration, calibration_windows
from slimkit.llm.prune.config import CALIBRATION_TEXT, LLMPruneConfig, LLMPruneMethod
from slimkit.llm.prune.depth import choose_layers, drop_layers
from slimkit.llm.prune.sequential import check_pattern, prune_sparse
from slimkit.llm.prune.size import weight_bytes
from slimkit.llm.prune.width import prune_width
from slimkit.llm.text import Text
from slimkit.model import Model
from slimkit.registry import Registry

log = logging.getLogger(__name__)
REPORT_FILE = "slimkit_prune.json"
CHECK_WINDOWS = 2  # calibration windows the pruned model is checked on against the original

Handler = Callable[[Model, LLMPruneConfig, "Calibration | None"],
                   "tuple[PrunePlan | None, dict[str, Any]]"]
METHODS: Registry[Handler] = Registry("LLM pruning method")


@dataclass
class LLMPruneResult:
    """The pruned model (a copy), its report and, for width pruning, the plan replayed."""

    model: Model
    report: dict[str, Any]
    plan: PrunePlan | None = None

    def save(self, folder: str | Path) -> Path:
        """Write a Hugging Face folder (config, safetensors, tokenizer) plus
        ``slimkit_prune.json``; built beside ``folder`` and renamed into place."""
        record = {**self.report, "plan": self.plan.to_dict() if self.plan else None}
        return write_hf_folder(self.model, check_output_folder(folder, REPORT_FILE),
                               REPORT_FILE, record)

    def export(self, folder: str | Path, config: Any = None) -> Any:
        """The generation folder of the pruned model (``export_for_generation``: fp32 ONNX
        with a KV cache, verified against the pruned torch model), with ``slimkit_prune.json``
        beside it; the export's result."""
        from slimkit.llm.export import export_for_generation

        result = export_for_generation(self.model, folder, config)
        (result.folder / REPORT_FILE).write_text(json.dumps(self.report, indent=1, default=str),
                                                 encoding="utf-8")
        return result


def check_output_folder(folder: str | Path, marker: str) -> Path:
    """``folder`` as a Path if it can take a model: new, empty, or written before by this
    command (it holds ``marker``); checked before any work, so a bad path costs nothing."""
    out = Path(folder).expanduser()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir())
                                               or (out / marker).is_file())):
        raise OutputPathError(f"'{out}' exists and is not an empty folder or one slimkit wrote "
                              f"(with {marker}); choose a new folder")
    if not out.parent.is_dir():
        raise OutputPathError(f"cannot write '{out}': folder '{out.parent}' does not exist")
    return out


def prune_llm(model: Model, config: LLMPruneConfig | None = None, *,
              calib: str | Text = CALIBRATION_TEXT) -> LLMPruneResult:
    """Prune a copy of a causal LM; ``model`` is not modified.

    Args:
        model: a causal LM (``slimkit.llm.load_causal_lm``: HF folder, .gguf, builtin:smollm2).
        config: method, ratio, pattern, calibration windows (see :class:`LLMPruneConfig`).
        calib: calibration text (a spec for ``slimkit.llm.load_text`` or a ``Text``); a
            built-in text must be its calibration part.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> m = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> r = prune_llm(m, LLMPruneConfig(method="wanda", pattern="2:4", windows=2,
        ...                                 window=64))
        >>> r.report["sparsity"]["decoder_linear"]
        0.5
    """
    config = config or LLMPruneConfig()
    hf = hf_module(model)
    if config.method in (LLMPruneMethod.MAGNITUDE, LLMPruneMethod.WANDA,
                         LLMPruneMethod.SPARSEGPT):
        check_pattern(hf, config)  # refuse before any work
    calibration = calibration_windows(model.tokenizer, calib, config.windows, config.window) \
        if config.calibrated else None
    start, cpu = time.perf_counter(), time.process_time()
    pruned = replace(model, module=copy.deepcopy(model.module), meta=dict(model.meta))
    with torch.no_grad():
        plan, details = METHODS.get(config.method.value)(pruned, config, calibration)
    seconds = {"wall": round(time.perf_counter() - start, 2),
               "cpu": round(time.process_time() - cpu, 2)}
    pruned_hf = hf_module(pruned)
    pruned.meta["parameters"] = sum(p.numel() for p in pruned_hf.parameters())
    pruned.name = f"{model.name}-{config.method.value}"
    report = {"method": config.method.value, "config": config.to_dict(),
              "calibration": calibration.describe() if calibration else None,
              "parameters": {"before": sum(p.numel() for p in hf.parameters()),
                             "after": pruned.meta["parameters"]},
              "bytes": {"before": weight_bytes(hf), "after": weight_bytes(pruned_hf)},
              "seconds": seconds, **details,
              "check": _check(hf, pruned_hf, calibration, model.tokenizer)}
    return LLMPruneResult(pruned, report, plan)


def _check(original: Any, pruned: Any, calibration: Calibration | None,
           tokenizer: Any) -> dict[str, Any]:
    """Finite logits, and KL / top-1 agreement with the original on a few calibration windows
    (a sanity check; judge quality with ``slimkit.llm.compare`` on the evaluation text)."""
    if calibration is None:
        calibration = calibration_windows(tokenizer, CALIBRATION_TEXT, CHECK_WINDOWS, 128)
    ids = calibration.ids[:CHECK_WINDOWS]
    with torch.no_grad():
        ref = original(input_ids=ids, use_cache=False).logits
        out = pruned(input_ids=ids, use_cache=False).logits
    if not torch.isfinite(out).all():
        raise VerificationError("the pruned model gives NaN or infinite logits on calibration "
                                "text; nothing was written (use a smaller ratio)")
    ref_np = ref.reshape(-1, ref.shape[-1]).numpy()
    out_np = out.reshape(-1, out.shape[-1]).numpy()
    kl = kl_divergence(ref_np, out_np)
    agree = float((ref_np.argmax(-1) == out_np.argmax(-1)).mean())
    return {"windows": int(ids.shape[0]), "tokens": int(ids.numel()),
            "kl_mean": round(float(kl.mean()), 5), "top1_agreement": round(agree, 4),
            "finite": True}


def _needed(calibration: Calibration | None) -> Calibration:
    if calibration is None:  # config.calibrated is True for width and depth
        raise InputError("this pruning method needs calibration text")
    return calibration


@METHODS.register("magnitude")
@METHODS.register("wanda")
@METHODS.register("sparsegpt")
def _sparse(model: Model, config: LLMPruneConfig,
            calibration: Calibration | None) -> tuple[PrunePlan | None, dict[str, Any]]:
    hf = hf_module(model)
    rows = prune_sparse(hf, config, calibration)
    weights, zeros = sum(r["weights"] for r in rows), sum(r["zeros"] for r in rows)
    return None, {"sparsity": {"decoder_linear": round(zeros / weights, 4),
                               "pattern": config.pattern, "layers": rows},
                  "speed_note": "zeros in dense matrices: same shapes and the same dense "
                                "kernels, so ONNX Runtime on CPU runs no faster; the gain is "
                                "in the compressed file (see bytes.after.sparse_format)"}


@METHODS.register("width")
def _width(model: Model, config: LLMPruneConfig,
           calibration: Calibration | None) -> tuple[PrunePlan | None, dict[str, Any]]:
    plan, summary = prune_width(model, config, _needed(calibration))
    return plan, {"width": summary}


@METHODS.register("depth")
def _depth(model: Model, config: LLMPruneConfig,
           calibration: Calibration | None) -> tuple[PrunePlan | None, dict[str, Any]]:
    hf = hf_module(model)
    before = int(hf.config.num_hidden_layers)
    drop, scores = choose_layers(hf, config, _needed(calibration))
    drop_layers(hf, drop)
    return None, {"depth": {"criterion": config.depth_criterion.value, "layers_before": before,
                            "layers_after": before - len(drop), "dropped": drop,
                            "scores": [round(s, 5) for s in scores]}}
