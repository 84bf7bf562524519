"""Sample and class weights: the weighted loss kernels against their twins, their
gradient by finite differences, and what weights mean to a fit (ones change nothing,
a weight of 2 is a sample seen twice, a weight of 0 a sample left out)."""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import kernels, reference
from kernel_helpers import LAYOUTS, assert_close, dtype_id, eps_of, with_layout

DTYPES = (np.float32, np.float64)
SHAPES = [(1, 1), (3, 7), (7, 3), (33, 1), (257, 5)]
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy", "huber")


def loss_case(name, shape, dtype, seed=0):
    rng = np.random.default_rng([seed, *shape, len(name)])
    pred = (rng.standard_normal(shape) * 2).astype(dtype)
    if name == "cross_entropy":
        target = np.eye(shape[1], dtype=dtype)[rng.integers(0, shape[1], shape[0])]
    elif name == "binary_cross_entropy":
        target = rng.integers(0, 2, shape).astype(dtype)
    else:
        target = rng.standard_normal(shape).astype(dtype)
    weight = rng.uniform(0, 3, shape[0]).astype(dtype)
    weight[rng.uniform(size=shape[0]) < 0.2] = 0  # some rows weigh nothing
    return pred, target, weight


# ---- the kernels and their twins ----------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_weighted_loss_matches_the_twin(name, shape, dtype):
    pred, target, weight = loss_case(name, shape, dtype)
    expected_loss = reference.loss_forward(name, pred, target, 1.0, weight=weight)
    expected_grad = reference.loss_backward(name, pred, target, 1.0, weight=weight)
    expected_right = reference.count_correct(name, pred, target, weight=weight)
    rtol = 64 * eps_of(dtype)
    for layout in LAYOUTS:
        p, t, w = with_layout(pred, layout), with_layout(target, layout), with_layout(weight, layout)
        assert kernels.loss_forward(name, p, t, weight=w) == pytest.approx(expected_loss, rel=rtol, abs=1e-300)
        assert_close(kernels.loss_backward(name, p, t, weight=w), expected_grad, rtol=rtol,
                     atol=16 * eps_of(dtype) * float(np.abs(expected_grad).max(initial=0)), what=f"{name} {layout}")
        assert kernels.count_correct(name, p, t, weight=w) == pytest.approx(expected_right, rel=1e-12)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_weights_of_one_are_no_weights_and_a_common_factor_changes_nothing(name, dtype):
    pred, target, _ = loss_case(name, (33, 5), dtype)
    ones = np.ones(33, dtype)
    assert kernels.loss_forward(name, pred, target, weight=ones) == kernels.loss_forward(name, pred, target)
    assert np.array_equal(kernels.loss_backward(name, pred, target, weight=ones),
                          kernels.loss_backward(name, pred, target))
    assert kernels.count_correct(name, pred, target, weight=ones) == kernels.count_correct(name, pred, target)
    # Powers of two scale exactly.
    assert np.array_equal(kernels.loss_backward(name, pred, target, weight=ones * 4),
                          kernels.loss_backward(name, pred, target))


@pytest.mark.parametrize("name", LOSSES)
def test_all_zero_weights_give_zero_loss_and_gradient(name):
    pred, target, _ = loss_case(name, (7, 3), np.float64)
    zeros = np.zeros(7)
    assert kernels.loss_forward(name, pred, target, weight=zeros) == 0.0
    assert not kernels.loss_backward(name, pred, target, weight=zeros).any()
    assert reference.loss_forward(name, pred, target, weight=zeros) == 0.0
    assert not reference.loss_backward(name, pred, target, weight=zeros).any()


@pytest.mark.parametrize("name", LOSSES)
def test_the_weighted_gradient_matches_finite_differences(name):
    pred, target, weight = loss_case(name, (7, 3), np.float64, seed=1)
    grad = kernels.loss_backward(name, pred, target, weight=weight)
    h = 1e-6
    numeric = np.empty_like(pred)
    for index in np.ndindex(pred.shape):
        up, down = pred.copy(), pred.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (kernels.loss_forward(name, up, target, weight=weight)
                          - kernels.loss_forward(name, down, target, weight=weight)) / (2 * h)
    assert_close(grad, numeric, rtol=1e-6, atol=1e-8, what=f"{name} gradient")


@pytest.mark.parametrize("weight, message", [
    (np.array([1.0, -1.0, 1.0]), r"^weight: weights must be >= 0, found 1 negative"),
    (np.array([1.0, np.nan, 1.0]), r"^weight: expected finite values"),
    (np.ones(4), r"^weight: expected one weight per sample, shape \(3,\)"),
    (np.ones((3, 2)), r"^weight: expected one weight per row, shape \(3,\)"),
])
def test_bad_kernel_weights_are_refused(weight, message):
    pred, target, _ = loss_case("mse", (3, 2), np.float64)
    with pytest.raises(ValueError, match=message):
        kernels.loss_forward("mse", pred, target, weight=weight)


# ---- what weights mean to a fit --------------------------------------------------------------


def problem(loss, n=96, n_inputs=4, n_outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_inputs))
    if loss == "cross_entropy":
        y = rng.integers(0, n_outputs, n)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (n, n_outputs)).astype(float)
    else:
        y = rng.standard_normal((n, n_outputs))
    return X, y


def network(loss, dtype="float64", **kwargs):
    return fm.Network([4, 16, 8, 3], loss=loss, dtype=dtype, seed=5, **kwargs)


FIT_CASES = [  # (batch_size, shuffle, network options)
    (None, False, {}),
    (16, True, {}),
    (80, True, {}),  # two pieces a step (80 ≥ 2 × 32 rows)
    (16, True, {"norm": "batch", "dropout": 0.2}),
]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("batch_size, shuffle, options", FIT_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fit_with_weights_of_one_is_the_fit_without(loss, batch_size, shuffle, options, dtype):
    X, y = problem(loss)
    plain, weighted = network(loss, dtype, **options), network(loss, dtype, **options)
    a = plain.fit(X, y, epochs=3, batch_size=batch_size, shuffle=shuffle, optimizer=fm.Adam(lr=1e-2))
    b = weighted.fit(X, y, epochs=3, batch_size=batch_size, shuffle=shuffle, optimizer=fm.Adam(lr=1e-2),
                     sample_weight=np.ones(len(X)))
    assert np.array_equal(plain.params, weighted.params)
    assert a.history == b.history


@pytest.mark.parametrize("loss", LOSSES)
def test_scaling_every_weight_changes_nothing(loss):
    X, y = problem(loss)
    w = np.random.default_rng(1).uniform(0.5, 2, len(X))
    nets = [network(loss) for _ in range(2)]
    for net, factor in zip(nets, (1.0, 8.0)):  # a power of two: exact
        net.fit(X, y, epochs=2, batch_size=16, optimizer=fm.SGD(lr=0.05, momentum=0.9), sample_weight=w * factor)
    assert np.array_equal(nets[0].params, nets[1].params)


@pytest.mark.parametrize("loss", LOSSES)
def test_a_weight_of_two_is_a_sample_seen_twice_and_zero_a_sample_left_out(loss):
    """Full batch: the weighted mean over (X, w) is the plain mean over X with each
    sample repeated w times."""
    X, y = problem(loss)
    w = np.random.default_rng(2).integers(0, 3, len(X)).astype(float)
    repeated = np.repeat(np.arange(len(X)), w.astype(int))
    weighted, copies = network(loss), network(loss)
    hw = weighted.fit(X, y, epochs=4, optimizer=fm.SGD(lr=0.1), sample_weight=w)
    hc = copies.fit(X[repeated], y[repeated], epochs=4, optimizer=fm.SGD(lr=0.1))
    assert_close(weighted.params, copies.params, rtol=1e-12, atol=1e-13, what="params")
    assert_close(hw["loss"], hc["loss"], rtol=1e-12, what="loss")
    if weighted.is_classifier:
        assert_close(hw["accuracy"], hc["accuracy"], rtol=1e-12, what="accuracy")
    assert weighted.evaluate(X, y, sample_weight=w)["loss"] == pytest.approx(copies.evaluate(X[repeated], y[repeated])["loss"], rel=1e-12)


def test_the_weighted_gradient_of_a_fit_matches_finite_differences():
    """One full-batch SGD step of lr 1 moves the parameters by minus the gradient
    of the weighted loss; finite differences of that loss (through predict and the
    twin) agree."""
    X, y = problem("mse", n=12)
    w = np.random.default_rng(3).uniform(0, 2, len(X))
    net = network("mse")
    start = net.params.copy()
    net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=1.0), sample_weight=w)
    grad = start - net.params
    probe = network("mse")
    h = 1e-6
    for i in np.random.default_rng(4).choice(len(start), 25, replace=False):
        values = []
        for step in (h, -h):
            probe.params[...] = start
            probe.params[i] += step
            values.append(reference.loss_forward("mse", probe.predict(X), y, weight=w))
        assert (values[0] - values[1]) / (2 * h) == pytest.approx(grad[i], rel=1e-5, abs=1e-8)


def test_weighted_fits_are_the_same_at_any_thread_count(restore_num_threads):
    X, y = problem("cross_entropy", n=200)
    w = np.random.default_rng(5).uniform(0, 2, len(X))
    results = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        net = network("cross_entropy", dtype="float32")
        net.fit(X, y, epochs=3, batch_size=128, sample_weight=w)
        results.append(net.params.copy())
    assert np.array_equal(*results)


def test_the_validation_split_keeps_its_samples_weights():
    X, y = problem("mse")
    w = np.random.default_rng(6).uniform(0, 2, len(X))
    net = network("mse")
    history = net.fit(X, y, epochs=2, sample_weight=w, validation_split=0.25)
    assert history["val_loss"][-1] == net.evaluate(X[-24:], y[-24:], sample_weight=w[-24:])["loss"]
    other = network("mse")
    other.fit(X[:-24], y[:-24], epochs=2, sample_weight=w[:-24])
    assert np.array_equal(net.params, other.params)
    third = network("mse")
    history = third.fit(X[:-24], y[:-24], epochs=2, sample_weight=w[:-24],
                        validation_data=(X[-24:], y[-24:], w[-24:]))
    assert history["val_loss"][-1] == net.evaluate(X[-24:], y[-24:], sample_weight=w[-24:])["loss"]


def test_partial_fit_takes_sample_weight():
    X, y = problem("cross_entropy")
    w = np.random.default_rng(7).uniform(0, 2, len(X))
    a, b = network("cross_entropy"), network("cross_entropy")
    a.partial_fit(X, y, sample_weight=w, batch_size=16)
    b.fit(X, y, epochs=1, batch_size=16, sample_weight=w)
    assert np.array_equal(a.params, b.params)


def test_score_weighs_as_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    X, y = problem("cross_entropy")
    w = np.random.default_rng(8).uniform(0, 2, len(X))
    net = network("cross_entropy")
    net.fit(X, y, epochs=20, optimizer=fm.Adam(lr=1e-2))
    assert net.score(X, y, sample_weight=w) == pytest.approx(metrics.accuracy_score(y, net.predict(X), sample_weight=w))
    X, y = problem("mse")
    reg = network("mse")
    reg.fit(X, y, epochs=20, optimizer=fm.Adam(lr=1e-2))
    assert reg.score(X, y, sample_weight=w) == pytest.approx(metrics.r2_score(y, reg.predict(X), sample_weight=w))
    assert reg.score(X, y) == pytest.approx(metrics.r2_score(y, reg.predict(X)))


# ---- class weights ------------------------------------------------------------------------------


def test_class_weight_is_a_weight_per_sample_by_its_class():
    X, y = problem("cross_entropy")
    weights = {0: 2.0, 2: 0.5}  # class 1 keeps 1
    by_class, by_sample = network("cross_entropy"), network("cross_entropy")
    by_class.fit(X, y, epochs=2, batch_size=16, class_weight=weights)
    by_sample.fit(X, y, epochs=2, batch_size=16, sample_weight=np.array([2.0, 1.0, 0.5])[y])
    assert np.array_equal(by_class.params, by_sample.params)


def test_balanced_class_weight_is_scikit_learns():
    utils = pytest.importorskip("sklearn.utils.class_weight")
    X, y = problem("cross_entropy", n=90)
    y = np.where(np.arange(90) < 60, 0, y)  # class 0 common
    w = np.random.default_rng(9).uniform(0.5, 2, 90)
    balanced = utils.compute_class_weight("balanced", classes=np.unique(y), y=y, sample_weight=w)
    a, b = network("cross_entropy"), network("cross_entropy")
    a.fit(X, y, epochs=2, batch_size=16, class_weight="balanced", sample_weight=w)
    b.fit(X, y, epochs=2, batch_size=16, sample_weight=w * balanced[y])
    assert_close(a.params, b.params, rtol=1e-12, atol=1e-14, what="params")


def test_class_weight_with_one_sigmoid_output():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((64, 4))
    y = (rng.uniform(size=64) < 0.2).astype(float)
    a = fm.Network([4, 8, 1], loss="binary_cross_entropy", dtype="float64", seed=1)
    b = fm.Network([4, 8, 1], loss="binary_cross_entropy", dtype="float64", seed=1)
    a.fit(X, y, epochs=2, class_weight={1: 4.0})
    b.fit(X, y, epochs=2, sample_weight=np.where(y == 1, 4.0, 1.0))
    assert np.array_equal(a.params, b.params)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"sample_weight": -np.ones(96)}, ValueError, r"^sample_weight: weights must be >= 0, found 96 negative"),
    ({"sample_weight": np.ones(95)}, ValueError, r"^sample_weight: expected one weight per sample, shape \(96,\)"),
    ({"sample_weight": np.full(96, np.inf)}, ValueError, r"^sample_weight: expected finite values"),
    ({"sample_weight": np.zeros(96)}, ValueError, r"^sample_weight: every training sample's weight is zero"),
    ({"sample_weight": ["a"] * 96}, TypeError, r"^sample_weight: expected real numbers"),
    ({"sample_weight": np.r_[np.ones(72), np.zeros(24)], "validation_split": 0.25}, ValueError,
     r"^validation_split: the 24 held-out samples all weigh 0"),
    ({"class_weight": "even"}, ValueError, r"^class_weight: expected 'balanced' or a dict"),
    ({"class_weight": [1, 2, 3]}, TypeError, r"^class_weight: expected 'balanced' or a dict"),
    ({"class_weight": {3: 1.0}}, ValueError, r"^class_weight: classes are 0\.\.2, got the key 3"),
    ({"class_weight": {"a": 1.0}}, ValueError, r"^class_weight: classes are 0\.\.2, got the key 'a'"),
    ({"class_weight": {0: -1.0}}, ValueError, r"^class_weight\[0\]: expected a number in \[0, inf\)"),
    ({"validation_data": (1, 2, 3, 4)}, TypeError, r"^validation_data: expected a pair"),
    ({"class_weight": {0: 0.0, 1: 0.0, 2: 0.0}}, ValueError, r"^class_weight: every training sample's weight is zero"),
    ({"sample_weight": np.full(96, 1e300), "class_weight": {0: 1e10}}, ValueError,
     r"^sample_weight × class_weight: expected finite values"),
    ({"sample_weight": 1e309}, ValueError, r"^sample_weight: expected finite values"),
    ({"validation_data": (np.zeros((2, 4)), [0, 1]), "class_weight": {0: 0.0, 1: 0.0}}, ValueError,
     r"^validation_data: every sample's weight is zero"),
])
def test_bad_weights_are_refused_before_anything_runs(kwargs, error, message):
    X, y = problem("cross_entropy")
    net = network("cross_entropy")
    before = net.params.copy()
    with pytest.raises(error, match=message):
        net.fit(X, y, epochs=1, **kwargs)
    assert np.array_equal(net.params, before)


def test_class_weight_needs_a_classifier():
    X, y = problem("mse")
    with pytest.raises(ValueError, match=r"^class_weight: only for a cross_entropy classifier"):
        network("mse").fit(X, y, class_weight="balanced")
    X, y = problem("binary_cross_entropy")
    with pytest.raises(ValueError, match=r"^class_weight: only for .* 3 outputs"):
        network("binary_cross_entropy").fit(X, y, class_weight="balanced")


def test_the_engine_refuses_bad_weights_itself():
    """The binding checks what Python already checked: a negative weight never reaches a step."""
    X, y = problem("mse")
    net = network("mse")
    config = fm.SGD()._config()
    with pytest.raises(ValueError, match="sample weights must be finite and >= 0"):
        net._core.fit(np.ascontiguousarray(X), np.ascontiguousarray(y), 1, 0, False, "mse", 1.0, config, None,
                      False, False, 0, -np.ones(len(X)))
    with pytest.raises(ValueError, match=r"sample_weight: expected 96 weights"):
        net._core.fit(np.ascontiguousarray(X), np.ascontiguousarray(y), 1, 0, False, "mse", 1.0, config, None,
                      False, False, 0, np.ones(3))


@pytest.mark.parametrize("name", LOSSES)
def test_tiny_float32_weights_weigh_as_their_ratios(name):
    """Σ w below float32's smallest normal: 1 / Σ w overflows float32, but each row's
    factor w_i / Σ w is formed in double first."""
    pred, target, weight = loss_case(name, (33, 3), np.float32)
    tiny = (weight.astype(np.float64) * 2.0**-140).astype(np.float32)  # subnormal: Σ w · O < 2 / float32 max
    grad = kernels.loss_backward(name, pred, target, weight=tiny)
    assert np.isfinite(grad).all()
    assert_close(grad, kernels.loss_backward(name, pred, target, weight=tiny.astype(np.float64) * 2.0**140),
                 rtol=1e-5, atol=1e-6 * float(np.abs(grad).max(initial=0)), what=f"{name} tiny weights")
    assert_close(grad, reference.loss_backward(name, pred, target, weight=tiny), rtol=64 * eps_of(np.float32),
                 atol=1e-6 * float(np.abs(grad).max(initial=0)), what=f"{name} twin")


def test_weights_that_overflow_float32_are_named():
    X, y = problem("cross_entropy")
    net = network("cross_entropy", dtype="float32")
    with pytest.raises(ValueError, match=r"^class_weight: \d+ values overflow float32"):
        net.fit(X, y, class_weight={0: 1e39})
    with pytest.raises(ValueError, match=r"^sample_weight: 96 values overflow float32"):
        net.fit(X, y, sample_weight=1e39)


def test_class_weight_weighs_validation_data_as_the_split():
    """The held-out samples carry their class's weight whether they come from
    validation_split or validation_data."""
    X, y = problem("cross_entropy")
    weights = {0: 3.0, 1: 0.5}
    split, given = network("cross_entropy"), network("cross_entropy")
    a = split.fit(X, y, epochs=2, class_weight=weights, validation_split=0.25)
    b = given.fit(X[:72], y[:72], epochs=2, class_weight=weights, validation_data=(X[72:], y[72:]))
    assert np.array_equal(split.params, given.params)
    assert a["val_loss"] == b["val_loss"]


def test_balanced_counts_only_the_training_samples():
    """validation_split holds out the last rows: "balanced" must count the classes of
    the rows that train, not of the held-out ones."""
    X, _ = problem("cross_entropy", n=40)
    y = np.r_[np.arange(20) % 2, np.zeros(20, int)]  # training half balanced, held-out half all class 0
    y3 = np.where(y == 1, 1, 0)
    a, b = (fm.Network([4, 8, 2], loss="cross_entropy", dtype="float64", seed=1) for _ in range(2))
    a.fit(X, y3, epochs=2, validation_split=0.5, class_weight="balanced")
    b.fit(X, y3, epochs=2, validation_split=0.5)  # balanced training rows: weights all 1
    assert np.array_equal(a.params, b.params)


@pytest.mark.parametrize("scale", [1e307, 2.0**-1070, 1e-300])
def test_extreme_weights_weigh_as_their_ratios(scale):
    """Weights only matter relative to each other: huge or subnormal ones fit, evaluate
    and score as moderate ones do."""
    X, y = problem("mse")
    w = np.random.default_rng(11).integers(1, 4, len(X)).astype(float)
    moderate, extreme = network("mse"), network("mse")
    moderate.fit(X, y, epochs=2, batch_size=16, sample_weight=w)
    extreme.fit(X, y, epochs=2, batch_size=16, sample_weight=w * scale)
    assert_close(extreme.params, moderate.params, rtol=1e-12, atol=1e-14, what="params")
    assert extreme.score(X, y, sample_weight=w * scale) == pytest.approx(moderate.score(X, y, sample_weight=w), rel=1e-12)
    assert extreme.evaluate(X, y, sample_weight=w * scale)["loss"] == pytest.approx(
        moderate.evaluate(X, y, sample_weight=w)["loss"], rel=1e-12)


def test_a_power_of_two_times_the_weights_is_the_same_fit_bit_for_bit():
    X, y = problem("cross_entropy")
    w = np.random.default_rng(12).uniform(0.1, 3, len(X))
    a, b = network("cross_entropy"), network("cross_entropy")
    a.fit(X, y, epochs=2, batch_size=16, sample_weight=w)
    b.fit(X, y, epochs=2, batch_size=16, sample_weight=w * 2.0**600)
    assert np.array_equal(a.params, b.params)
