"""torch's dynamo-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``), the fallback of
:func:`slimkit.export.onnx.export_onnx` for graphs the TorchScript exporter gets wrong: it
traces with ``torch.export`` and keeps the sizes of dynamic axes symbolic (the TorchScript
tracer bakes some, e.g. the sequence length inside ``nn.MultiheadAttention``). It needs the
``onnxscript`` package; its graphs are not fused into ORT's Attention (see ANCHORS.md), so it
is only the second choice."""

from __future__ import annotations

import importlib.util
import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from slimkit.errors import ExportError
from slimkit.model import Model

if TYPE_CHECKING:
    from slimkit.export.onnx import ExportConfig

MIN_OPSET = 18  # the dynamo exporter's lowest opset


def dynamo_available() -> bool:
    return importlib.util.find_spec("onnxscript") is not None


def dynamo_export(model: Model, module: torch.nn.Module, target: Path,
                  config: ExportConfig) -> None:
    """Export ``module`` to ``target`` with the dynamo exporter (dynamic batch and the
    model's named dynamic axes)."""
    from slimkit.data import synthetic
    from slimkit.export.surroundings import export_surroundings, quiet_stderr

    args = model.torch_args(synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2))
    auto = torch.export.Dim.AUTO  # dynamic where the model allows it, found by tracing
    per_input = tuple({i: auto for i, d in enumerate(spec.shape) if isinstance(d, str)}
                      for spec in model.inputs)
    # forward(*args): one entry, for the tuple of all inputs
    shapes: tuple[Any, ...] = (per_input,) if _takes_varargs(module) else per_input
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), redirect_stdout(io.StringIO()), \
                quiet_stderr(), export_surroundings(config.opset):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(target), dynamo=True,
                              opset_version=max(config.opset, MIN_OPSET),
                              input_names=list(model.input_names),
                              output_names=list(model.output_names),
                              dynamic_shapes=shapes, verbose=False)
    except Exception as exc:  # the exporter raises many types; one line for the user
        raise ExportError(f"exporting '{model.name}' to ONNX failed with both of torch's "
                          f"exporters (dynamo: {type(exc).__name__})") from exc
    finally:
        module.train(was_training)


def _takes_varargs(module: torch.nn.Module) -> bool:
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_POSITIONAL for p in params)
