import math

import numpy as np
import pytest

from slimkit import load_data
from slimkit.evaluate.metrics import (
    accuracy,
    embedding_fidelity,
    evaluate,
    load_user_metric,
    output_fidelity,
    sqnr_db,
)
from slimkit.testing import assert_close_to_reference


def test_accuracy_closed_form():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_sqnr_closed_form():
    ref = np.ones(100)
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)  # noise 1% of signal power
    assert sqnr_db(ref, ref) == math.inf


def test_output_fidelity():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    got = output_fidelity(ref, np.array([[0.9, 0.0], [0.6, 0.5]]))
    assert got["top1_agreement"] == 0.5 and got["max_abs_error"] == pytest.approx(0.6)


def test_embedding_fidelity_identical_and_permuted():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20, 8))
    same = embedding_fidelity(emb, emb * 3.0)  # scale does not change cosine
    assert same["cosine_mean"] == pytest.approx(1.0) and same["top5_neighbour_agreement"] == 1.0
    noisy = embedding_fidelity(emb, emb + rng.standard_normal(emb.shape))
    assert noisy["cosine_min"] < noisy["cosine_mean"] < 1.0


def test_user_metric_spec():
    fn = load_user_metric("numpy:mean")
    assert fn(np.array([1.0, 3.0])) == 2.0
    with pytest.raises(Exception, match="package.module:function"):
        load_user_metric("numpy")


def test_evaluate_against_reference(digits_cnn):
    data = load_data("builtin:digits:test", digits_cnn).take(100)
    result = evaluate(digits_cnn, data, reference=digits_cnn)
    assert result["accuracy"] >= 0.95
    assert result["fidelity"]["top1_agreement"] == 1.0 and result["fidelity"]["sqnr_db"] == math.inf


def test_assert_close_has_no_default_tolerance():
    with pytest.raises(ValueError, match="no default tolerance"):
        assert_close_to_reference(np.zeros(2), np.zeros(2))
    assert_close_to_reference(np.ones(4) * 1.001, np.ones(4), min_sqnr_db=50)
    with pytest.raises(AssertionError, match="SQNR"):
        assert_close_to_reference(np.ones(4) * 1.1, np.ones(4), min_sqnr_db=50)
