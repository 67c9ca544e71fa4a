"""What ``torch.onnx.export`` (the TorchScript exporter) needs around it to export the models
users bring, all set for the export only and restored afterwards:

- ``nn.MultiheadAttention``'s fused fast path is turned off: in eval mode without gradients a
  ``TransformerEncoderLayer`` otherwise runs ``aten::_transformer_encoder_layer_fwd``, which
  has no ONNX form (the plain path exports to MatMul/Softmax and verifies the same);
- ``aten::rms_norm`` (``nn.RMSNorm``), which the exporter has no symbolic for below opset 23,
  is written as ``x / sqrt(mean(x**2) + eps) * weight``;
- the exporter's C++ dump of the whole graph on a failure (it turns its own log on) is kept
  off the console: the failure is reported as one line by ``export_onnx``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

OPSETS = range(11, 22)


@contextlib.contextmanager
def export_surroundings(opset: int) -> Iterator[None]:
    """Set up the exporter for one ``torch.onnx.export`` call (see the module docstring)."""
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    registered = _register(opset)
    try:
        with quiet_stderr():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        if registered:
            torch.onnx.unregister_custom_op_symbolic("aten::rms_norm", opset)


def _register(opset: int) -> bool:
    if opset not in OPSETS:
        return False
    torch.onnx.register_custom_op_symbolic("aten::rms_norm", rms_norm, opset)
    return True


def rms_norm(g: Any, x: Any, normalized_shape: Any, weight: Any, eps: Any) -> Any:
    """ONNX ops for ``aten::rms_norm`` (float32 arithmetic, any opset from 11)."""
    from torch.onnx import symbolic_helper as helper

    dims = helper._get_const(normalized_shape, "is", "normalized_shape")
    axes = list(range(-len(dims), 0))
    epsilon = None if helper._is_none(eps) else helper._maybe_get_const(eps, "f")
    epsilon = torch.finfo(torch.float32).eps if epsilon is None else float(epsilon)
    square = g.op("Mul", x, x)
    if g.opset >= 18:
        axes_tensor = g.op("Constant", value_t=torch.tensor(axes, dtype=torch.long))
        mean = g.op("ReduceMean", square, axes_tensor, keepdims_i=1)
    else:
        mean = g.op("ReduceMean", square, axes_i=axes, keepdims_i=1)
    shifted = g.op("Add", mean, g.op("Constant", value_t=torch.tensor(epsilon)))
    out = g.op("Div", x, g.op("Sqrt", shifted))
    return out if helper._is_none(weight) else g.op("Mul", out, weight)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptors 1 and 2 to a temporary file for the block (C++ output included:
    torch's exporter writes its graph dump there)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no console to redirect
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
