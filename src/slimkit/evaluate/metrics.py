"""Evaluation: task metrics (top-1 accuracy, a user metric) and fidelity of a candidate model's
outputs to a reference model's (SQNR, max abs error, top-1 agreement; embedding cosine and
nearest-neighbour agreement for encoders).

The metric maths are pure functions on arrays; :func:`predict` is the only part that runs models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError, InputError
from slimkit.model import Model, Task

UserMetric = Callable[[np.ndarray, "np.ndarray | None"], float]


def predict(model: Model, data: Dataset, runtime: str = "torch", batch_size: int = 64,
            threads: int = 1) -> np.ndarray:
    """The model's first output on every example of ``data``, concatenated.

    Example:
        >>> from slimkit import load_model, load_data
        >>> m = load_model("builtin:resnet18-cifar")
        >>> predict(m, load_data("synthetic:3", m)).shape
        (3, 10)
    """
    from slimkit.export.sessions import open_session_for
    from slimkit.progress import progress
    from slimkit.runtime import RuntimeOptions

    outputs = []
    steps = -(-len(data) // batch_size)
    with open_session_for(model, runtime, RuntimeOptions(threads=threads)) as session, \
            session.pinned():
        for inputs, _ in progress(data.batches(batch_size), f"running {model.name}", steps):
            outputs.append(session.run(inputs)[0])
    return np.concatenate(outputs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` (N, classes) against integer ``labels`` (N,)."""
    if logits.ndim != 2 or len(logits) != len(labels):
        raise DataError(f"accuracy needs logits (N, classes) and N labels; got {logits.shape} "
                        f"and {labels.shape}")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - cand|^2)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - candidate.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-300) / noise))


def output_fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """SQNR, max abs error and (for 2-D outputs) top-1 agreement of candidate vs reference."""
    if reference.shape != candidate.shape:
        raise DataError(f"outputs differ in shape: {reference.shape} vs {candidate.shape}")
    result = {
        "sqnr_db": sqnr_db(reference, candidate),
        "max_abs_error": float(np.max(np.abs(reference.astype(np.float64) - candidate))),
    }
    if reference.ndim == 2 and reference.shape[1] > 1:
        agree = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
        result["top1_agreement"] = float(np.mean(agree))
    return result


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embedding_fidelity(reference: np.ndarray, candidate: np.ndarray,
                       k: int = 5) -> dict[str, float]:
    """Cosine of paired embeddings (mean, min) and the overlap of each example's top-k nearest
    neighbours (cosine, itself excluded) under the two models."""
    if reference.shape != candidate.shape:
        raise DataError(f"embeddings differ in shape: {reference.shape} vs {candidate.shape}")
    ref, cand = _unit_rows(reference), _unit_rows(candidate)
    cos = np.sum(ref * cand, axis=1)
    result = {"cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos))}
    n = len(ref)
    k = min(k, n - 1)
    if k >= 1:
        overlap = []
        for sims_ref, sims_cand, i in zip(ref @ ref.T, cand @ cand.T, range(n), strict=True):
            sims_ref[i] = sims_cand[i] = -np.inf
            top_ref = set(np.argpartition(-sims_ref, k - 1)[:k].tolist())
            top_cand = set(np.argpartition(-sims_cand, k - 1)[:k].tolist())
            overlap.append(len(top_ref & top_cand) / k)
        result[f"top{k}_neighbour_agreement"] = float(np.mean(overlap))
    return result


def load_user_metric(spec: str) -> UserMetric:
    """``package.module:function``; the function takes ``(outputs, labels)`` and returns a float."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"metric '{spec}' must be of the form package.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot load metric '{spec}': {exc}") from None
    if not callable(fn):
        raise InputError(f"metric '{spec}' is not callable")
    return fn  # type: ignore[no-any-return]


def task_metrics(model: Model, outputs: np.ndarray, labels: np.ndarray | None,
                 metric: UserMetric | None = None) -> dict[str, float]:
    """The task metrics the data allows: accuracy with labels for classifiers, a user metric."""
    result: dict[str, float] = {}
    if labels is not None and outputs.ndim == 2 and model.task != Task.EMBEDDING:
        result["accuracy"] = accuracy(outputs, labels)
    if metric is not None:
        try:
            result["user_metric"] = float(metric(outputs, labels))
        except Exception as exc:  # the user's code: report its failure, not our traceback
            name = getattr(metric, "__name__", "metric")
            raise InputError(f"user metric '{name}' failed on outputs {outputs.shape}: "
                             f"{type(exc).__name__}: {exc}") from None
    return result


def evaluate(model: Model, data: Dataset, reference: Model | None = None, *,
             runtime: str = "torch", metric: UserMetric | None = None) -> dict[str, Any]:
    """Task metrics of ``model`` on ``data`` and, with a ``reference``, its fidelity to it.

    Example:
        >>> from slimkit import load_model, load_data
        >>> m = load_model("builtin:resnet18-cifar")
        >>> sorted(evaluate(m, load_data("synthetic:4", m), reference=m)["fidelity"])
        ['max_abs_error', 'sqnr_db', 'top1_agreement']
    """
    outputs = predict(model, data, runtime)
    result: dict[str, Any] = {"examples": len(data), "runtime": runtime,
                              **task_metrics(model, outputs, data.labels, metric)}
    if reference is not None:
        ref_out = predict(reference, data, "torch" if reference.module is not None
                          else "onnxruntime")
        if ref_out.shape != outputs.shape:
            raise DataError(f"'{model.name}' gives outputs of shape {outputs.shape}, reference "
                            f"'{reference.name}' {ref_out.shape}: they cannot be compared")
        result["fidelity"] = output_fidelity(ref_out, outputs)
        if model.task == Task.EMBEDDING:
            result["embedding_fidelity"] = embedding_fidelity(ref_out, outputs)
    return result
