"""The one number a compressed model is judged by: top-1 accuracy when the data has labels and
the model classifies, otherwise the mean cosine of its outputs to the original model's (1.0 for
the original itself). Higher is better; the drop is original minus candidate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slimkit.data import Dataset
from slimkit.evaluate.metrics import UserMetric, accuracy, predict
from slimkit.model import Model, Task


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean cosine of paired rows (each example flattened).

    Example:
        >>> mean_cosine(np.ones((2, 3)), 2 * np.ones((2, 3)))
        1.0
    """
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    num = np.sum(ref * cand, axis=1)
    den = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    return float(np.round(np.mean(num / den), 12))


@dataclass
class Scorer:
    """Scores models on ``data`` against ``original`` (whose outputs are computed once).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("mlp")
        >>> s = Scorer(m, synthetic(m.inputs, 8))
        >>> s.name, s.baseline
        ('cosine_mean', 1.0)
    """

    original: Model
    data: Dataset
    metric: UserMetric | None = None
    reference: np.ndarray = field(init=False)
    baseline: float = field(init=False)

    def __post_init__(self) -> None:
        self.reference = self.outputs(self.original)
        self.baseline = self.score_outputs(self.reference)

    @property
    def name(self) -> str:
        if self.metric is not None:
            return "user_metric"
        if self._labelled(self.reference):
            return "accuracy"
        return "cosine_mean"

    def _labelled(self, outputs: np.ndarray) -> bool:
        return (self.data.labels is not None and outputs.ndim == 2
                and self.original.task != Task.EMBEDDING)

    def outputs(self, model: Model) -> np.ndarray:
        runtime = "torch" if model.module is not None else "onnxruntime"
        return predict(model, self.data, runtime)

    def score_outputs(self, outputs: np.ndarray) -> float:
        if self.metric is not None:
            return float(self.metric(outputs, self.data.labels))
        labels = self.data.labels
        if labels is not None and self._labelled(outputs):
            return accuracy(outputs, labels)
        return mean_cosine(self.reference, outputs)

    def score(self, model: Model) -> float:
        return self.score_outputs(self.outputs(model))

    def noise(self, rounds: int = 200, seed: int = 0) -> float:
        """The standard deviation of the original's metric over bootstrap resamples of the
        data: the evaluation's own noise, below which a metric drop means nothing."""
        rng = np.random.default_rng(seed)
        n, labels = len(self.data), self.data.labels
        if n < 2 or labels is None or self.name != "accuracy":
            return 0.0  # cosine of the original to itself is exactly 1 on every resample
        hits = (np.argmax(self.reference, axis=1) == labels).astype(np.float64)
        means = [float(np.mean(hits[rng.integers(0, n, n)])) for _ in range(rounds)]
        return float(np.std(means))
