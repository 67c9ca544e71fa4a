"""Per-channel activation statistics of an ONNX graph on calibration data: the largest magnitude
of each channel (last axis) of chosen tensors, over real tokens only.

Padding positions of text inputs are cut off (each example is run at its own length, read from
its attention mask), so padded rows, whose activations no user input produces, do not set the
ranges. Short calibration text is refused: sentences of fewer than ``MIN_TOKENS`` tokens
(``[CLS] word [SEP]``) do not exercise attention the way real input does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError

MIN_TOKENS = 4
MASK_NAMES = ("attention_mask",)


def examples(data: Dataset, input_names: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
    """One example at a time (batch of 1), cut to its real length when it has an attention
    mask.

    Example:
        >>> d = Dataset({"input_ids": np.ones((1, 5), np.int64),
        ...              "attention_mask": np.array([[1, 1, 1, 0, 0]])})
        >>> [e["input_ids"].shape for e in examples(d, ("input_ids", "attention_mask"))]
        [(1, 3)]
    """
    mask_name = next((n for n in input_names if n in MASK_NAMES), None)
    for i in range(len(data)):
        item = {k: np.asarray(data.inputs[k][i:i + 1]) for k in input_names}
        if mask_name is not None:
            length = max(int(item[mask_name][0].sum()), 1)
            item = {k: v[:, :length] if v.ndim >= 2 else v for k, v in item.items()}
        yield item


def check_token_lengths(data: Dataset, input_names: tuple[str, ...]) -> None:
    """Refuse calibration text whose every example is shorter than ``MIN_TOKENS`` tokens."""
    mask_name = next((n for n in input_names if n in MASK_NAMES), None)
    if mask_name is None or mask_name not in data.inputs:
        return
    lengths = np.asarray(data.inputs[mask_name]).sum(axis=1)
    if len(lengths) and int(lengths.max()) < MIN_TOKENS:
        raise DataError(
            f"every calibration example of '{data.name}' is shorter than {MIN_TOKENS} tokens "
            f"(longest: {int(lengths.max())}); activation ranges from them would not cover real "
            "input: calibrate on full sentences, as the model will see them")


def channel_absmax(path: Path, tensors: list[str], data: Dataset,
                   input_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The largest |value| of each channel (last axis) of each tensor of ``tensors``."""
    import onnx

    from slimkit.quantize.calibration import quiet

    proto = onnx.load(str(path))
    have = {o.name for o in proto.graph.output}
    for name in tensors:
        if name not in have:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    stats: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="slimkit-stats-") as tmp, quiet():
        probe = Path(tmp) / "probe.onnx"
        onnx.save(proto, str(probe))
        session = _session(probe)
        for item in examples(data, input_names):
            for name, value in zip(tensors, session.run(tensors, item), strict=True):
                amax = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                stats[name] = np.maximum(stats[name], amax) if name in stats else amax
    return stats


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
