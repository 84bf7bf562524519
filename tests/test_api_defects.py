"""Defects of the Python API found by probing (issue 9): each test here fails on the
code before the fix.

- #5: values finite in float64 but too large for a float32 network (1e300) were
  checked before the cast, so they became inf inside the engine;
- #7: a pickled network's state was restored with little validation;
- #9: big integers gave pybind11 signature dumps or "Unable to cast".
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm

# ---- #5: finiteness after the cast to the network's dtype -----------------------------------------


def overflow_data(where, value=1e300):
    """(X, y) for a [3, 4, 2] network with one ``value`` (finite in float64, too large
    for float32) in X or (negated) in y, or in neither."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    y = rng.standard_normal((6, 2))
    if where == "X":
        X[2, 1] = value
    elif where == "y":
        y[4, 0] = -value
    return X, y


def call(net, method, X, y):
    if method == "predict":
        return net.predict(X)
    if method == "predict_proba":
        return net.predict_proba(X)
    if method == "decision_function":
        return net.decision_function(X)
    if method == "forward":
        return net.forward(X)
    if method == "evaluate":
        return net.evaluate(X, y)
    if method == "score":
        return net.score(X, y)
    slow = fm.SGD(lr=1e-90)  # a float64 network's loss stays finite with such inputs
    if method == "fit":
        return net.fit(X, y, epochs=2, batch_size=2, optimizer=slow)
    if method == "partial_fit":
        return net.partial_fit(X, y, optimizer=slow)
    if method == "fit_validation":
        clean_X, clean_y = overflow_data("neither")
        return net.fit(clean_X, clean_y, validation_data=(X, y), optimizer=slow)
    if method == "backward":
        clean_X, _ = overflow_data("neither")
        return net.backward(clean_X, y, net.forward(clean_X))
    if method == "backward_y_pred":
        clean_X, clean_y = overflow_data("neither")
        net.forward(clean_X)
        return net.backward(clean_X, clean_y, y)
    if method == "backward_output":
        clean_X, _ = overflow_data("neither")
        net.forward(clean_X)
        return net.backward_output(clean_X, y)
    raise AssertionError(method)


X_METHODS = ["predict", "decision_function", "forward", "evaluate", "score", "fit", "partial_fit",
             "fit_validation"]
Y_METHODS = ["evaluate", "score", "fit", "partial_fit", "fit_validation", "backward", "backward_y_pred",
             "backward_output"]
CASES = [("X", m) for m in X_METHODS] + [("y", m) for m in Y_METHODS]
NAMES = {("X", "fit_validation"): "validation_data X", ("y", "fit_validation"): "validation_data y",
         ("y", "backward_y_pred"): "y_pred", ("y", "backward_output"): "d_output"}


@pytest.mark.parametrize("where,method", CASES)
def test_values_that_overflow_float32_are_refused_by_name(where, method):
    X, y = overflow_data(where)
    net = fm.Network([3, 4, 2], seed=0, dtype="float32")
    before = net.params.copy()
    name = NAMES.get((where, method), where)
    with pytest.raises(ValueError, match=rf"^{name}: 1 values overflow float32 .*such as -?1e\+300"):
        call(net, method, X, y)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("where,method", CASES)
def test_values_just_over_float32_are_refused_by_name(where, method):
    X, y = overflow_data(where, 1e39)
    net = fm.Network([3, 4, 2], seed=0, dtype="float32")
    with pytest.raises(ValueError, match=rf"^{NAMES.get((where, method), where)}: 1 values overflow float32"):
        call(net, method, X, y)


@pytest.mark.parametrize("where,method", CASES)
def test_the_same_values_work_in_a_float64_network(where, method):
    X, y = overflow_data(where, 1e39)
    net = fm.Network([3, 4, 2], seed=0, dtype="float64")
    result = call(net, method, X, y)
    if isinstance(result, fm.History):
        assert np.isfinite(result.history["loss"]).all()
    elif isinstance(result, dict):
        assert np.isfinite(result["loss"])


@pytest.mark.parametrize("loss,method", [("binary_cross_entropy", "predict_proba"),
                                         ("binary_cross_entropy", "predict"),
                                         ("cross_entropy", "predict")])
def test_classifiers_refuse_overflowing_inputs_too(loss, method):
    X, y = overflow_data("X")
    net = fm.Network([3, 4, 2], loss=loss, seed=0)
    with pytest.raises(ValueError, match=r"^X: 1 values overflow float32"):
        call(net, method, X, y)


def test_overflow_is_counted_in_large_inputs_and_nan_keeps_its_message():
    X = np.zeros((30000, 3))  # over the size where the check sums instead of testing each value
    X[::1000, 0] = 1e39
    net = fm.Network([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"^X: 30 values overflow float32 .*such as 1e\+39"):
        net.predict(X)
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"^X: expected finite values, found 1 NaN or inf"):
        net.predict(X)
    X[:] = 3e38  # below float32's largest: accepted
    assert net.decision_function(X[:10]).shape == (10, 2)


def test_an_overflowing_binary_target_is_refused_by_name():
    X, _ = overflow_data("neither")
    net = fm.Network([3, 2], loss="binary_cross_entropy", seed=0)
    with pytest.raises(ValueError, match=r"^y: 2 values overflow float32"):
        net.fit(X, np.where(np.eye(6, 2) > 0, 1e300, 0.0))
