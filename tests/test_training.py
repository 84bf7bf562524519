"""fm.Network training features: classification losses, gradient checks, the
optimizers' persistent state, schedules and clipping through fit, validation,
early stopping and callbacks, progress output, thread-count determinism, and
the errors raised before any training starts."""

import math
import pickle

import numpy as np
import pytest

import fastmlp as fm


# ---- data ------------------------------------------------------------------------------------------


def regression_data(n=48, inputs=3, outputs=1, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, inputs))
    columns = [np.sin(2 * X @ rng.normal(size=inputs)) + 0.5 * X[:, k % inputs] for k in range(outputs)]
    return X.astype(dtype), np.stack(columns, axis=1).astype(dtype)


def class_data(n=60, inputs=4, classes=3, seed=0):
    """Integer labels from the arg-max of a random linear map (learnable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, inputs))
    y = np.argmax(X @ rng.normal(size=(inputs, classes)), axis=1).astype(np.int64)
    return X, y


def separable_binary(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    keep = np.abs(X[:, 0] + X[:, 1]) > 0.1  # a margin around the boundary
    X = X[keep]
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X, y = data.data / 16.0, data.target
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def digits_net(digits):
    Xtr, Xte, ytr, yte = digits
    net = fm.Network([64, 128, 10], activation="relu", loss="cross_entropy", seed=0)
    history = net.fit(Xtr, ytr, epochs=20, batch_size=32, optimizer=fm.Adam(lr=3e-3))
    return net, history


# ---- 1. classification and huber ---------------------------------------------------------------------


def test_digits_reach_97_percent_test_accuracy(digits, digits_net):
    _, Xte, _, yte = digits
    net, _ = digits_net
    accuracy = net.score(Xte, yte)
    assert accuracy >= 0.97, f"digits test accuracy {accuracy:.4f} < 0.97"


def test_digits_predict_predict_proba_evaluate_agree(digits, digits_net):
    _, Xte, _, yte = digits
    net, _ = digits_net
    labels = net.predict(Xte)
    assert labels.dtype == np.int64 and labels.shape == (len(Xte),), (labels.dtype, labels.shape)
    assert labels.min() >= 0 and labels.max() <= 9

    proba = net.predict_proba(Xte)
    assert proba.shape == (len(Xte), 10)
    assert np.all(proba >= 0) and np.all(proba <= 1)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-5, err_msg="softmax rows must sum to 1")
    np.testing.assert_array_equal(np.argmax(proba, axis=1), labels, err_msg="argmax of predict_proba != predict")

    result = net.evaluate(Xte, yte)
    assert set(result) == {"loss", "accuracy"}, result
    assert result["accuracy"] == net.score(Xte, yte)
    assert result["accuracy"] == pytest.approx(np.mean(labels == yte), abs=1e-12)
    cross_entropy = -np.mean(np.log(proba[np.arange(len(yte)), yte].astype(np.float64)))
    assert result["loss"] == pytest.approx(cross_entropy, rel=1e-4), "evaluate's loss is not the cross-entropy"


def test_digits_history_has_one_value_per_epoch(digits_net):
    _, history = digits_net
    assert set(history.history) == {"loss", "accuracy", "grad_norm", "lr"}, history.history.keys()
    assert len(history) == 20 and history.epoch == list(range(20))
    for key, values in history.history.items():
        assert len(values) == 20, f"{key}: {len(values)} values for 20 epochs"
        assert all(math.isfinite(v) for v in values), key
    assert history["lr"] == [pytest.approx(3e-3)] * 20
    assert history["loss"][-1] < history["loss"][0] / 5
    assert history["accuracy"][-1] > history["accuracy"][0]
    assert all(0 <= a <= 1 for a in history["accuracy"])
    assert history.stopped_epoch is None and history.best_epoch is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_integer_labels_and_one_hot_train_identically(dtype):
    X, y = class_data(n=64, classes=4)
    a = fm.Network([4, 16, 4], loss="cross_entropy", seed=3, dtype=dtype)
    b = fm.Network([4, 16, 4], loss="cross_entropy", seed=3, dtype=dtype)
    ha = a.fit(X, y, epochs=4, batch_size=16, optimizer=fm.Adam(lr=0.01))
    hb = b.fit(X, np.eye(4)[y], epochs=4, batch_size=16, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(a.params, b.params, err_msg="labels and one-hot rows trained differently")
    assert ha.history == hb.history
    # (n, 1) integer labels are read as labels too.
    c = fm.Network([4, 16, 4], loss="cross_entropy", seed=3, dtype=dtype)
    c.fit(X, y.reshape(-1, 1), epochs=4, batch_size=16, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(a.params, c.params)


def test_binary_cross_entropy_one_output():
    X, y = separable_binary()
    net = fm.Network([2, 16, 1], activation="tanh", loss="binary_cross_entropy", seed=0)
    # 20 epochs keep the logits moderate (|z| < 15): float32's sigmoid is exactly 1 beyond ~17.
    history = net.fit(X, y, epochs=20, batch_size=16, optimizer=fm.Adam(lr=0.01))
    assert set(history.history) == {"loss", "accuracy", "grad_norm", "lr"}
    labels = net.predict(X)
    assert labels.shape == (len(X),) and labels.dtype == np.int64, (labels.shape, labels.dtype)
    assert set(np.unique(labels)) <= {0, 1}
    proba = net.predict_proba(X)
    assert proba.shape == (len(X), 1)
    assert np.all((proba > 0) & (proba < 1)), "sigmoid probabilities must lie in (0, 1)"
    np.testing.assert_array_equal(labels, (proba[:, 0] > 0.5).astype(np.int64))
    accuracy = net.score(X, y)
    assert accuracy >= 0.97, f"separable toy problem: accuracy {accuracy:.3f}"
    assert accuracy == pytest.approx(np.mean(labels == y))
    # 1-D and (n, 1) targets are the same problem.
    assert net.evaluate(X, y) == net.evaluate(X, y.reshape(-1, 1))


def test_binary_cross_entropy_multi_label():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(400, 2))
    X = X[np.all(np.abs(X) > 0.1, axis=1) & (np.abs(X.sum(axis=1)) > 0.1)]  # margins around the boundaries
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0], axis=1).astype(np.int64)
    # float64: the logits reach ~17, where float32's sigmoid would round to exactly 1.
    net = fm.Network([2, 32, 3], activation="tanh", loss="binary_cross_entropy", seed=0, dtype="float64")
    net.fit(X, Y, epochs=20, batch_size=32, optimizer=fm.Adam(lr=0.01))
    labels = net.predict(X)
    assert labels.shape == (len(X), 3) and labels.dtype == np.int64, (labels.shape, labels.dtype)
    proba = net.predict_proba(X)
    assert proba.shape == (len(X), 3) and np.all((proba > 0) & (proba < 1))
    np.testing.assert_array_equal(labels, (proba > 0.5).astype(np.int64))
    accuracy = net.evaluate(X, Y)["accuracy"]
    assert accuracy == pytest.approx(np.mean(labels == Y)), "multi-label accuracy is the fraction of outputs right"
    assert accuracy >= 0.95, f"multi-label accuracy {accuracy:.3f}"


def test_huber_regression_trains():
    X, clean = regression_data(n=96, outputs=2)
    outliers = np.arange(96) % 10 == 0
    y = clean + np.where(outliers, 3.0, 0.0)[:, None]
    net = fm.Network([3, 32, 2], activation="tanh", loss="huber", huber_delta=0.5, seed=0, dtype="float64")
    start = net.evaluate(X, y)["loss"]
    start_error = np.mean((net.predict(X) - clean)[~outliers] ** 2)
    history = net.fit(X, y, epochs=100, batch_size=16, optimizer=fm.Adam(lr=0.01))
    assert history["loss"][-1] < 0.6 * history["loss"][0], history["loss"][::20]
    assert net.evaluate(X, y)["loss"] < 0.6 * start
    error = np.mean((net.predict(X) - clean)[~outliers] ** 2)
    assert error < start_error / 3, f"squared error on the clean rows: {start_error:.4f} -> {error:.4f}"
    with pytest.raises(TypeError, match="predict_proba"):
        net.predict_proba(X)
    assert net.predict(X).shape == (96, 2)


# ---- 2. gradient checks ------------------------------------------------------------------------------------


def smooth_network(outputs, loss, seed=1, **kwargs):
    """tanh hidden layers and non-zero biases: no kinks for the finite differences."""
    net = fm.Network([4, 5, 4, outputs], activation="tanh", loss=loss, dtype="float64", seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    for b in net.biases:
        b[...] = rng.uniform(-0.5, 0.5, size=b.shape)
    return net


GRAD_X = np.random.default_rng(7).normal(size=(6, 4))


def assert_gradients_check(net, X, y):
    result = fm.gradient_check(net, X, y)
    assert result, f"gradient check failed: {result}"
    assert result.max_rel_error <= 1e-6, result
    assert result.n_checked == net.n_params


def test_gradient_check_cross_entropy_labels():
    assert_gradients_check(smooth_network(3, "cross_entropy"), GRAD_X, np.array([0, 1, 2, 2, 1, 0]))


def test_gradient_check_cross_entropy_soft_rows():
    soft = np.random.default_rng(2).dirichlet(np.ones(3), size=6)
    assert not np.any(np.isin(soft, [0.0, 1.0])), "the rows must be soft, not one-hot"
    assert_gradients_check(smooth_network(3, "cross_entropy"), GRAD_X, soft)


@pytest.mark.parametrize("outputs", [1, 3])
def test_gradient_check_binary_cross_entropy(outputs):
    y = np.random.default_rng(3).integers(0, 2, size=(6, outputs))
    assert_gradients_check(smooth_network(outputs, "binary_cross_entropy"), GRAD_X, y)


def test_gradient_check_binary_cross_entropy_soft_targets():
    y = np.random.default_rng(4).uniform(0.1, 0.9, size=(6, 3))
    assert_gradients_check(smooth_network(3, "binary_cross_entropy"), GRAD_X, y)


def test_gradient_check_huber_inside_and_outside_delta():
    net = smooth_network(2, "huber", huber_delta=1.0)
    rng = np.random.default_rng(5)
    # Residuals of 0.3 (quadratic part) and 3 (linear part), far from the kink at delta.
    sizes = np.where(rng.random((6, 2)) < 0.5, 0.3, 3.0)
    sizes[0] = [0.3, 3.0]
    signs = np.where(rng.random((6, 2)) < 0.5, -1.0, 1.0)
    y = net.predict(GRAD_X) + sizes * signs
    assert np.any(np.abs(y - net.predict(GRAD_X)) < 1) and np.any(np.abs(y - net.predict(GRAD_X)) > 1)
    assert_gradients_check(net, GRAD_X, y)


def test_gradient_check_does_not_change_the_network():
    net = smooth_network(3, "cross_entropy")
    before = net.params.copy()
    fm.gradient_check(net, GRAD_X, np.array([0, 1, 2, 2, 1, 0]))
    np.testing.assert_array_equal(net.params, before)


# ---- 3. optimizer state ------------------------------------------------------------------------------------


OPTIMIZERS = {
    "adam": lambda: fm.Adam(lr=0.01),
    "sgd_momentum": lambda: fm.SGD(lr=0.05, momentum=0.9),
    "sgd_nesterov": lambda: fm.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adamw": lambda: fm.AdamW(lr=0.01, weight_decay=0.05),
    "lamb": lambda: fm.LAMB(lr=0.01, weight_decay=0.01),
}


def small_net(dtype="float64", seed=0):
    return fm.Network([3, 12, 8, 1], activation="tanh", seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_second_fit_continues_the_first(name, dtype):
    X, y = regression_data(dtype=dtype)
    split = small_net(dtype)
    optimizer = OPTIMIZERS[name]()
    h1 = split.fit(X, y, epochs=3, batch_size=8, optimizer=optimizer)
    h2 = split.fit(X, y, epochs=2, batch_size=8, optimizer=optimizer)
    whole = small_net(dtype)
    h = whole.fit(X, y, epochs=5, batch_size=8, optimizer=OPTIMIZERS[name]())
    np.testing.assert_array_equal(split.params, whole.params, err_msg="fit(3) + fit(2) != fit(5)")
    assert h1["loss"] + h2["loss"] == h["loss"]


def test_a_second_fit_with_an_equal_new_optimizer_object_continues_too():
    X, y = regression_data()
    a, b = small_net(), small_net()
    a.fit(X, y, epochs=2, batch_size=8, optimizer=fm.Adam(lr=0.01))
    a.fit(X, y, epochs=2, batch_size=8, optimizer=fm.Adam(lr=0.01))
    b.fit(X, y, epochs=4, batch_size=8, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(a.params, b.params)


def test_reset_optimizer_starts_from_fresh_state():
    X, y = regression_data()
    continued, reset = small_net(), small_net()
    for net in (continued, reset):
        net.fit(X, y, epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01))
    snapshot = reset.params.copy()
    reset.reset_optimizer()
    continued.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    reset.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    assert not np.array_equal(continued.params, reset.params), "reset_optimizer changed nothing"
    # A fresh network (no optimizer state) from the same weights does what `reset` did.
    fresh = small_net()
    fresh.params[...] = snapshot
    fresh.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(reset.params, fresh.params)


def test_switching_optimizer_kind_starts_afresh():
    # AdamW with weight_decay 0 is Adam's rule: only the state can tell them apart.
    X, y = regression_data()
    switched, continued = small_net(), small_net()
    for net in (switched, continued):
        net.fit(X, y, epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01))
    snapshot = switched.params.copy()
    switched.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=fm.AdamW(lr=0.01, weight_decay=0.0))
    continued.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=fm.Adam(lr=0.01))
    assert not np.array_equal(switched.params, continued.params), "AdamW continued Adam's state"
    fresh = small_net()
    fresh.params[...] = snapshot
    fresh.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=fm.AdamW(lr=0.01, weight_decay=0.0))
    np.testing.assert_array_equal(switched.params, fresh.params)
    assert isinstance(switched.optimizer, fm.AdamW)


def test_partial_fit_is_one_epoch_of_fit():
    X, y = regression_data()
    a, b = small_net(), small_net()
    optimizer = fm.SGD(lr=0.05, momentum=0.9)
    assert a.partial_fit(X, y, optimizer=optimizer, batch_size=8) is a
    b.fit(X, y, epochs=1, batch_size=8, optimizer=optimizer)
    np.testing.assert_array_equal(a.params, b.params)
    # Without an optimizer, partial_fit continues with the last one (and its state).
    a.partial_fit(X, y, batch_size=8)
    b.fit(X, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(a.params, b.params)
    c = small_net()
    c.fit(X, y, epochs=2, batch_size=8, optimizer=fm.SGD(lr=0.05, momentum=0.9))
    np.testing.assert_array_equal(a.params, c.params, err_msg="two partial_fits != fit(epochs=2)")
    assert a.optimizer is optimizer


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "lamb"])
@pytest.mark.parametrize("how", ["pickle", "copy"])
def test_pickle_and_copy_keep_params_and_optimizer_state(how, name, dtype):
    # shuffle=False: a copy has the optimizer's state but not the shuffling
    # generator's position (see test_copies_restart_the_shuffling_generator).
    X, y = regression_data(dtype=dtype)
    original = small_net(dtype)
    original.fit(X, y, epochs=3, batch_size=8, optimizer=OPTIMIZERS[name]())
    clone = pickle.loads(pickle.dumps(original)) if how == "pickle" else original.copy()
    assert clone is not original and clone.dtype == original.dtype
    np.testing.assert_array_equal(clone.params, original.params)
    assert not np.shares_memory(clone.params, original.params)
    assert type(clone.optimizer) is type(original.optimizer)
    snapshot = original.params.copy()
    original.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    clone.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    np.testing.assert_array_equal(clone.params, original.params, err_msg=f"{how}: training did not continue alike")
    # ...and that continuation used the state: a stateless start differs.
    fresh = small_net(dtype)
    fresh.params[...] = snapshot
    fresh.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=OPTIMIZERS[name]())
    assert not np.array_equal(fresh.params, original.params)


@pytest.mark.parametrize("how", ["copy", "pickle"])
def test_copies_continue_the_shuffling_generator(how):
    """pickle and copy() carry the parameters, the optimizer state and the
    position of the shuffling generator: a shuffled continuation of the copy is
    the continuation of the original."""
    X, y = regression_data()
    original = small_net()
    original.fit(X, y, epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01))
    clone = original.copy() if how == "copy" else pickle.loads(pickle.dumps(original))
    original.fit(X, y, epochs=2, batch_size=8)
    clone.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(clone.params, original.params)


def test_step_applies_one_update_and_reports():
    X, y = regression_data(n=16)
    net = small_net()
    prediction = net.forward(X)
    net.backward(X, y, prediction)
    grads, before = net.grads.copy(), net.params.copy()
    result = net.step(fm.Adam(lr=0.01))
    assert set(result) == {"grad_norm", "lr"}, result
    assert result["lr"] == pytest.approx(0.01)
    assert result["grad_norm"] == pytest.approx(np.linalg.norm(grads), rel=1e-12)
    # Adam's first update moves every parameter by lr · g / (|g| + eps), about lr · sign(g).
    np.testing.assert_allclose(before - net.params, 0.01 * grads / (np.abs(grads) + 1e-8), rtol=1e-9, atol=1e-18)
    assert np.mean(np.isclose(np.abs(before - net.params), 0.01, rtol=1e-3)) > 0.9
    # step() continues the state: a second step is Adam's t = 2, not another first step.
    net.step()
    twin = small_net()
    twin.params[...] = before
    twin.backward(X, y, twin.forward(X))
    twin.step(fm.Adam(lr=0.01))
    twin.step()
    np.testing.assert_array_equal(net.params, twin.params)
    assert isinstance(net.optimizer, fm.Adam)


def test_step_follows_the_schedule():
    X, y = regression_data(n=16)
    net = small_net()
    net.backward(X, y, net.forward(X))
    optimizer = fm.SGD(lr=0.1, schedule=fm.StepDecay(2, 0.5))
    lrs = [net.step(optimizer)["lr"] for _ in range(5)]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025]), lrs


# ---- 4. schedules and clipping through fit ---------------------------------------------------------------


def test_step_decay_lr_per_epoch_full_batch():
    X, y = regression_data()
    net = small_net()
    history = net.fit(X, y, epochs=5, optimizer=fm.SGD(lr=0.1, schedule=fm.StepDecay(2, 0.5)))
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-15), history["lr"]


def test_lr_recorded_is_the_epochs_last_update():
    X, y = regression_data(n=48)
    net = small_net()
    history = net.fit(X, y, epochs=4, batch_size=12, optimizer=fm.SGD(lr=0.1, schedule=fm.StepDecay(3, 0.5)))
    # 4 updates per epoch: epoch e ends with update t = 4e + 3.
    expected = [0.1 * 0.5 ** ((4 * e + 3) // 3) for e in range(4)]
    assert history["lr"] == pytest.approx(expected, rel=1e-15), history["lr"]


def test_warmup_cosine_matches_factor():
    X, y = regression_data()
    schedule = fm.Warmup(3, fm.Cosine(10))
    net = small_net()
    history = net.fit(X, y, epochs=13, optimizer=fm.SGD(lr=0.2, schedule=schedule))
    expected = [0.2 * schedule.factor(t) for t in range(13)]
    assert history["lr"] == pytest.approx(expected, rel=1e-12)
    # The documented formula, computed independently.
    formula = [(t + 1) / 3 if t < 3 else 0.5 * (1 + math.cos(math.pi * min(t - 3, 10) / 10)) for t in range(13)]
    assert [schedule.factor(t) for t in range(13)] == pytest.approx(formula, rel=1e-12)
    assert history["lr"][2] == pytest.approx(0.2) and history["lr"][0] == pytest.approx(0.2 / 3)


def test_exponential_schedule():
    X, y = regression_data()
    net = small_net()
    history = net.fit(X, y, epochs=6, optimizer=fm.Adam(lr=0.01, schedule=fm.Exponential(0.8)))
    assert history["lr"] == pytest.approx([0.01 * 0.8**t for t in range(6)], rel=1e-12)


def test_schedule_continues_across_fits():
    X, y = regression_data()
    split, whole = small_net(), small_net()
    make = lambda: fm.SGD(lr=0.1, momentum=0.5, schedule=fm.Exponential(0.7))  # noqa: E731
    first = split.fit(X, y, epochs=2, optimizer=make())["lr"]
    second = split.fit(X, y, epochs=3, optimizer=make())["lr"]
    assert first + second == whole.fit(X, y, epochs=5, optimizer=make())["lr"]
    split.reset_optimizer()
    assert split.fit(X, y, epochs=1)["lr"] == [pytest.approx(0.1)], "reset_optimizer must restart the schedule"


def test_cosine_schedule_runs_past_total_steps_at_lr_zero():
    """Cosine(T) stays at min_factor (0 by default) after T updates: the engine
    accepts the resulting lr of 0 and leaves the parameters where they are."""
    X, y = regression_data()
    schedule = fm.Cosine(3)
    net = small_net()
    history = net.fit(X, y, epochs=5, optimizer=fm.SGD(lr=0.1, schedule=schedule))
    assert history["lr"] == pytest.approx([0.1 * schedule.factor(t) for t in range(5)], abs=1e-15)
    assert history["lr"][3:] == [0.0, 0.0]
    three = small_net()
    three.fit(X, y, epochs=3, optimizer=fm.SGD(lr=0.1, schedule=fm.Cosine(3)))
    np.testing.assert_array_equal(net.params, three.params)  # the last two updates moved nothing


def large_gradient_problem():
    X, y = regression_data(n=32)
    return X, 50.0 * y + 20.0


def unclipped_gradient(net, X, y):
    twin = net.copy()
    twin.backward(X, y, twin.forward(X))
    return twin.grads.copy()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_clip_norm_bounds_the_step_but_history_reports_the_unclipped_norm(momentum):
    X, y = large_gradient_problem()
    net = small_net()
    grads = unclipped_gradient(net, X, y)
    norm = float(np.linalg.norm(grads))
    assert norm > 10, f"the test needs a gradient longer than clip_norm, got {norm}"
    before = net.params.copy()
    history = net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=0.1, momentum=momentum, clip_norm=1.0))
    change = before - net.params
    assert np.linalg.norm(change) <= 0.1 * 1.0 * (1 + 1e-12), np.linalg.norm(change)
    # torch's rule: g · clip_norm / (norm + 1e-6).
    np.testing.assert_allclose(change, 0.1 * grads * 1.0 / (norm + 1e-6), rtol=1e-9, atol=1e-15)
    assert history["grad_norm"][0] == pytest.approx(norm, rel=1e-12), "grad_norm must be the norm before clipping"


def test_clip_norm_leaves_short_gradients_alone():
    X, y = regression_data(n=32)
    net = small_net()
    grads = unclipped_gradient(net, X, y)
    assert np.linalg.norm(grads) < 100
    before = net.params.copy()
    net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=0.1, clip_norm=100.0))
    np.testing.assert_allclose(before - net.params, 0.1 * grads, rtol=1e-12, atol=1e-16)


def test_clip_value_limits_each_component():
    X, y = large_gradient_problem()
    net = small_net()
    grads = unclipped_gradient(net, X, y)
    clip, lr = 0.05, 0.1
    big = np.abs(grads) > clip
    assert big.any() and (~big).any(), "the test needs gradients on both sides of clip_value"
    before = net.params.copy()
    net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=lr, clip_value=clip))
    change = before - net.params
    assert np.max(np.abs(change)) <= lr * clip * (1 + 1e-12), np.max(np.abs(change))
    np.testing.assert_allclose(change[big], lr * clip * np.sign(grads[big]), rtol=1e-12)
    np.testing.assert_allclose(change[~big], lr * grads[~big], rtol=1e-12, atol=1e-18)


# ---- 5. validation, early stopping, callbacks --------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_validation_split_holds_out_the_last_rows(loss):
    if loss == "mse":
        X, y = regression_data(n=50)
        make = lambda: fm.Network([3, 10, 1], activation="tanh", seed=2, dtype="float64")  # noqa: E731
    else:
        X, y = class_data(n=50, inputs=3)
        make = lambda: fm.Network([3, 10, 3], activation="tanh", loss="cross_entropy", seed=2, dtype="float64")  # noqa: E731
    net = make()
    history = net.fit(X, y, epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01), validation_split=0.2)
    expected_keys = {"loss", "grad_norm", "lr", "val_loss"}
    if loss == "cross_entropy":
        expected_keys |= {"accuracy", "val_accuracy"}
    assert set(history.history) == expected_keys
    assert all(len(v) == 3 for v in history.history.values())
    held_out = net.evaluate(X[-10:], y[-10:])
    assert history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-12)
    assert history["val_loss"][-1] != pytest.approx(net.evaluate(X[:10], y[:10])["loss"], rel=1e-6)
    if loss == "cross_entropy":
        assert history["val_accuracy"][-1] == held_out["accuracy"]
    # Training saw the first 40 rows only, exactly as a fit on them.
    twin = make()
    twin_history = twin.fit(X[:40], y[:40], epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(net.params, twin.params)
    assert history["loss"] == twin_history["loss"]


def test_validation_data():
    X, y = regression_data(n=40)
    Xv, yv = regression_data(n=15, seed=9)
    net, twin = small_net(), small_net()
    history = net.fit(X, y, epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01), validation_data=(Xv, yv))
    assert len(history["val_loss"]) == 3
    assert history["val_loss"][-1] == pytest.approx(net.evaluate(Xv, yv)["loss"], rel=1e-12)
    twin.fit(X, y, epochs=3, batch_size=8, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(net.params, twin.params, err_msg="validation changed the training")


def test_validation_split_and_data_together_is_an_error():
    X, y = regression_data(n=40)
    net = small_net()
    before = net.params.copy()
    with pytest.raises(ValueError, match="not both"):
        net.fit(X, y, epochs=1, validation_split=0.2, validation_data=(X[:5], y[:5]))
    np.testing.assert_array_equal(net.params, before)


def overfitting_problem():
    """Few noisy training samples and a clean validation set: val_loss falls, then rises."""
    rng = np.random.default_rng(0)
    Xt = rng.uniform(-1, 1, size=(12, 2))
    yt = np.sin(2 * Xt[:, :1]) + 0.5 * rng.normal(size=(12, 1))
    Xv = rng.uniform(-1, 1, size=(64, 2))
    return Xt, yt, Xv, np.sin(2 * Xv[:, :1])


def overfit_net():
    return fm.Network([2, 64, 64, 1], activation="tanh", dtype="float64", seed=0)


def test_early_stopping_restores_the_best_weights():
    Xt, yt, Xv, yv = overfitting_problem()
    net = overfit_net()
    history = net.fit(Xt, yt, epochs=300, optimizer=fm.Adam(lr=0.01), validation_data=(Xv, yv),
                      early_stopping=fm.EarlyStopping(patience=10))
    val = history["val_loss"]
    best = int(np.argmin(val))
    assert best > 0, "the test needs a best epoch after the first"
    assert history.best_epoch == best
    assert history.stopped_epoch == best + 10, (history.stopped_epoch, best)
    assert len(history) == history.stopped_epoch + 1 < 300
    assert val[-1] > min(val), "val_loss must have got worse after the best epoch"
    assert net.evaluate(Xv, yv)["loss"] == pytest.approx(min(val), rel=1e-12, abs=0), "best weights not restored"


def test_early_stopping_without_restoring_keeps_the_last_weights():
    Xt, yt, Xv, yv = overfitting_problem()
    restored, last = overfit_net(), overfit_net()
    kwargs = dict(epochs=300, optimizer=fm.Adam(lr=0.01), validation_data=(Xv, yv))
    h1 = restored.fit(Xt, yt, early_stopping=fm.EarlyStopping(patience=10), **kwargs)
    h2 = last.fit(Xt, yt, early_stopping=fm.EarlyStopping(patience=10, restore_best_weights=False), **kwargs)
    assert h1.history == h2.history and h2.best_epoch == h1.best_epoch and h2.stopped_epoch == h1.stopped_epoch
    assert last.evaluate(Xv, yv)["loss"] == pytest.approx(h2["val_loss"][-1], rel=1e-12)
    assert not np.array_equal(last.params, restored.params)
    # The last weights are those of a plain fit for as many epochs.
    plain = overfit_net()
    plain.fit(Xt, yt, epochs=len(h2), optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(last.params, plain.params)


def test_early_stopping_true_monitors_loss_without_validation():
    X, y = regression_data()
    net = small_net()
    history = net.fit(X, y, epochs=20, optimizer=fm.SGD(lr=0.05), early_stopping=True)
    assert history.best_epoch is not None and 0 <= history.best_epoch < len(history)
    assert history["loss"][history.best_epoch] == min(history["loss"])


def test_early_stopping_monitor_max_mode_for_accuracy():
    X, y = class_data(n=60, inputs=4)
    net = fm.Network([4, 8, 3], loss="cross_entropy", seed=0, dtype="float64")
    history = net.fit(X[:40], y[:40], epochs=30, optimizer=fm.SGD(lr=0.5), validation_data=(X[40:], y[40:]),
                      early_stopping=fm.EarlyStopping(monitor="val_accuracy", patience=3))
    assert history["val_accuracy"][history.best_epoch] == max(history["val_accuracy"])
    assert history["val_accuracy"].index(max(history["val_accuracy"])) == history.best_epoch


def test_callback_stops_training_and_sees_the_logs():
    X, y = class_data(n=40, inputs=4)
    calls = []

    def on_epoch_end(epoch, logs):
        calls.append((epoch, dict(logs)))
        return epoch == 2

    net = fm.Network([4, 8, 3], loss="cross_entropy", seed=0)
    history = net.fit(X[:30], y[:30], epochs=10, batch_size=10, optimizer=fm.Adam(lr=0.01),
                      validation_data=(X[30:], y[30:]), on_epoch_end=on_epoch_end)
    assert len(history) == 3 and history.stopped_epoch == 2
    assert [epoch for epoch, _ in calls] == [0, 1, 2], "on_epoch_end is called once per epoch"
    expected = {"loss", "grad_norm", "lr", "accuracy", "val_loss", "val_accuracy"}
    for epoch, logs in calls:
        assert set(logs) == expected, logs
        for key in expected:
            assert logs[key] == history[key][epoch], key


def test_callback_returning_nothing_runs_all_epochs():
    X, y = regression_data()
    seen = []
    net, twin = small_net(), small_net()
    history = net.fit(X, y, epochs=4, batch_size=8, on_epoch_end=lambda epoch, logs: seen.append(epoch))
    twin.fit(X, y, epochs=4, batch_size=8)
    assert seen == [0, 1, 2, 3] and len(history) == 4 and history.stopped_epoch is None
    np.testing.assert_array_equal(net.params, twin.params, err_msg="epoch-by-epoch fit != one-call fit")


# ---- 6. verbose -----------------------------------------------------------------------------------------


def test_verbose_0_prints_nothing(capsys):
    X, y = regression_data()
    small_net().fit(X, y, epochs=3, verbose=0, validation_split=0.25, early_stopping=True)
    out, err = capsys.readouterr()
    assert out == "" and err == "", (out, err)


def test_verbose_1_prints_one_line_per_epoch(capsys):
    X, y = regression_data()
    net, twin = small_net(), small_net()
    net.fit(X, y, epochs=4, batch_size=8, verbose=1)
    twin.fit(X, y, epochs=4, batch_size=8)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert all("loss" in line for line in lines), out
    assert out.endswith("\n")
    np.testing.assert_array_equal(net.params, twin.params, err_msg="verbose changed the training")


def test_verbose_2_prints_a_progress_display(capsys):
    X, y = regression_data()
    small_net().fit(X, y, epochs=3, verbose=2)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.strip(), "verbose=2 printed nothing"
    assert captured.out.endswith("\n"), repr(captured.out[-80:])


# ---- 7. determinism across thread counts ---------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1024, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=1024)
    return X, y


@pytest.mark.parametrize("make", [lambda: fm.Adam(lr=1e-3), lambda: fm.AdamW(lr=1e-3),
                                  lambda: fm.LAMB(lr=1e-3, weight_decay=0.01)], ids=["adam", "adamw", "lamb"])
def test_thread_count_does_not_change_results(make, wide_data, restore_num_threads):
    X, y = wide_data
    params = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        assert fm.get_num_threads() == threads
        net = fm.Network([256, 512, 512, 10], loss="cross_entropy", seed=0)
        net.fit(X, y, epochs=2, batch_size=256, optimizer=make())
        params.append(net.params.copy())
    assert not np.array_equal(params[0], fm.Network([256, 512, 512, 10], loss="cross_entropy", seed=0).params)
    np.testing.assert_array_equal(params[0], params[1], err_msg="1 and 2 threads trained differently")


# ---- 8. errors before training starts -----------------------------------------------------------------


ALL_OPTIMIZERS = [fm.SGD, fm.Adam, fm.AdamW, fm.LAMB]
ADAMS = [fm.Adam, fm.AdamW, fm.LAMB]


@pytest.mark.parametrize("cls", ALL_OPTIMIZERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("lr", [-0.1, 0.0, float("nan"), float("inf")])
def test_bad_lr(cls, lr):
    with pytest.raises(ValueError, match=r"^lr: expected a positive finite number"):
        cls(lr=lr)


@pytest.mark.parametrize("cls", ADAMS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("betas, which", [((1.0, 0.999), 0), ((-0.1, 0.9), 0), ((0.9, 1.0), 1),
                                          ((0.9, -0.5), 1), ((float("nan"), 0.9), 0)])
def test_betas_outside_0_1(cls, betas, which):
    with pytest.raises(ValueError, match=rf"^betas\[{which}\]: expected a number in \[0, 1\)"):
        cls(betas=betas)


@pytest.mark.parametrize("cls", ADAMS, ids=lambda c: c.__name__)
def test_betas_not_a_pair(cls):
    with pytest.raises(TypeError, match="betas"):
        cls(betas=0.9)


@pytest.mark.parametrize("cls", ADAMS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("eps", [0.0, -1e-8])
def test_eps_not_positive(cls, eps):
    with pytest.raises(ValueError, match=r"^eps: expected a positive"):
        cls(eps=eps)


def test_negative_momentum():
    with pytest.raises(ValueError, match=r"^momentum"):
        fm.SGD(momentum=-0.1)


def test_nesterov_without_momentum():
    with pytest.raises(ValueError, match=r"^nesterov: needs momentum > 0"):
        fm.SGD(nesterov=True)
    with pytest.raises(ValueError, match=r"^nesterov"):
        fm.SGD(momentum=0.9, dampening=0.1, nesterov=True)


@pytest.mark.parametrize("cls", ALL_OPTIMIZERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ["clip_norm", "clip_value"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_clipping_not_positive(cls, name, value):
    with pytest.raises(ValueError, match=rf"^{name}: expected a positive"):
        cls(**{name: value})


@pytest.mark.parametrize("make, name", [
    (lambda: fm.StepDecay(0), "step_size"),
    (lambda: fm.StepDecay(2, gamma=0.0), "gamma"),
    (lambda: fm.Cosine(0), "total_steps"),
    (lambda: fm.Cosine(10, min_factor=1.5), "min_factor"),
    (lambda: fm.Exponential(-1), "gamma"),
    (lambda: fm.Exponential(0.0), "gamma"),
    (lambda: fm.Warmup(0), "steps"),
], ids=["step0", "step-gamma0", "cosine0", "cosine-min", "exp-neg", "exp0", "warmup0"])
def test_bad_schedule_parameters(make, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        make()


def test_schedule_must_be_a_schedule():
    with pytest.raises(TypeError, match="schedule"):
        fm.SGD(schedule=0.5)
    with pytest.raises(TypeError, match="schedule"):
        fm.Warmup(3, fm.Warmup(2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss="hinge"), r"^loss: expected one of"),
    (dict(activation="relu6"), r"^activation: expected one of"),
    (dict(init="kaiming"), r"^init: expected one of"),
    (dict(output_activation="softplus"), r"^output_activation: expected one of"),
    (dict(loss="cross_entropy", output_activation="sigmoid"), r"^output_activation: with loss='cross_entropy'"),
    (dict(loss="binary_cross_entropy", output_activation="softmax"), r"^output_activation: with loss="),
    (dict(loss="huber", huber_delta=0.0), r"^huber_delta"),
], ids=["loss", "activation", "init", "output_activation", "sigmoid-with-ce", "softmax-with-bce", "huber-delta"])
def test_bad_network_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fm.Network([4, 6, 3], seed=0, **kwargs)


def test_cross_entropy_needs_two_outputs():
    with pytest.raises(ValueError, match=r"cross_entropy needs at least 2 outputs"):
        fm.Network([4, 6, 1], loss="cross_entropy", seed=0)


def test_classifier_output_activation_may_name_its_head():
    net = fm.Network([4, 6, 3], loss="cross_entropy", output_activation="softmax", seed=0)
    assert net.activations[-1] == "linear"


N = 20


def trained_classifier(loss="cross_entropy", outputs=3):
    """A classifier with some optimizer state, and its data."""
    X, y = class_data(n=N, inputs=4, classes=outputs)
    net = fm.Network([4, 6, outputs], loss=loss, seed=0, dtype="float64")
    if loss == "binary_cross_entropy":
        y = np.eye(outputs)[y]
    net.fit(X, y, epochs=2, batch_size=5, optimizer=fm.Adam(lr=0.01))
    return net, X, y


BAD_FIT_CALLS = {
    "label-negative": (dict(y=np.r_[-1, np.zeros(N - 1, dtype=int)]), r"^y: class labels must be in 0\.\.2 .*got .*-1"),
    "label-n_classes": (dict(y=np.r_[3, np.zeros(N - 1, dtype=int)]), r"^y: class labels must be in 0\.\.2 .*got .*3"),
    "label-float": (dict(y=np.r_[0.5, np.zeros(N - 1)]), r"^y: class labels must be whole numbers"),
    "label-nan": (dict(y=np.r_[np.nan, np.zeros(N - 1)]), r"^y: expected finite values"),
    "one-hot-sum": (dict(y=np.tile([1.0, 1.0, 0.0], (N, 1))), r"^y: one-hot \(probability\) rows must sum to 1"),
    "one-hot-range": (dict(y=np.tile([1.5, -0.5, 0.0], (N, 1))), r"^y: one-hot .*values in \[0, 1\]"),
    "shape-n-4": (dict(y=np.zeros((N, 4))), r"^y: cross_entropy expects class labels of shape \(20,\)"),
    "labels-n+1": (dict(y=np.zeros(N + 1, dtype=int)), r"^y: expected 20 labels"),
    "labels-3d": (dict(y=np.zeros((N, 3, 1))), r"^y: cross_entropy expects"),
    "split-empty": (dict(validation_split=0.01), r"^validation_split: 0\.01 of 20 samples leaves 0 for validation"),
    "split-all": (dict(validation_split=0.99), r"^validation_split: 0\.99 of 20 samples leaves 20 for validation"),
    "split-1": (dict(validation_split=1.0), r"^validation_split: expected a number in \[0, 1\)"),
    "split-negative": (dict(validation_split=-0.1), r"^validation_split: expected a number in \[0, 1\)"),
    "both-validations": (dict(validation_split=0.2, validation_data="xy"), r"not both"),
    "monitor-val-loss": (dict(early_stopping=fm.EarlyStopping(monitor="val_loss")),
                         r"^EarlyStopping: monitor 'val_loss' is not recorded"),
    "monitor-unknown": (dict(early_stopping=fm.EarlyStopping(monitor="f1")), r"monitor 'f1' is not recorded"),
    "val-label": (dict(validation_data="bad-labels"), r"^validation_data y: class labels must be in 0\.\.2"),
    "epochs-0": (dict(epochs=0), r"^epochs: expected an integer >= 1"),
    "batch-0": (dict(batch_size=0), r"^batch_size: expected an integer >= 1"),
    "verbose-3": (dict(verbose=3), r"^verbose: expected 0, 1 or 2"),
    "callback": (dict(on_epoch_end="print"), r"^on_epoch_end: expected a function"),
}


@pytest.mark.parametrize("case", list(BAD_FIT_CALLS))
def test_bad_fit_call_changes_nothing(case):
    kwargs, match = BAD_FIT_CALLS[case]
    net, X, y = trained_classifier()
    twin, _, _ = trained_classifier()
    kwargs = dict(kwargs)
    y_bad = kwargs.pop("y", y)
    if kwargs.get("validation_data") == "xy":
        kwargs["validation_data"] = (X[:5], y[:5])
    elif kwargs.get("validation_data") == "bad-labels":
        kwargs["validation_data"] = (X[:5], np.array([0, 1, 2, 3, 0]))
    before = net.params.copy()
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X, y_bad, **{"epochs": 1, **kwargs})
    np.testing.assert_array_equal(net.params, before, err_msg=f"{case}: the failed fit changed the weights")
    # Nothing else moved either (optimizer state, shuffling generator): training
    # on continues exactly as for a twin that never saw the bad call.
    net.fit(X, y, epochs=1, batch_size=5, optimizer=fm.Adam(lr=0.01))
    twin.fit(X, y, epochs=1, batch_size=5, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(net.params, twin.params, err_msg=f"{case}: the failed fit changed the state")


@pytest.mark.parametrize("y_bad, match", [
    (lambda y: y + 0.5, r"^y: binary_cross_entropy expects labels 0/1"),
    (lambda y: y - 1.0, r"^y: binary_cross_entropy expects labels 0/1"),
    (lambda y: y[:, :2], r"^y: expected 3 outputs"),
], ids=["above-1", "below-0", "shape"])
def test_bad_binary_cross_entropy_targets(y_bad, match):
    net, X, y = trained_classifier("binary_cross_entropy")
    before = net.params.copy()
    with pytest.raises(ValueError, match=match):
        net.fit(X, y_bad(y), epochs=1)
    with pytest.raises(ValueError, match=match):
        net.evaluate(X, y_bad(y))
    np.testing.assert_array_equal(net.params, before)


def test_bad_labels_refused_by_evaluate_and_score_too():
    net, X, _ = trained_classifier()
    for call in (net.evaluate, net.score):
        with pytest.raises(ValueError, match=r"^y: class labels must be in 0\.\.2"):
            call(X, np.full(N, 3))


def test_predict_proba_on_a_regression_network():
    X, _ = regression_data(n=5)
    with pytest.raises(TypeError, match=r"^predict_proba: only for classifiers"):
        small_net().predict_proba(X)


def test_bad_optimizer_argument():
    X, y = regression_data()
    net = small_net()
    before = net.params.copy()
    with pytest.raises(TypeError, match=r"^optimizer: expected an optimizer"):
        net.fit(X, y, optimizer="adam")
    with pytest.raises(TypeError, match=r"^early_stopping: expected"):
        net.fit(X, y, early_stopping="yes")
    np.testing.assert_array_equal(net.params, before)


def test_partial_fit_takes_scikit_learns_classes_argument():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 4))
    labels = rng.integers(0, 3, size=30)
    net = fm.Network([4, 8, 3], loss="cross_entropy", seed=0)
    twin = fm.Network([4, 8, 3], loss="cross_entropy", seed=0)
    net.partial_fit(X, labels, classes=[0, 1, 2], optimizer=fm.Adam(lr=0.01))
    twin.partial_fit(X, labels, optimizer=fm.Adam(lr=0.01))
    np.testing.assert_array_equal(net.params, twin.params)
    before = net.params.copy()
    with pytest.raises(ValueError, match="classes"):
        net.partial_fit(X, labels, classes=[0, 1])
    with pytest.raises(ValueError, match="classes"):
        net.partial_fit(X, labels, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="classes"):
        fm.Network([4, 1], seed=0).partial_fit(X, labels[:, None], classes=[0, 1])
    np.testing.assert_array_equal(net.params, before)


def test_a_long_silent_fit_runs_in_chunks_that_continue_each_other(monkeypatch):
    """An unwatched fit calls the engine SILENT_CHUNK (65536) epochs at a time, so its
    per-epoch records stay bounded: the same run, history and shuffling as fits back to back."""
    import fastmlp.network

    monkeypatch.setattr(fastmlp.network, "SILENT_CHUNK", 7)
    X = np.array([[0.1], [0.2], [0.3]])
    y = 2 * X
    whole = fm.Network([1, 1], seed=0, dtype="float64")
    parts = whole.copy()
    history = whole.fit(X, y, epochs=20, batch_size=2, optimizer=fm.SGD(lr=0.1))
    losses = []
    for epochs in (7, 7, 6):
        losses += parts.fit(X, y, epochs=epochs, batch_size=2, optimizer=fm.SGD(lr=0.1)).history["loss"]
    assert len(history) == 20 and history.epoch == list(range(20))
    np.testing.assert_array_equal(history.history["loss"], losses)
    np.testing.assert_array_equal(whole.params, parts.params)
    one_call = whole.copy()
    one_call.fit(X, y, epochs=1, batch_size=2)
    assert not np.array_equal(one_call.params, whole.params)  # the fits did train
