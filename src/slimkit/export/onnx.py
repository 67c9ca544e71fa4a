"""Verified ONNX export: ``export_onnx`` writes the file atomically only after ONNX Runtime's
outputs on sample inputs match the torch model's within tolerance."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.data import Dataset, synthetic
from slimkit.errors import DataError, ExportError, InputError, VerificationError
from slimkit.io import atomic_path
from slimkit.model import Model


@dataclass(frozen=True)
class ExportConfig:
    """How to export and how strictly to verify.

    ``opset`` 17 is the newest opset for which ONNX Runtime's transformer fusions and
    quantization tooling are well exercised with the TorchScript exporter (which, unlike the
    dynamo exporter in torch 2.13, yields graphs ORT fuses into Attention; see ANCHORS.md).
    """

    opset: int = 17
    atol: float = 1e-4
    rtol: float = 1e-3
    verify_examples: int = 64  # at most this many examples of the given sample data
    synthetic_examples: int = 3  # batch size of synthetic verification inputs (not the
    # traced batch of 2, so a batch axis fixed by mistake is caught)
    verify_sequence: int = 24

    def __post_init__(self) -> None:
        if not 11 <= self.opset <= 21:
            raise InputError(f"opset {self.opset} is not supported; use 11..21 (default 17)")
        if self.atol < 0 or self.rtol < 0:
            raise InputError("export tolerances must be >= 0")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    model: Model  # a handle on the exported file
    opset: int
    max_abs_diff: float
    atol: float
    rtol: float
    verified_shapes: dict[str, list[int]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "opset": self.opset, "max_abs_diff": self.max_abs_diff,
                "atol": self.atol, "rtol": self.rtol, "verified": True,
                "verified_shapes": self.verified_shapes, "seconds": round(self.seconds, 3)}


def export_onnx(model: Model, path: str | Path, config: ExportConfig | None = None,
                sample: Dataset | None = None) -> ExportResult:
    """Export a torch model to ONNX (dynamic batch axis) and verify it in ONNX Runtime.

    Args:
        model: a torch model (an ONNX model has nothing to export).
        path: the ``.onnx`` file to write; its folder must exist.
        config: opset and verification tolerances.
        sample: inputs to verify on; synthetic inputs from the model's spec by default.

    Raises:
        VerificationError: ONNX Runtime's outputs differ from torch's beyond tolerance; no file
            is written.

    Example:
        >>> import tempfile, pathlib
        >>> from slimkit import load_model
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
        >>> export_onnx(load_model("builtin:resnet18-cifar"), out).max_abs_diff < 1e-4
        True
    """
    config = config or ExportConfig()
    module = model.require_module("export")
    if not str(path).endswith(".onnx"):
        raise InputError(f"export target '{path}' must end with .onnx")
    start = time.perf_counter()
    with atomic_path(path) as tmp:
        check = sample if sample is not None else synthetic(
            model.inputs, config.synthetic_examples, seed=1, dynamic=config.verify_sequence)
        diff, shapes, opset = _exported_and_verified(model, module, tmp, config,
                                                     check.take(config.verify_examples))
    final = Path(path)
    return ExportResult(final, model.with_onnx(final), opset, diff, config.atol,
                        config.rtol, shapes, time.perf_counter() - start)


def _exported_and_verified(model: Model, module: torch.nn.Module, target: Path,
                           config: ExportConfig,
                           check: Dataset) -> tuple[float, dict[str, list[int]], int]:
    """TorchScript export first (ONNX Runtime fuses its attention, see ANCHORS.md); when it
    fails or does not verify (a size traced as a constant), torch's dynamo exporter, which
    keeps symbolic sizes; the first failure is reported when both fail."""
    from slimkit.export.dynamo import MIN_OPSET, dynamo_available, dynamo_export
    from slimkit.export.surroundings import quiet_stderr

    try:
        with quiet_stderr():
            _torch_export(model, module, target, config)
            return (*verify_against_torch(model, target, check, config), config.opset)
    except (ExportError, VerificationError, DataError) as first:
        if not dynamo_available():
            raise
        try:
            dynamo_export(model, module, target, config)
            return (*verify_against_torch(model, target, check, config),
                    max(config.opset, MIN_OPSET))
        except (ExportError, VerificationError, DataError):
            raise first from None


def _torch_export(model: Model, module: torch.nn.Module, target: Path,
                  config: ExportConfig) -> None:
    from slimkit.runtime import open_session

    dummy = synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2)
    with open_session(model, "torch") as session:
        session.run(dummy)  # inputs that do not fit fail here with a clear DataError
    args = model.torch_args(dummy)
    dynamic_axes: dict[str, dict[int, str]] = {
        spec.name: {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
        for spec in model.inputs
    }
    dynamic_axes.update({name: {0: "batch"} for name in model.output_names})
    was_training = module.training
    module.eval()
    from slimkit.export.surroundings import export_surroundings

    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), \
                export_surroundings(config.opset):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(target), dynamo=False, opset_version=config.opset,
                input_names=list(model.input_names), output_names=list(model.output_names),
                dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types; the user needs the cause
        raise ExportError(
            f"exporting '{model.name}' to ONNX failed: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
        ) from exc
    finally:
        module.train(was_training)


def verify_against_torch(model: Model, onnx_path: Path, sample: Dataset,
                         config: ExportConfig) -> tuple[float, dict[str, list[int]]]:
    """Run the torch model and the ONNX file on ``sample``; raise if they differ."""
    from slimkit.runtime import RuntimeOptions, open_session

    batch = sample.first_batch(len(sample))
    with open_session(model, "torch") as ts:
        expected = ts.run(batch)
    with open_session(model.with_onnx(onnx_path), "onnxruntime", RuntimeOptions()) as os_:
        got = os_.run(batch)
    worst = 0.0
    for name, want, have in zip(model.output_names, expected, got, strict=True):
        if not np.all(np.isfinite(want)):
            raise DataError(f"the torch model '{model.name}' outputs NaN or Inf on the sample "
                            f"inputs (output '{name}'); check its weights and inputs")
        if want.shape != have.shape:
            raise VerificationError(
                f"output '{name}' of the ONNX export has shape {have.shape}, torch gives "
                f"{want.shape}"
            )
        diff = float(np.max(np.abs(want.astype(np.float64) - have))) if want.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(have, want, atol=config.atol, rtol=config.rtol):
            raise VerificationError(
                f"ONNX export of '{model.name}' does not match torch on output '{name}': max "
                f"abs diff {diff:.3g} > atol {config.atol:g} (rtol {config.rtol:g}); nothing "
                "was written. Raise --atol only if this error is expected for the model"
            )
    return worst, {k: list(v.shape) for k, v in batch.items()}
