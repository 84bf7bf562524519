"""Backpropagation's gradients: finite differences, the NumPy reference network, and
the article's 2-2-1 worked example by hand.

- fastmlp.gradient_check (float64, fourth-order central differences) for every
  activation, as hidden and as output activation;
- Network.forward / backward / fit held to fastmlp.reference.Network on the same weights;
- the article's scalar formulas for a 2-2-1 sigmoid network, against Network (MSE
  without the ½: twice the article's gradient) and NeuralNetwork (the article's class).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import reference

DTYPES = ("float32", "float64")
RTOL = {"float32": 1e-5, "float64": 1e-12}
GRADIENT_TOLERANCE = 1e-6


def assert_close(actual, expected, *, rtol, atol=0.0, what="result"):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=atol,
        err_msg=f"{what}: max |diff| = {max_diff:.3e} (rtol {rtol:g}, atol {atol:.3e})",
    )


def scale_of(x) -> float:
    """max |x|, at least 1e-30: the yardstick of an absolute tolerance."""
    x = np.asarray(x, dtype=np.float64)
    return max(float(np.abs(x).max()) if x.size else 0.0, 1e-30)


def randomize_biases(net, rng, low=0.05, high=0.3):
    """Small non-zero biases of random sign, so no pre-activation sits exactly on a kink."""
    for bias in net.biases:
        bias[...] = rng.uniform(low, high, bias.shape) * rng.choice([-1.0, 1.0], bias.shape)


# ---- finite differences ------------------------------------------------------------------------


def small_problem(activation, output_activation, dtype="float64", seed=0):
    """A [3, 5, 4, 2] network and 7 samples. With seed 0 no ReLU unit is dead on these
    samples (see test_gradient_check_of_an_exactly_zero_gradient for why that matters)."""
    net = fm.Network([3, 5, 4, 2], activation=activation, output_activation=output_activation,
                     dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    randomize_biases(net, rng)
    X = rng.standard_normal((7, 3))
    y = rng.standard_normal((7, 2))
    return net, X, y


def describe(result) -> str:
    return (f"max_rel_error {result.max_rel_error:.3e} at {result.worst_parameter}: "
            f"analytic {result.analytic:.12g}, numeric {result.numeric:.12g}")


@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_gradient_check_hidden_activation(activation):
    net, X, y = small_problem(activation, "linear")
    result = fm.gradient_check(net, X, y)
    assert result.n_checked == net.n_params
    assert result.max_rel_error <= GRADIENT_TOLERANCE, describe(result)


@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_gradient_check_output_activation(activation):
    net, X, y = small_problem("tanh", activation)
    result = fm.gradient_check(net, X, y)
    assert result.n_checked == net.n_params
    assert result.max_rel_error <= GRADIENT_TOLERANCE, describe(result)


def test_gradient_check_of_an_exactly_zero_gradient():
    # Input 1 is always 0, so ∂L/∂W[0, 1] is exactly 0, and moving W[0, 1] leaves every
    # loss evaluation bit-identical: the numeric derivative must be 0 too. (The same
    # happens for every weight of a dead ReLU unit.)
    net = fm.Network([2, 1], dtype="float64", seed=0)
    X = np.array([[1.0, 0.0], [2.0, 0.0], [-1.5, 0.0]])
    y = np.array([[0.3], [-0.2], [0.9]])
    result = fm.gradient_check(net, X, y)
    assert result.max_rel_error <= GRADIENT_TOLERANCE, describe(result)


def test_gradient_check_of_a_float32_network_runs_in_float64():
    net, X, y = small_problem("swish", "sigmoid", dtype="float32")
    params, grads = net.params.copy(), net.grads.copy()
    result = fm.gradient_check(net, X, y)
    assert result.max_rel_error <= GRADIENT_TOLERANCE, describe(result)
    assert net.dtype == np.float32 and net.params.dtype == np.float32
    assert np.array_equal(net.params, params), "gradient_check changed the network's params"
    assert np.array_equal(net.grads, grads), "gradient_check changed the network's grads"


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_check_leaves_the_network_alone(dtype):
    net, X, y = small_problem("gelu", "linear", dtype=dtype)
    params, grads = net.params.copy(), net.grads.copy()
    fm.gradient_check(net, X, y)
    assert np.array_equal(net.params, params), "gradient_check changed the network's params"
    assert np.array_equal(net.grads, grads), "gradient_check changed the network's grads"
    assert net.dtype == np.dtype(dtype)


@pytest.mark.parametrize("max_params", [None, 300])
def test_gradient_check_samples_max_params_of_a_big_network(max_params):
    net = fm.Network([20, 64, 32, 5], activation="tanh", dtype="float64", seed=2)
    assert net.n_params == 20 * 64 + 64 + 64 * 32 + 32 + 32 * 5 + 5
    rng = np.random.default_rng(3)
    randomize_biases(net, rng)
    X, y = rng.standard_normal((5, 20)), rng.standard_normal((5, 5))
    params = net.params.copy()
    result = (fm.gradient_check(net, X, y) if max_params is None
              else fm.gradient_check(net, X, y, max_params=max_params))
    expected = 2000 if max_params is None else max_params  # 2000: the documented default
    assert result.n_checked == expected < net.n_params
    assert 0 <= result.worst_index < net.n_params
    assert result.max_rel_error <= GRADIENT_TOLERANCE, describe(result)
    assert np.array_equal(net.params, params), "gradient_check changed the network's params"


# ---- Network vs reference.Network ----------------------------------------------------------------


def reference_tolerance(dtype, expected):
    rtol = RTOL[dtype]
    return {"rtol": rtol, "atol": rtol * scale_of(expected)}


@pytest.mark.parametrize("batch", [1, 3, 33])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["linear", "same"])
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_forward_and_backward_match_reference(activation, output, dtype, batch):
    output_activation = activation if output == "same" else "linear"
    net = fm.Network([4, 6, 5, 3], activation=activation, output_activation=output_activation,
                     dtype=dtype, seed=11)
    rng = np.random.default_rng(batch)
    randomize_biases(net, rng)
    twin = reference.Network.from_network(net)
    assert twin.activations == net.activations
    X = rng.standard_normal((batch, 4))
    y = rng.standard_normal((batch, 3))

    prediction = net.forward(X)
    expected_prediction = twin.forward(X)
    assert prediction.dtype == np.dtype(dtype)
    assert_close(prediction, expected_prediction, **reference_tolerance(dtype, expected_prediction),
                 what="forward")

    net.grads[...] = np.nan  # backward must replace what was there
    grads_w, grads_b = net.backward(X, y, prediction)
    expected_w, expected_b = twin.backward(X, y, expected_prediction)
    tolerance = reference_tolerance(dtype, twin.grads)
    assert len(grads_w) == len(grads_b) == len(expected_w) == 3
    for layer in range(3):
        assert_close(grads_w[layer], expected_w[layer], **tolerance, what=f"grads_w[{layer}]")
        assert_close(grads_b[layer], expected_b[layer], **tolerance, what=f"grads_b[{layer}]")
    assert_close(net.grads, twin.grads, **tolerance, what="net.grads")


# ---- the article's 2-2-1 worked example ----------------------------------------------------------

# Network layout: W[i, j] is the weight from input j to hidden neuron i (the article's w_{j,i}).
W_HIDDEN = [[0.5, -0.3], [0.8, 0.2]]
B_HIDDEN = [0.1, -0.25]
V_OUTPUT = [0.7, -1.1]
B_OUTPUT = 0.05
X_SAMPLE = (0.6, -1.3)
Y_TRUE = 0.45
LEARNING_RATE = 0.1


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def article_by_hand():
    """The article's scalar formulas, for L = ½ (y_true − y_pred)²."""
    x = X_SAMPLE
    z_h = [W_HIDDEN[i][0] * x[0] + W_HIDDEN[i][1] * x[1] + B_HIDDEN[i] for i in range(2)]
    a_h = [sigmoid(z) for z in z_h]
    y_pred = V_OUTPUT[0] * a_h[0] + V_OUTPUT[1] * a_h[1] + B_OUTPUT
    delta_o = -(Y_TRUE - y_pred)
    d_v = [delta_o * a_h[i] for i in range(2)]
    d_b_o = delta_o
    delta_h = [delta_o * V_OUTPUT[i] * sigmoid(z_h[i]) * (1 - sigmoid(z_h[i])) for i in range(2)]
    d_w = [[delta_h[i] * x[j] for j in range(2)] for i in range(2)]
    d_b_h = delta_h
    return {
        "y_pred": y_pred,
        "d_w": np.array(d_w),  # (2, 2), Network layout
        "d_b_h": np.array(d_b_h),  # (2,)
        "d_v": np.array([d_v]),  # (1, 2)
        "d_b_o": np.array([d_b_o]),  # (1,)
    }


EXACT = {"rtol": 1e-14, "atol": 1e-16}  # equal up to rounding in the last bits


def test_article_example_network_gradient_is_twice_the_hand_gradient():
    hand = article_by_hand()
    net = fm.Network([2, 2, 1], activation="sigmoid", dtype="float64", seed=0)
    assert net.activations == ("sigmoid", "linear")
    net.weights[0] = W_HIDDEN
    net.biases[0] = B_HIDDEN
    net.weights[1] = [V_OUTPUT]
    net.biases[1] = [B_OUTPUT]
    X, y = np.array([X_SAMPLE]), np.array([[Y_TRUE]])

    y_pred = net.forward(X)
    assert_close(y_pred, [[hand["y_pred"]]], **EXACT, what="y_pred")
    assert_close(net.evaluate(X, y)["loss"], (hand["y_pred"] - Y_TRUE) ** 2, **EXACT, what="loss")
    # Network's loss is (y_pred − y)² (no ½): its gradient is twice the article's.
    grads_w, grads_b = net.backward(X, y, y_pred)
    assert_close(grads_w[0], 2 * hand["d_w"], **EXACT, what="∂L/∂w")
    assert_close(grads_b[0], 2 * hand["d_b_h"], **EXACT, what="∂L/∂b_h")
    assert_close(grads_w[1], 2 * hand["d_v"], **EXACT, what="∂L/∂v")
    assert_close(grads_b[1], 2 * hand["d_b_o"], **EXACT, what="∂L/∂b_o")

    net.step(fm.SGD(lr=LEARNING_RATE))
    assert_close(net.weights[0], np.array(W_HIDDEN) - LEARNING_RATE * 2 * hand["d_w"], **EXACT, what="new w")
    assert_close(net.biases[0], np.array(B_HIDDEN) - LEARNING_RATE * 2 * hand["d_b_h"], **EXACT, what="new b_h")
    assert_close(net.weights[1], np.array([V_OUTPUT]) - LEARNING_RATE * 2 * hand["d_v"], **EXACT, what="new v")
    assert_close(net.biases[1], B_OUTPUT - LEARNING_RATE * 2 * hand["d_b_o"], **EXACT, what="new b_o")


@pytest.fixture
def numpy_global_random_state():
    """NeuralNetwork draws its initial weights from np.random, as the article does."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def test_article_example_neural_network_gives_the_hand_gradient(numpy_global_random_state):
    hand = article_by_hand()
    nn = fm.NeuralNetwork(layer_sizes=[2, 2, 1], learning_rate=LEARNING_RATE, activation="sigmoid")
    assert [b.shape for b in nn.biases] == [(2, 1), (1, 1)]
    nn.weights[0][...] = W_HIDDEN
    nn.biases[0][...] = np.array(B_HIDDEN).reshape(2, 1)
    nn.weights[1][...] = [V_OUTPUT]
    nn.biases[1][...] = [[B_OUTPUT]]
    X, y = np.array([X_SAMPLE]), np.array([[Y_TRUE]])

    y_pred = nn.forward(X)
    assert_close(y_pred, [[hand["y_pred"]]], **EXACT, what="y_pred")
    gradients_w, gradients_b = nn.backward(X, y, y_pred)
    assert_close(gradients_w[0], hand["d_w"], **EXACT, what="∂L/∂w")
    assert_close(gradients_b[0], hand["d_b_h"].reshape(2, 1), **EXACT, what="∂L/∂b_h")
    assert_close(gradients_w[1], hand["d_v"], **EXACT, what="∂L/∂v")
    assert_close(gradients_b[1], hand["d_b_o"].reshape(1, 1), **EXACT, what="∂L/∂b_o")

    nn.update_parameters(gradients_w, gradients_b)
    new_w = np.array(W_HIDDEN) - LEARNING_RATE * hand["d_w"]
    new_b_h = (np.array(B_HIDDEN) - LEARNING_RATE * hand["d_b_h"]).reshape(2, 1)
    new_v = np.array([V_OUTPUT]) - LEARNING_RATE * hand["d_v"]
    new_b_o = (B_OUTPUT - LEARNING_RATE * hand["d_b_o"]).reshape(1, 1)
    assert_close(nn.weights[0], new_w, **EXACT, what="new w")
    assert_close(nn.biases[0], new_b_h, **EXACT, what="new b_h")
    assert_close(nn.weights[1], new_v, **EXACT, what="new v")
    assert_close(nn.biases[1], new_b_o, **EXACT, what="new b_o")
    # ... and the engine underneath sees the update
    assert_close(nn.network.biases[0], new_b_h.ravel(), **EXACT, what="engine's b_h after the update")
    assert_close(nn.network.weights[1], new_v, **EXACT, what="engine's v after the update")


# ---- the fit loop vs reference.Network.fit ----------------------------------------------------

FIT_RTOL = {"float64": 1e-12, "float32": 2e-5}


@pytest.mark.parametrize("batch_size", [None, 29, 8, 1], ids=["full", "29=n", "8-ragged", "1"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_fit_matches_reference_fit(activation, dtype, batch_size):
    net = fm.Network([3, 8, 6, 2], activation=activation, dtype=dtype, seed=4)
    rng = np.random.default_rng(9)
    randomize_biases(net, rng)
    X = rng.standard_normal((29, 3))  # 29 = 3 · 8 + 5: the last mini-batch of 8 is ragged
    y = np.stack([np.sin(X[:, 0]) + X[:, 1] * X[:, 2], np.cos(X[:, 1])], axis=1)
    epochs, lr = 15 if batch_size != 1 else 3, 0.05
    twin = reference.Network.from_network(net)

    history = net.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=fm.SGD(lr), shuffle=False)
    expected_losses = twin.fit(X, y, epochs=epochs, batch_size=batch_size, lr=lr)

    rtol = FIT_RTOL[dtype]
    losses = history.history["loss"]
    assert len(losses) == epochs
    assert expected_losses[-1] < expected_losses[0], "the reference run should learn something"
    assert_close(losses, expected_losses, rtol=rtol, what="epoch losses")
    assert_close(net.params, twin.params, rtol=rtol, atol=rtol * scale_of(twin.params), what="params after fit")
