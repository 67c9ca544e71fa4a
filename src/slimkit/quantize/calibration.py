"""Calibration data for ONNX Runtime's static quantization, from slimkit's Dataset, and the MSE
calibration method ORT lacks: per tensor, the clipping range that minimises the expected squared
quantization error over the tensor's histogram (collected by ORT's own histogram calibrator)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError
from slimkit.model import TensorSpec

CALIB_BATCH = 8


class DatasetReader:
    """ORT's CalibrationDataReader protocol over a Dataset (``get_next``: None at the end)."""

    def __init__(self, data: Dataset, input_names: tuple[str, ...]) -> None:
        self.data = data
        self.input_names = input_names
        self._it: Iterator[Any] = iter(data.batches(CALIB_BATCH))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {k: batch[0][k] for k in self.input_names}

    def rewind(self) -> None:
        self._it = iter(self.data.batches(CALIB_BATCH))

    def __len__(self) -> int:
        return -(-len(self.data) // CALIB_BATCH)


def check_calibration(data: Dataset | None, inputs: tuple[TensorSpec, ...], size: int) -> Dataset:
    """The first ``size`` examples, after checking they exist, fit the inputs and are finite."""
    if data is None:
        raise DataError("static quantization needs calibration data: pass --calib DATA")
    if len(data) == 0:
        raise DataError(f"the calibration set '{data.name}' is empty")
    data = data.take(size)
    for spec in inputs:
        if spec.name not in data.inputs:
            raise DataError(f"calibration data '{data.name}' lacks model input '{spec.name}'; "
                            f"it has {sorted(data.inputs)}")
        array = data.inputs[spec.name]
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int) and i > 0]
        if array.ndim != len(spec.shape) or any(array.shape[i] != d for i, d in fixed):
            raise DataError(f"calibration input '{spec.name}' has examples of shape "
                            f"{tuple(array.shape[1:])}; the model takes {tuple(spec.shape[1:])}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise DataError(f"calibration input '{spec.name}' holds NaN or Inf values")
    return data


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ORT's quantization tools print progress on stdout and advice through the root logger
    (e.g. "consider pre-processing", which slimkit already does); keep slimkit's output clean
    and restore both afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def mse_ranges(float_onnx: Path, data: Dataset, input_names: tuple[str, ...],
               tensors: list[str] | None = None,
               levels: int = 256) -> dict[str, tuple[float, float]]:
    """MSE-optimal (rmin, rmax) per activation tensor, for ORT's ``TensorQuantOverrides``."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(prefix="slimkit-calib-") as tmp, quiet():
        calibrator = create_calibrator(
            float_onnx, tensors or [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"symmetric": False, "num_bins": 2048},
        )
        calibrator.collect_data(DatasetReader(data, input_names))
        histograms = calibrator.collector.histogram_dict
    # ORT's histograms span a symmetric range; the observed min/max (h[2], h[3]) bound the search
    return {name: mse_clip_range(h[0], h[1], levels, float(h[2]), float(h[3]))
            for name, h in histograms.items()}


def mse_clip_range(hist: np.ndarray, edges: np.ndarray, levels: int = 256,
                   data_min: float | None = None,
                   data_max: float | None = None) -> tuple[float, float]:
    """The [lo, hi] (containing 0) whose uniform ``levels``-step quantization of the histogram has
    the smallest squared error, each bin's centre quantized as it would be (clipped, rounded to
    the grid). Rounding the centres, rather than assuming step^2/12 noise everywhere, keeps the
    many exact zeros after a ReLU from passing for noisy values and forcing over-clipping.

    Example:
        >>> x = np.concatenate([np.random.default_rng(0).uniform(size=1_000_000), [10.0]])
        >>> lo, hi = mse_clip_range(*np.histogram(x, bins=2048))
        >>> 1.0 < hi < 9.0  # the lone outlier is clipped, not stretched over the range
        True
    """
    centers = (edges[:-1] + edges[1:]) / 2.0
    weights = hist.astype(np.float64)
    lo0 = min(float(edges[0]) if data_min is None else data_min, 0.0)
    hi0 = max(float(edges[-1]) if data_max is None else data_max, 0.0)
    best, best_err = (lo0, hi0), np.inf
    for f_lo in np.linspace(0.05, 1.0, 40):
        for f_hi in np.linspace(0.05, 1.0, 40):
            lo, hi = lo0 * f_lo, hi0 * f_hi
            step = (hi - lo) / (levels - 1) or 1e-12
            zero_point = np.round(-lo / step)  # the grid holds 0 exactly, as ORT's does
            grid = (np.clip(np.round(centers / step) + zero_point, 0, levels - 1)
                    - zero_point) * step
            err = np.sum(weights * (centers - grid) ** 2)
            if err < best_err:
                best, best_err = (float(lo), float(hi)), err
    return best
