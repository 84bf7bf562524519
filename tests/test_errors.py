"""Bad input is refused at the Python boundary with ValueError or TypeError whose
message names the argument, before any C++ runs (the network is left unchanged)."""

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import NeuralNetwork

N_IN, N_OUT = 3, 2


def good_data(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, N_IN)), rng.normal(size=(n, N_OUT))


def network():
    return fm.Network([N_IN, 5, N_OUT], seed=0, dtype="float64")


def article_network():
    np.random.seed(0)
    return NeuralNetwork([N_IN, 5, N_OUT], learning_rate=0.01)


# Every entry point that takes X (and y), called with (X, y). Backward gets a
# prior forward on good data of the same length, so only the bad argument can fail.
def call_fit(X, y):
    network().fit(X, y, epochs=1)


def call_predict(X, y):
    network().predict(X)


def call_evaluate(X, y):
    network().evaluate(X, y)


def call_forward(X, y):
    network().forward(X)


def call_backward(X, y):
    net = network()
    n = len(X) if hasattr(X, "__len__") and len(X) else 8
    good_X, _ = good_data(n)
    y_pred = net.forward(good_X)
    net.backward(X, y, y_pred)


def call_article_train(X, y):
    article_network().train(X, y, epochs=1, verbose=False)


def call_article_forward(X, y):
    article_network().forward(X)


def call_article_backward(X, y):
    nn = article_network()
    n = len(X) if hasattr(X, "__len__") and len(X) else 8
    good_X, _ = good_data(n)
    y_pred = nn.forward(good_X)
    nn.backward(X, y, y_pred)


X_CALLS = [call_fit, call_predict, call_evaluate, call_forward, call_backward,
           call_article_train, call_article_forward, call_article_backward]
Y_CALLS = [call_fit, call_evaluate, call_backward, call_article_train, call_article_backward]


def ids(calls):
    return [c.__name__.removeprefix("call_") for c in calls]


# ---- X ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", X_CALLS, ids=ids(X_CALLS))
@pytest.mark.parametrize("X", [np.zeros(N_IN), np.zeros((2, 4, N_IN)), np.float64(1.0)], ids=["1d", "3d", "0d"])
def test_x_wrong_ndim(call, X):
    _, y = good_data(2)
    with pytest.raises(ValueError, match=r"^X: expected a 2-D array"):
        call(X, y)


def test_x_one_dimensional_hint():
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        fm.Network([1, 4, 1], seed=0).predict(np.zeros(5))


@pytest.mark.parametrize("call", X_CALLS, ids=ids(X_CALLS))
@pytest.mark.parametrize("features", [1, N_IN + 1])
def test_x_feature_count_not_matching_first_layer(call, features):
    X = np.zeros((4, features))
    _, y = good_data(4)
    with pytest.raises(ValueError, match=rf"^X: expected {N_IN} features.*got shape \(4, {features}\)"):
        call(X, y)


@pytest.mark.parametrize("call", X_CALLS, ids=ids(X_CALLS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_x_not_finite(call, bad):
    X, y = good_data(4)
    X[2, 1] = bad
    with pytest.raises(ValueError, match=r"^X: expected finite values"):
        call(X, y)


@pytest.mark.parametrize("call", X_CALLS, ids=ids(X_CALLS))
def test_x_empty(call):
    X = np.zeros((0, N_IN))
    y = np.zeros((0, N_OUT))
    with pytest.raises(ValueError, match=r"^X: expected at least one sample"):
        call(X, y)


@pytest.mark.parametrize("call", X_CALLS, ids=ids(X_CALLS))
@pytest.mark.parametrize(
    "X",
    [
        np.full((2, N_IN), "a"),
        np.array([[1, 2, 3], [4, 5, 6]], dtype=object),
        np.zeros((2, N_IN), dtype=np.complex128),
        np.zeros((2, N_IN), dtype="datetime64[s]"),
    ],
    ids=["str", "object", "complex", "datetime"],
)
def test_x_not_numeric(call, X):
    _, y = good_data(2)
    with pytest.raises(TypeError, match=r"^X: expected real numbers"):
        call(X, y)


@pytest.mark.parametrize("call", X_CALLS, ids=ids(X_CALLS))
def test_x_ragged(call):
    _, y = good_data(2)
    with pytest.raises(ValueError, match=r"^X"):
        call([[1.0, 2.0, 3.0], [1.0, 2.0]], y)


# ---- y ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", Y_CALLS, ids=ids(Y_CALLS))
@pytest.mark.parametrize("n_y", [3, 5])
def test_sample_counts_differ(call, n_y):
    X, _ = good_data(4)
    _, y = good_data(n_y)
    with pytest.raises(ValueError, match=rf"^y: expected 4 samples.*got {n_y}"):
        call(X, y)


@pytest.mark.parametrize("call", Y_CALLS, ids=ids(Y_CALLS))
def test_y_output_count_not_matching_last_layer(call):
    X, _ = good_data(4)
    with pytest.raises(ValueError, match=rf"^y: expected {N_OUT} outputs"):
        call(X, np.zeros((4, N_OUT + 1)))


@pytest.mark.parametrize("call", Y_CALLS, ids=ids(Y_CALLS))
@pytest.mark.parametrize("y", [np.zeros(4), np.zeros((4, N_OUT, 1))], ids=["1d-for-two-outputs", "3d"])
def test_y_wrong_ndim(call, y):
    X, _ = good_data(4)
    with pytest.raises(ValueError, match=r"^y: expected shape \(4, 2\)"):
        call(X, y)


@pytest.mark.parametrize("call", Y_CALLS, ids=ids(Y_CALLS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_y_not_finite(call, bad):
    X, y = good_data(4)
    y[1, 0] = bad
    with pytest.raises(ValueError, match=r"^y: expected finite values"):
        call(X, y)


@pytest.mark.parametrize("call", Y_CALLS, ids=ids(Y_CALLS))
def test_y_empty(call):
    X, _ = good_data(4)
    with pytest.raises(ValueError, match=r"^y: expected 4 samples"):
        call(X, np.zeros((0, N_OUT)))


@pytest.mark.parametrize("call", Y_CALLS, ids=ids(Y_CALLS))
@pytest.mark.parametrize(
    "y",
    [np.full((4, N_OUT), "1.0"), np.ones((4, N_OUT), dtype=object), np.ones((4, N_OUT), dtype=np.complex64)],
    ids=["str", "object", "complex"],
)
def test_y_not_numeric(call, y):
    X, _ = good_data(4)
    with pytest.raises(TypeError, match=r"^y: expected real numbers"):
        call(X, y)


@pytest.mark.parametrize("article", [False, True], ids=["Network", "NeuralNetwork"])
def test_y_pred_checked_in_backward(article):
    X, y = good_data(4)
    net = article_network() if article else network()
    net.forward(X)
    with pytest.raises(ValueError, match=r"^y_pred: expected 4 samples"):
        net.backward(X, y, np.zeros((3, N_OUT)))
    with pytest.raises(ValueError, match=r"^y_pred: expected finite values"):
        net.backward(X, y, np.full((4, N_OUT), np.nan))


# ---- nothing runs on bad input ------------------------------------------------------------------------


def test_bad_fit_leaves_the_network_unchanged():
    X, y = good_data(8)
    net = network()
    before = net.params.copy()
    y_bad = y.copy()
    y_bad[-1, -1] = np.nan
    for args, kwargs, error, match in [
        ((X, y_bad), {}, ValueError, r"^y: expected finite values"),
        ((X, y), {"epochs": 0}, ValueError, r"^epochs: expected an integer >= 1"),
        ((X, y), {"batch_size": 0}, ValueError, r"^batch_size: expected an integer >= 1"),
        ((X[:, :2], y), {}, ValueError, r"^X: expected \d+ features"),
        ((X, y), {"optimizer": "sgd"}, TypeError, r"^optimizer: expected an optimizer"),
    ]:
        with pytest.raises(error, match=match):
            net.fit(*args, **kwargs)
    np.testing.assert_array_equal(net.params, before)
    assert not np.any(net.grads)


# ---- backward without forward -------------------------------------------------------------------------------


def test_backward_without_forward():
    X, y = good_data(4)
    net = network()
    with pytest.raises(ValueError, match="forward"):
        net.backward(X, y, np.zeros((4, N_OUT)))


def test_backward_after_forward_on_another_batch_size():
    X, y = good_data(4)
    net = network()
    net.forward(X[:3])
    with pytest.raises(ValueError, match="forward"):
        net.backward(X, y, np.zeros((4, N_OUT)))


def test_backward_after_fit_needs_a_forward():
    X, y = good_data(4)
    net = network()
    net.fit(X, y, epochs=1)
    with pytest.raises(ValueError, match="forward"):
        net.backward(X, y, np.zeros((4, N_OUT)))


def test_article_backward_without_forward():
    X, y = good_data(4)
    nn = article_network()
    with pytest.raises(ValueError, match="forward"):
        nn.backward(X, y, np.zeros((4, N_OUT)))


# ---- layer sizes -----------------------------------------------------------------------------------------


def make_network(layer_sizes):
    fm.Network(layer_sizes, seed=0)


def make_article(layer_sizes):
    NeuralNetwork(layer_sizes)


CONSTRUCTORS = [make_network, make_article]


@pytest.mark.parametrize("make", CONSTRUCTORS, ids=["Network", "NeuralNetwork"])
@pytest.mark.parametrize("sizes", [[3, 0, 1], [0, 4, 1], [3, 4, -1], [3, -2, 1]])
def test_layer_sizes_below_one(make, sizes):
    with pytest.raises(ValueError, match=r"^layer_sizes\[\d\]: expected an integer >= 1"):
        make(sizes)


@pytest.mark.parametrize("make", CONSTRUCTORS, ids=["Network", "NeuralNetwork"])
@pytest.mark.parametrize("sizes", [[3, 1.5, 1], [3.0, 4, 1], [3, "4", 1], [3, None, 1], [3, True, 1]])
def test_layer_sizes_not_integers(make, sizes):
    with pytest.raises(TypeError, match=r"^layer_sizes\[\d\]: expected an integer"):
        make(sizes)


@pytest.mark.parametrize("make", CONSTRUCTORS, ids=["Network", "NeuralNetwork"])
@pytest.mark.parametrize("sizes", [[], [3], (5,)])
def test_fewer_than_two_layer_sizes(make, sizes):
    with pytest.raises(ValueError, match=r"^layer_sizes: expected at least two sizes"):
        make(sizes)


@pytest.mark.parametrize("make", CONSTRUCTORS, ids=["Network", "NeuralNetwork"])
@pytest.mark.parametrize("sizes", [3, "314", None, 2.5])
def test_layer_sizes_not_a_sequence(make, sizes):
    with pytest.raises(TypeError, match=r"^layer_sizes: expected a sequence"):
        make(sizes)


def test_layer_sizes_accepts_numpy_integers_and_arrays():
    net = fm.Network(np.array([3, 4, 2]), seed=0)
    assert net.layer_sizes == (3, 4, 2)
    net = fm.Network([np.int32(3), np.int64(2)], seed=0)
    assert net.layer_sizes == (3, 2)


# ---- activation, loss, dtype, seed ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["softmax", "ReLU", ""])
def test_unknown_activation(activation):
    with pytest.raises(ValueError, match=r"^activation: expected one of .*relu.*got"):
        fm.Network([3, 4, 1], activation=activation, seed=0)
    with pytest.raises(ValueError, match=r"^activation: expected one of"):
        NeuralNetwork([3, 4, 1], activation=activation)


def test_unknown_activation_per_layer():
    with pytest.raises(ValueError, match=r"^activation\[1\]: expected one of"):
        fm.Network([3, 4, 4, 1], activation=["relu", "nope"], seed=0)
    with pytest.raises(ValueError, match=r"^activation: expected one name or 2 names"):
        fm.Network([3, 4, 4, 1], activation=["relu"], seed=0)
    with pytest.raises(TypeError, match=r"^activation"):
        fm.Network([3, 4, 1], activation=None, seed=0)
    with pytest.raises(TypeError, match=r"^activation\[0\]"):
        fm.Network([3, 4, 1], activation=[1], seed=0)


def test_unknown_output_activation():
    with pytest.raises(ValueError, match=r"^output_activation: expected one of"):
        fm.Network([3, 4, 1], output_activation="softmax", seed=0)


@pytest.mark.parametrize("loss", ["mae", "cross_entropy_typo", "MSE"])
def test_unknown_loss(loss):
    with pytest.raises(ValueError, match=r"^loss: expected one of .*mse"):
        fm.Network([3, 4, 1], loss=loss, seed=0)
    with pytest.raises(TypeError, match=r"^loss"):
        fm.Network([3, 4, 1], loss=None, seed=0)


@pytest.mark.parametrize("dtype", ["float16", "int32", np.int64, "complex128", object, np.float16])
def test_bad_dtype_value(dtype):
    with pytest.raises(ValueError, match=r"^dtype: expected 'float32' or 'float64'"):
        fm.Network([3, 4, 1], dtype=dtype, seed=0)


@pytest.mark.parametrize("dtype", ["banana", 3.5])
def test_bad_dtype_type(dtype):
    with pytest.raises(TypeError, match=r"^dtype: expected 'float32' or 'float64'"):
        fm.Network([3, 4, 1], dtype=dtype, seed=0)


def test_bad_astype():
    with pytest.raises(ValueError, match=r"^dtype"):
        fm.Network([3, 4, 1], seed=0).astype("int8")


def test_bad_seed():
    with pytest.raises(ValueError, match=r"^seed: expected an integer >= 0"):
        fm.Network([3, 4, 1], seed=-1)
    with pytest.raises(ValueError, match=r"^seed: expected an integer >= 0 and <= 18446744073709551615, "
                                         r"got 18446744073709551616"):
        fm.Network([3, 4, 1], seed=2**64)
    with pytest.raises(TypeError, match=r"^seed: expected an integer"):
        fm.Network([3, 4, 1], seed=1.5)
    with pytest.raises(TypeError, match=r"^seed"):
        fm.Network([3, 4, 1], seed="0")


# ---- learning rate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, -np.inf, np.nan, np.inf, float("nan")])
def test_sgd_learning_rate_out_of_range(lr):
    with pytest.raises(ValueError, match=r"^lr: expected a positive finite number"):
        fm.SGD(lr=lr)


@pytest.mark.parametrize("lr", ["0.1", None, [0.1], True])
def test_sgd_learning_rate_not_a_number(lr):
    with pytest.raises(TypeError, match=r"^lr: expected a positive number"):
        fm.SGD(lr=lr)


@pytest.mark.parametrize("lr", [0, -0.01, np.nan, np.inf])
def test_article_learning_rate_out_of_range(lr):
    with pytest.raises(ValueError, match=r"^learning_rate: expected a positive finite number"):
        NeuralNetwork([3, 4, 1], learning_rate=lr)


@pytest.mark.parametrize("lr", ["0.1", None])
def test_article_learning_rate_not_a_number(lr):
    with pytest.raises(TypeError, match=r"^learning_rate"):
        NeuralNetwork([3, 4, 1], learning_rate=lr)


def test_learning_rates_accept_numpy_scalars():
    assert fm.SGD(lr=np.float32(0.5)).lr == 0.5
    assert NeuralNetwork([3, 4, 1], learning_rate=np.float64(0.25)).learning_rate == 0.25


# ---- fit's other arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [0, -3])
def test_epochs_below_one(epochs):
    X, y = good_data()
    with pytest.raises(ValueError, match=r"^epochs: expected an integer >= 1"):
        network().fit(X, y, epochs=epochs)
    with pytest.raises(ValueError, match=r"^epochs: expected an integer >= 1"):
        article_network().train(X, y, epochs=epochs, verbose=False)


@pytest.mark.parametrize("epochs", [1.5, 2.0, "3", None])
def test_epochs_not_integer(epochs):
    X, y = good_data()
    with pytest.raises(TypeError, match=r"^epochs: expected an integer"):
        network().fit(X, y, epochs=epochs)
    with pytest.raises(TypeError, match=r"^epochs: expected an integer"):
        article_network().train(X, y, epochs=epochs, verbose=False)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one(batch_size):
    X, y = good_data()
    with pytest.raises(ValueError, match=r"^batch_size: expected an integer >= 1"):
        network().fit(X, y, batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [2.5, "8"])
def test_batch_size_not_integer(batch_size):
    X, y = good_data()
    with pytest.raises(TypeError, match=r"^batch_size: expected an integer"):
        network().fit(X, y, batch_size=batch_size)


def test_batch_size_larger_than_the_data_is_full_batch():
    X, y = good_data(8)
    a, b = network(), network()
    ha = a.fit(X, y, epochs=3, batch_size=100)
    hb = b.fit(X, y, epochs=3)
    assert ha.history == hb.history


def test_bad_optimizer():
    X, y = good_data()
    with pytest.raises(TypeError, match=r"^optimizer"):
        network().fit(X, y, optimizer=0.01)
    with pytest.raises(TypeError, match=r"^optimizer"):
        network().step("sgd")


def test_bad_shuffle_and_verbose():
    X, y = good_data()
    with pytest.raises(TypeError, match=r"^shuffle"):
        network().fit(X, y, shuffle="yes")
    with pytest.raises(ValueError, match=r"^verbose"):
        network().fit(X, y, verbose=-1)
    with pytest.raises(TypeError, match=r"^verbose"):
        network().fit(X, y, verbose="loud")
