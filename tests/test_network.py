"""fm.Network: parameter views, training, inference, seeds, dtypes, copies and failure modes."""

import contextlib
import io
import pickle

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import reference


def regression_data(n=64, inputs=3, outputs=1, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, inputs))
    columns = [np.sin(2 * X @ rng.normal(size=inputs)) + 0.5 * X[:, k % inputs] for k in range(outputs)]
    y = np.stack(columns, axis=1)
    return X.astype(dtype), y.astype(dtype)


def mse(a, b):
    return float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))


# ---- parameter views ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parameters_are_views_of_one_buffer(dtype):
    net = fm.Network([3, 5, 4, 2], seed=0, dtype=dtype)
    sizes = [(5, 3), (4, 5), (2, 4)]
    assert net.params.dtype == np.dtype(dtype)
    assert net.params.shape == (net.n_params,)
    assert net.n_params == sum(o * i + o for o, i in sizes)
    assert net.grads.shape == net.params.shape
    assert len(net.weights) == len(net.biases) == 3
    for w, b, shape in zip(net.weights, net.biases, sizes):
        assert w.shape == shape and b.shape == (shape[0],)
        assert np.shares_memory(w, net.params)
        assert np.shares_memory(b, net.params)
    # The property hands out the same buffer every time, not a copy: one taken
    # before a fit still is the network's parameters after it.
    params = net.params
    net.fit(np.zeros((4, sizes[0][1])), np.zeros((4, sizes[-1][0])), epochs=1)
    assert params.__array_interface__["data"][0] == net.params.__array_interface__["data"][0]
    net.weights[0][0, 0] = 5.0
    assert params[0] == 5.0
    assert not np.shares_memory(net.params, net.grads)
    # Layout: W_0, b_0, W_1, b_1, ...
    offset = 0
    for w, b in zip(net.weights, net.biases):
        np.testing.assert_array_equal(net.params[offset : offset + w.size], w.ravel())
        offset += w.size
        np.testing.assert_array_equal(net.params[offset : offset + b.size], b)
        offset += b.size
    assert offset == net.n_params


def test_writing_a_weight_changes_params_and_predictions():
    X, _ = regression_data(n=10, inputs=3, outputs=2)
    net = fm.Network([3, 4, 2], seed=1, dtype="float64")
    before = net.predict(X)
    assert net.params[0] == net.weights[0][0, 0]
    net.weights[0][0, 0] = 123.0
    assert net.params[0] == 123.0
    assert not np.allclose(net.predict(X), before)

    net.params[...] = 0.0
    assert np.all(net.weights[1] == 0) and np.all(net.biases[0] == 0)
    np.testing.assert_array_equal(net.predict(X), np.zeros((10, 2)))
    net.biases[-1][...] = [1.5, -2.0]
    np.testing.assert_array_equal(net.predict(X), np.tile([1.5, -2.0], (10, 1)))


def test_assigning_a_layer_writes_into_the_buffer():
    X, _ = regression_data(n=6, inputs=2)
    net = fm.Network([2, 3, 1], seed=0, dtype="float64")
    w = np.arange(6.0).reshape(3, 2)
    net.weights[0] = w
    np.testing.assert_array_equal(net.params[:6], w.ravel())
    assert np.shares_memory(net.weights[0], net.params)
    net.weights[1] = np.ones((1, 3))
    net.biases[1] = np.array([0.25])
    expected = np.maximum(0, X @ w.T).sum(axis=1, keepdims=True) + 0.25
    np.testing.assert_allclose(net.predict(X), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        net.weights[0] = np.zeros((2, 3))


def test_backward_fills_grads_views():
    X, y = regression_data(n=16, inputs=3, outputs=2)
    net = fm.Network([3, 6, 2], activation="tanh", seed=2, dtype="float64")
    y_pred = net.forward(X)
    grads_w, grads_b = net.backward(X, y, y_pred)
    assert len(grads_w) == len(grads_b) == 2
    for g, w in zip(grads_w, net.weights):
        assert g.shape == w.shape and np.shares_memory(g, net.grads)
    for g, b in zip(grads_b, net.biases):
        assert g.shape == b.shape and np.shares_memory(g, net.grads)
    assert np.any(net.grads != 0)
    # The same gradients as the NumPy twin.
    twin = reference.Network.from_network(net)
    ref_w, ref_b = twin.backward(X, y, twin.forward(X))
    np.testing.assert_allclose(net.grads, twin.grads, rtol=1e-10, atol=1e-14)
    # backward replaces (not accumulates) what the previous call left.
    net.backward(X, y, net.forward(X))
    np.testing.assert_allclose(net.grads, twin.grads, rtol=1e-10, atol=1e-14)
    # step applies them.
    before = net.params.copy()
    net.step(fm.SGD(lr=0.1))
    np.testing.assert_allclose(net.params, before - 0.1 * twin.grads, rtol=1e-12, atol=1e-15)


# ---- public hooks: decision_function, backward_output, layer_cache -------------------------------


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_decision_function_is_the_raw_output_and_leaves_the_cache(loss):
    X, _ = regression_data(n=8, inputs=3)
    net = fm.Network([3, 5, 2], activation="tanh", loss=loss, seed=1, dtype="float64")
    twin = reference.Network.from_network(net)
    out = net.forward(X[:3])
    z_before, a_before = net.layer_cache(0)
    raw = net.decision_function(X)
    assert raw.shape == (8, 2) and raw.dtype == np.float64
    np.testing.assert_allclose(raw, twin.forward(X), rtol=1e-12, atol=1e-14)  # logits, not classes
    z_after, a_after = net.layer_cache(0)  # still the 3-sample forward's cache
    np.testing.assert_array_equal(z_after, z_before)
    np.testing.assert_array_equal(a_after, a_before)
    np.testing.assert_array_equal(net.layer_cache(1)[1], out)


def test_backward_output_from_the_loss_gradient_is_backward():
    X, y = regression_data(n=10, inputs=3, outputs=2)
    net = fm.Network([3, 6, 2], activation="sigmoid", seed=3, dtype="float64")
    y_pred = net.forward(X)
    expected = [g.copy() for g in net.backward(X, y, y_pred)[0]]
    d_output = 2 * (y_pred - y) / y.size  # dL/dŷ of the mean squared error
    net.zero_grad()
    grads_w, grads_b = net.backward_output(X, d_output)
    for g, e in zip(grads_w, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15)
    assert all(np.shares_memory(g, net.grads) for g in grads_w + grads_b)
    # A different dL/dŷ gives the twin's gradient for that dL/dŷ (linear in it).
    net.backward_output(X, 3 * d_output)
    for g, e in zip(grads_w, expected):
        np.testing.assert_allclose(g, 3 * e, rtol=1e-12, atol=1e-15)


def test_layer_cache_holds_each_layers_z_and_a():
    X, _ = regression_data(n=5, inputs=3)
    net = fm.Network([3, 4, 6, 2], activation="relu", seed=0, dtype="float64")
    out = net.forward(X)
    A = X
    for layer, (w, b) in enumerate(zip(net.weights, net.biases)):
        z, a = net.layer_cache(layer)
        assert z.shape == a.shape == (5, net.layer_sizes[layer + 1])
        np.testing.assert_allclose(z, A @ w.T + b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a, np.maximum(z, 0) if layer < 2 else z, rtol=1e-12, atol=1e-14)
        A = a
    np.testing.assert_array_equal(A, out)
    z, a = net.layer_cache(0)
    z[...] = 99.0  # a copy: the cache is not changed
    assert not np.any(net.layer_cache(0)[0] == 99.0)


def test_hooks_refuse_bad_arguments_by_name():
    X, y = regression_data(n=6, inputs=3, outputs=2)
    net = fm.Network([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"^layer_cache: no forward pass"):
        net.layer_cache(0)
    with pytest.raises(ValueError, match=r"^backward_output: call forward\(X\) on this batch first \(the cache holds no"):
        net.backward_output(X, y)
    net.forward(X)
    with pytest.raises(ValueError, match=r"^backward_output: call forward\(X\) on this batch first \(the cache holds 6 "
                                         r"samples, X has 4\)"):
        net.backward_output(X[:4], y[:4])
    with pytest.raises(ValueError, match=r"^d_output: expected 6 samples"):
        net.backward_output(X, y[:5])
    with pytest.raises(ValueError, match=r"^d_output: expected 2 outputs"):
        net.backward_output(X, y[:, :1])
    with pytest.raises(ValueError, match=r"^d_output: expected finite values"):
        net.backward_output(X, np.full_like(y, np.nan))
    for layer in (-1, 2, 2**70):
        with pytest.raises(ValueError, match=r"^layer: expected an integer >= 0 and <= 1, got"):
            net.layer_cache(layer)
    with pytest.raises(TypeError, match=r"^layer: expected an integer"):
        net.layer_cache(1.0)
    with pytest.raises(ValueError, match=r"^X: expected 3 features"):
        net.decision_function(X[:, :2])


# ---- fit, predict, evaluate -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_reduces_the_loss(dtype):
    X, y = regression_data(n=128, inputs=3, outputs=1, dtype=dtype)
    net = fm.Network([3, 32, 32, 1], activation="tanh", seed=0, dtype=dtype)
    start = net.evaluate(X, y)["loss"]
    history = net.fit(X, y, epochs=200, batch_size=16, optimizer=fm.SGD(lr=0.05))
    losses = history.history["loss"]
    assert len(losses) == 200 and history.epoch == list(range(200))
    assert all(np.isfinite(losses))
    end = net.evaluate(X, y)["loss"]
    assert end < start / 5, (start, end)
    assert losses[-1] < losses[0] / 5


def test_fit_full_batch_matches_the_numpy_twin():
    X, y = regression_data(n=40, inputs=3, outputs=2)
    net = fm.Network([3, 8, 6, 2], activation="sigmoid", seed=3, dtype="float64")
    twin = reference.Network.from_network(net)
    history = net.fit(X, y, epochs=30, optimizer=fm.SGD(lr=0.1))
    expected = twin.fit(X, y, epochs=30, lr=0.1)
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-10)
    np.testing.assert_allclose(net.params, twin.params, rtol=1e-9, atol=1e-12)


def test_fit_without_shuffle_matches_the_numpy_twin_by_batches():
    X, y = regression_data(n=50, inputs=3, outputs=1)
    net = fm.Network([3, 8, 1], seed=4, dtype="float64")
    twin = reference.Network.from_network(net)
    history = net.fit(X, y, epochs=5, batch_size=16, shuffle=False, optimizer=fm.SGD(lr=0.05))
    expected = twin.fit(X, y, epochs=5, batch_size=16, lr=0.05)
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-10)
    np.testing.assert_allclose(net.params, twin.params, rtol=1e-9, atol=1e-12)


def test_first_epoch_loss_is_the_loss_before_training():
    X, y = regression_data(n=30)
    net = fm.Network([3, 8, 1], seed=0, dtype="float64")
    start = net.evaluate(X, y)["loss"]
    history = net.fit(X, y, epochs=3, optimizer=fm.SGD(lr=0.01))
    assert history.history["loss"][0] == pytest.approx(start, rel=1e-12)


@pytest.mark.parametrize("n", [1, 7, 300, 1000])
def test_predict_shapes(n):
    X, _ = regression_data(n=n, inputs=4)
    for outputs in (1, 3):
        net = fm.Network([4, 9, outputs], seed=0)
        out = net.predict(X)
        assert out.shape == (n, outputs)
        assert out.dtype == np.float32
        # predict (chunked inference) and forward (training path) agree.
        np.testing.assert_allclose(out, net.forward(X), rtol=1e-5, atol=1e-6)


def test_predict_rows_are_independent():
    X, _ = regression_data(n=600, inputs=4)
    net = fm.Network([4, 16, 2], seed=0, dtype="float64")
    full = net.predict(X)
    for rows in (slice(0, 1), slice(100, 357), slice(599, 600)):
        np.testing.assert_allclose(net.predict(X[rows]), full[rows], rtol=1e-12, atol=1e-14)


def test_one_dimensional_targets_for_one_output():
    X, y = regression_data(n=40, inputs=3, outputs=1)
    a = fm.Network([3, 8, 1], seed=0, dtype="float64")
    b = a.copy()
    ha = a.fit(X, y[:, 0], epochs=5, optimizer=fm.SGD(lr=0.05))
    hb = b.fit(X, y, epochs=5, optimizer=fm.SGD(lr=0.05))
    assert ha.history == hb.history
    np.testing.assert_array_equal(a.params, b.params)
    assert a.evaluate(X, y[:, 0]) == a.evaluate(X, y)
    assert a.predict(X).shape == (40, 1)


def test_inputs_are_converted_to_the_network_dtype():
    X, y = regression_data(n=20, inputs=3)
    net = fm.Network([3, 4, 1], seed=0, dtype="float64")
    as_list = net.predict(X.tolist())
    np.testing.assert_array_equal(as_list, net.predict(X))
    np.testing.assert_allclose(net.predict(X.astype(np.float32)), net.predict(X.astype(np.float32).astype(np.float64)))
    np.testing.assert_array_equal(net.predict(np.asfortranarray(X)), net.predict(X))
    np.testing.assert_array_equal(net.predict(X[::-1])[::-1], net.predict(X))
    ints = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(net.predict(ints), net.predict(ints.astype(np.float64)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evaluate_is_the_mse_of_predict(dtype):
    X, y = regression_data(n=50, inputs=3, outputs=2, dtype=dtype)
    net = fm.Network([3, 7, 2], seed=5, dtype=dtype)
    result = net.evaluate(X, y)
    assert set(result) == {"loss"}
    assert isinstance(result["loss"], float)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert result["loss"] == pytest.approx(mse(net.predict(X), y), rel=rtol)


# ---- seeds ----------------------------------------------------------------------------------------


def test_same_seed_same_weights_different_seed_different():
    a = fm.Network([4, 16, 8, 2], seed=123)
    b = fm.Network([4, 16, 8, 2], seed=123)
    c = fm.Network([4, 16, 8, 2], seed=124)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    assert a.seed == b.seed == 123 and c.seed == 124


def test_initial_weights_are_he_normal():
    net = fm.Network([200, 300, 1], seed=0, dtype="float64")
    w = net.weights[0]
    assert abs(w.mean()) < 0.01
    assert w.std() == pytest.approx(np.sqrt(2 / 200), rel=0.02)
    assert np.all(net.biases[0] == 0) and np.all(net.biases[1] == 0)


def test_seed_does_not_touch_np_random():
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    fm.Network([3, 4, 1], seed=0)
    fm.Network([3, 4, 1], seed=None)
    assert np.random.random() == expected


def test_seed_none_draws_a_seed_and_exposes_it():
    a = fm.Network([3, 8, 1], seed=None)
    b = fm.Network([3, 8, 1], seed=None)
    assert isinstance(a.seed, int) and a.seed >= 0
    assert a.seed != b.seed
    again = fm.Network([3, 8, 1], seed=a.seed)
    np.testing.assert_array_equal(again.params, a.params)
    assert fm.Network([3, 8, 1]).seed is not None  # None is the default


def test_mini_batch_shuffled_fit_is_reproducible_from_the_seed():
    X, y = regression_data(n=100, inputs=3)

    def run(seed, shuffle=True):
        net = fm.Network([3, 16, 1], seed=seed)
        history = net.fit(X, y, epochs=4, batch_size=8, shuffle=shuffle, optimizer=fm.SGD(lr=0.05))
        return net.params.copy(), history.history["loss"]

    p1, l1 = run(7)
    p2, l2 = run(7)
    np.testing.assert_array_equal(p1, p2)
    assert l1 == l2
    p3, _ = run(7, shuffle=False)
    assert not np.array_equal(p1, p3), "shuffle=True should change the batch order"
    net = fm.Network([3, 16, 1], seed=8)
    net.params[...] = fm.Network([3, 16, 1], seed=7).params
    other = net.fit(X, y, epochs=4, batch_size=8, optimizer=fm.SGD(lr=0.05))
    assert other.history["loss"] != l1  # same start, another seed's shuffling stream


# ---- dtypes and copies --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.float64, np.dtype("float32")])
def test_both_float_dtypes_work(dtype):
    X, y = regression_data(n=32, inputs=3)
    net = fm.Network([3, 8, 1], seed=0, dtype=dtype)
    expected = np.dtype(dtype)
    assert net.dtype == expected
    assert net.params.dtype == expected and net.grads.dtype == expected
    assert net.weights[0].dtype == expected
    assert net.predict(X).dtype == expected
    assert net.forward(X).dtype == expected
    history = net.fit(X, y, epochs=3, batch_size=8)
    assert all(np.isfinite(history.history["loss"]))


def test_default_dtype_is_float32():
    assert fm.Network([2, 1], seed=0).dtype == np.float32


def test_float32_and_float64_agree():
    X, y = regression_data(n=40, inputs=3)
    net64 = fm.Network([3, 8, 1], seed=0, dtype="float64")
    net32 = net64.astype("float32")
    np.testing.assert_allclose(net32.predict(X), net64.predict(X), rtol=1e-4, atol=1e-5)
    h64 = net64.fit(X, y, epochs=20, optimizer=fm.SGD(lr=0.05))
    h32 = net32.fit(X, y, epochs=20, optimizer=fm.SGD(lr=0.05))
    np.testing.assert_allclose(h32.history["loss"], h64.history["loss"], rtol=1e-3)


def test_astype():
    X, _ = regression_data(n=10, inputs=3)
    net = fm.Network([3, 5, 2], activation=["tanh"], output_activation="sigmoid", seed=9, dtype="float32")
    wide = net.astype("float64")
    assert wide.dtype == np.float64 and net.dtype == np.float32
    assert wide.layer_sizes == net.layer_sizes
    assert wide.activations == net.activations == ("tanh", "sigmoid")
    assert wide.seed == net.seed and wide.loss == net.loss
    np.testing.assert_array_equal(wide.params, net.params.astype(np.float64))
    assert not np.shares_memory(wide.params, net.params)
    np.testing.assert_allclose(wide.predict(X), net.predict(X), rtol=1e-5, atol=1e-6)
    narrow = wide.astype(np.float32)
    np.testing.assert_array_equal(narrow.params, net.params)


def test_copy_is_independent():
    X, y = regression_data(n=20, inputs=3)
    net = fm.Network([3, 6, 1], seed=0)
    clone = net.copy()
    assert clone is not net and clone.dtype == net.dtype
    np.testing.assert_array_equal(clone.params, net.params)
    assert not np.shares_memory(clone.params, net.params)
    before = net.params.copy()
    clone.fit(X, y, epochs=3)
    clone.weights[0][...] = 0
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pickle_round_trip(dtype):
    X, y = regression_data(n=30, inputs=3, outputs=2)
    net = fm.Network([3, 8, 2], activation="gelu", seed=4, dtype=dtype)
    net.fit(X, y, epochs=5, optimizer=fm.SGD(lr=0.05))
    restored = pickle.loads(pickle.dumps(net))
    assert restored.dtype == net.dtype
    assert restored.layer_sizes == net.layer_sizes
    assert restored.activations == net.activations
    assert restored.seed == net.seed
    np.testing.assert_array_equal(restored.params, net.params)
    np.testing.assert_array_equal(restored.predict(X), net.predict(X))
    for w, b in zip(restored.weights, restored.biases):
        assert np.shares_memory(w, restored.params) and np.shares_memory(b, restored.params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("read_only", [False, True])
def test_fit_does_not_copy_inputs_already_in_the_right_layout(dtype, read_only):
    # NumPy reports its allocations to tracemalloc: a copy of X (8 MB) would show in the peak.
    import tracemalloc

    rng = np.random.default_rng(0)
    X = np.ascontiguousarray(rng.normal(size=(100_000, 20)), dtype=dtype)
    y = np.ascontiguousarray(rng.normal(size=(100_000, 1)), dtype=dtype)
    X.setflags(write=not read_only)  # as np.load(mmap_mode="r") or np.frombuffer give them
    y.setflags(write=not read_only)
    net = fm.Network([20, 4, 1], seed=0, dtype=dtype)
    net.fit(X[:10], y[:10], epochs=1)  # first-call allocations out of the way
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=1, batch_size=1000)
        net.evaluate(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes // 4, f"fit and evaluate allocated {peak} bytes for an X of {X.nbytes}"
    tracemalloc.start()
    try:
        net.fit(X.astype(np.float16), y, epochs=1, batch_size=1000)  # a conversion must copy: the probe works
        _, peak_converted = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_converted >= X.nbytes // 2


# ---- warm start -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 8])
def test_second_fit_continues_from_current_weights(batch_size):
    X, y = regression_data(n=40, inputs=3)
    once = fm.Network([3, 8, 1], seed=0, dtype="float64")
    twice = fm.Network([3, 8, 1], seed=0, dtype="float64")
    h_once = once.fit(X, y, epochs=6, batch_size=batch_size, optimizer=fm.SGD(lr=0.05))
    h_first = twice.fit(X, y, epochs=3, batch_size=batch_size, optimizer=fm.SGD(lr=0.05))
    after_first = twice.params.copy()
    h_second = twice.fit(X, y, epochs=3, batch_size=batch_size, optimizer=fm.SGD(lr=0.05))
    assert not np.array_equal(after_first, twice.params)
    np.testing.assert_array_equal(twice.params, once.params)
    assert h_first.history["loss"] + h_second.history["loss"] == h_once.history["loss"]
    assert h_second.history["loss"][0] < h_first.history["loss"][0]


def test_fit_after_editing_weights_uses_the_edits():
    X, y = regression_data(n=20, inputs=3)
    net = fm.Network([3, 4, 1], seed=0, dtype="float64")
    net.params[...] = 0.0
    history = net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=0.01))
    assert history.history["loss"][0] == pytest.approx(mse(0.0, y), rel=1e-12)


# ---- non-finite training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_diverging_fit_raises_and_keeps_the_last_finite_state(dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)) * 1e3
    y = rng.normal(size=(64, 1)) * 1e3
    net = fm.Network([3, 16, 1], seed=0, dtype=dtype)
    start = net.params.copy()
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        net.fit(X, y, epochs=50, optimizer=fm.SGD(lr=1e3))
    assert np.isfinite(net.params).all()
    assert np.isfinite(net.predict(X)).all()
    # The parameters are those after the last completed update: replay that many epochs.
    completed = len(info.value.history.history["loss"])
    assert completed < 50
    replay = fm.Network([3, 16, 1], seed=0, dtype=dtype)
    np.testing.assert_array_equal(replay.params, start)
    if completed:
        replay.fit(X, y, epochs=completed, optimizer=fm.SGD(lr=1e3))
    np.testing.assert_array_equal(net.params, replay.params)
    # The network still trains afterwards with a sane learning rate.
    net.params[...] = start
    net.fit(X / 1e3, y / 1e3, epochs=2, optimizer=fm.SGD(lr=0.01))
    assert np.isfinite(net.params).all()


@pytest.mark.parametrize("dtype, lr", [("float32", 1e38), ("float64", 1e305)])
def test_update_that_overflows_leaves_finite_params(dtype, lr):
    # Gradients are finite but lr · gradient overflows the dtype: the fit must
    # still stop with the parameters at their last finite values.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3)) * 1e3
    y = rng.normal(size=(32, 1)) * 1e3
    net = fm.Network([3, 16, 1], seed=0, dtype=dtype)
    with pytest.raises(FloatingPointError, match=r"^fit: an update became non-finite"):
        net.fit(X, y, epochs=3, optimizer=fm.SGD(lr=lr))
    assert np.isfinite(net.params).all(), "the fit left non-finite parameters"
    assert np.isfinite(net.predict(X)).all()


def test_update_that_overflows_after_checked_steps_changes_nothing():
    # Zero inputs give the same outputs in fit as in predict, bit for bit, so the
    # first four one-sample steps have a zero gradient: SGD learns bounds on the
    # parameters from them and checks the next gradients alone. The fifth target
    # is off by 100, and lr · gradient overflows float32: that update must still
    # be refused whole, as a first step's would be.
    net = fm.Network([3, 8, 1], seed=0, dtype="float32")
    X = np.zeros((5, 3), dtype=np.float32)
    y = net.predict(X).copy()
    y[-1] += 100.0
    start = net.params.copy()
    with pytest.raises(FloatingPointError, match="update"):
        net.fit(X, y, epochs=1, batch_size=1, shuffle=False, optimizer=fm.SGD(lr=1e37))
    np.testing.assert_array_equal(net.params, start)


def test_learning_rate_that_overflows_the_dtype_is_refused():
    # 1e300 is a finite float64 but inf in float32: refused before any C++ runs.
    net = fm.Network([3, 16, 1], seed=0, dtype="float32")
    start = net.params.copy()
    X, y = regression_data(n=8, inputs=3)
    with pytest.raises(ValueError, match="lr"):
        net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=1e300))
    with pytest.raises(ValueError, match="lr"):
        net.step(fm.SGD(lr=1e300))
    np.testing.assert_array_equal(net.params, start)


# ---- verbose --------------------------------------------------------------------------------------------


def test_verbose_one_prints_a_line_per_epoch(capsys):
    X, y = regression_data(n=20, inputs=3)
    net = fm.Network([3, 4, 1], seed=0)
    history = net.fit(X, y, epochs=5, verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and len(history.history["loss"]) == 5
    for epoch, (line, loss) in enumerate(zip(lines, history.history["loss"]), start=1):
        assert line.startswith(f"Epoch {epoch}/5")
        assert f"{loss:.6g}" in line


def test_verbose_zero_prints_nothing(capsys):
    X, y = regression_data(n=20, inputs=3)
    net = fm.Network([3, 4, 1], seed=0)
    net.fit(X, y, epochs=5, verbose=0)
    net.fit(X, y, epochs=5)
    net.predict(X)
    net.evaluate(X, y)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_does_not_change_the_result():
    # verbose=1 trains epoch by epoch (to print between epochs); the run must be the same.
    X, y = regression_data(n=40, inputs=3)
    quiet = fm.Network([3, 8, 1], seed=0)
    loud = fm.Network([3, 8, 1], seed=0)
    hq = quiet.fit(X, y, epochs=4, batch_size=8)
    with contextlib.redirect_stdout(io.StringIO()):
        hl = loud.fit(X, y, epochs=4, batch_size=8, verbose=1)
    assert hq.history == hl.history
    np.testing.assert_array_equal(quiet.params, loud.params)


def test_repr_and_description():
    net = fm.Network([3, 8, 2], activation="tanh", seed=5, dtype="float64")
    assert net.layer_sizes == (3, 8, 2)
    assert net.n_inputs == 3 and net.n_outputs == 2
    assert net.activations == ("tanh", "linear")
    assert net.loss == "mse"
    text = repr(net)
    assert "Network" in text and "float64" in text and "seed=5" in text


def _max_rss_bytes() -> int:
    import sys

    resource = pytest.importorskip("resource")  # POSIX only
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def test_fit_memory_stays_flat_across_epochs():
    # Workspace, batch buffers and packing buffers are allocated when a fit
    # starts; the epochs themselves allocate nothing. A leak of even one batch
    # (128 x 512 floats = 256 KiB) per step would add ~100 MB over these steps.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 256)).astype(np.float32)
    y = rng.standard_normal((1024, 10)).astype(np.float32)
    net = fm.Network([256, 512, 10], seed=0)
    net.fit(X, y, epochs=2, batch_size=128)  # first allocations, all threads warm
    before = _max_rss_bytes()
    net.fit(X, y, epochs=50, batch_size=128)
    grown = _max_rss_bytes() - before
    assert grown < 8 * 2**20, f"max RSS grew by {grown / 2**20:.1f} MiB over 400 training steps"
