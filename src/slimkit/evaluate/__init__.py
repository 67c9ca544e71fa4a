"""Evaluation: predictions on any runtime, task metrics and fidelity to a reference
(``metrics``), and what compression changed, example by example and layer by layer (``diff``)."""

from slimkit.evaluate.metrics import (
    UserMetric,
    accuracy,
    embedding_fidelity,
    evaluate,
    load_user_metric,
    output_fidelity,
    predict,
    sqnr_db,
)

__all__ = ["UserMetric", "accuracy", "embedding_fidelity", "evaluate", "load_user_metric",
           "output_fidelity", "predict", "sqnr_db"]
