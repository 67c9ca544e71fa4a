"""How a quantized model is judged against the float one on the same data: the task metric
(user metric, or accuracy with labels) and output fidelity. Without labels or a user metric the
metric is fidelity itself: mean cosine for embeddings, top-1 agreement for classifiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.evaluate.metrics import (
    UserMetric,
    accuracy,
    embedding_fidelity,
    output_fidelity,
    predict,
)
from slimkit.model import Model, Task


@dataclass
class Score:
    name: str
    float_value: float
    value: float
    fidelity: dict[str, float] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        return self.float_value - self.value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "float": self.float_value, "quantized": self.value,
                "drop": self.drop, "fidelity": self.fidelity}


class Scorer:
    """Runs the float model once, then scores each candidate file against it."""

    def __init__(self, model: Model, float_model: Model, data: Dataset,
                 metric: UserMetric | None) -> None:
        self.model, self.data, self.metric = model, data, metric
        self.reference = predict(float_model, data, "onnxruntime")
        self.name = self._metric_name()
        self.float_value = self._value(self.reference)

    def _metric_name(self) -> str:
        if self.metric is not None:
            return "user_metric"
        if self.data.labels is not None and self.reference.ndim == 2 \
                and self.model.task != Task.EMBEDDING:
            return "accuracy"
        return "cosine_mean" if self.model.task == Task.EMBEDDING else "top1_agreement"

    def _value(self, outputs: np.ndarray) -> float:
        if self.name == "user_metric" and self.metric is not None:
            return float(self.metric(outputs, self.data.labels))
        if self.name == "accuracy" and self.data.labels is not None:
            return accuracy(outputs, self.data.labels)
        return self._fidelity(outputs).get(self.name, 1.0)

    def _fidelity(self, outputs: np.ndarray) -> dict[str, float]:
        fid = output_fidelity(self.reference, outputs)
        if self.model.task == Task.EMBEDDING or outputs.ndim == 2 and outputs.shape[1] > 16:
            fid.update(embedding_fidelity(self.reference, outputs))
        return fid

    def value_of(self, outputs: np.ndarray) -> float:
        """The metric of ``outputs`` (of the same data) against the float reference."""
        return self._value(outputs)

    def score(self, path: Path) -> Score:
        outputs = predict(self.model.with_onnx(path), self.data, "onnxruntime")
        return Score(self.name, self.float_value, self._value(outputs), self._fidelity(outputs))
