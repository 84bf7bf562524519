"""Network.diagnose: the per-layer report names the article's failures (vanishing and
exploding gradients, dead ReLUs, saturated sigmoids) where they are, and "ok" where
they are not; its figures are the norms and statistics it says they are."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import diagnosis


def _data(n_inputs=16, n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_inputs))
    y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((n, 1))
    return X, y


def _deep(activation, depth=20, width=64, dtype="float64", seed=0):
    return fm.Network([16] + [width] * depth + [1], activation=activation, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_deep_sigmoid_network_vanishes_from_its_first_layers(dtype):
    X, y = _data()
    report = _deep("sigmoid", dtype=dtype).diagnose(X, y)
    assert report.verdicts[:10] == ["vanishing"] * 10, report
    assert report.verdicts[-1] == "ok"
    norms = [r.grad_norm for r in report.layers]
    assert norms[0] < 1e-6 * norms[-2]  # shrinks by ~4× a layer toward the input


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_a_deep_network_with_a_fitting_init_is_ok(activation):
    X, y = _data()
    report = _deep(activation).diagnose(X, y)
    assert report.verdicts == ["ok"] * 21, report


def test_weights_three_times_too_large_explode():
    X, y = _data()
    net = _deep("relu")
    for w in net.weights:
        w *= 3.0
    report = net.diagnose(X, y)
    assert set(report.verdicts[:-1]) == {"exploding"}, report


def test_a_non_finite_gradient_is_exploding():
    X, y = _data()
    net = _deep("relu", depth=3)
    net.weights[1][0, 0] = 1e300
    report = net.diagnose(X, y)
    assert "exploding" in report.verdicts
    assert any(not math.isfinite(r.grad_norm) for r in report.layers)


def test_relus_that_never_fire_are_dead():
    X, y = _data()
    net = _deep("relu", depth=3)
    net.biases[0][:] = -100.0  # every unit of the first hidden layer below zero for every sample
    report = net.diagnose(X, y)
    assert report.layers[0].dead == 1.0 and report.verdicts[0] == "dead"
    assert report.layers[0].grad_norm == 0.0


def test_sigmoids_driven_far_from_zero_are_saturated():
    X, y = _data()
    net = fm.Network([16, 32, 1], activation="sigmoid", dtype="float64", seed=0)
    net.weights[0][:] *= 50.0
    report = net.diagnose(X, y)
    assert report.layers[0].saturated > 0.5 and report.verdicts[0] == "saturated"


def test_the_figures_are_what_they_say():
    X, y = _data()
    net = fm.Network([16, 8, 4, 1], activation="relu", dtype="float64", seed=3)
    params = net.params.copy()
    report = net.diagnose(X, y)
    np.testing.assert_array_equal(net.params, params)  # no update
    twin = fm.Network([16, 8, 4, 1], activation="relu", dtype="float64", seed=3)
    grads_w, _ = twin.backward(X, y, twin.forward(X))
    for layer, r in enumerate(report.layers):
        z, a = twin.layer_cache(layer)
        assert r.shape == (net.layer_sizes[layer], net.layer_sizes[layer + 1])
        assert r.weight_norm == pytest.approx(np.linalg.norm(net.weights[layer]))
        assert r.grad_norm == pytest.approx(np.linalg.norm(grads_w[layer]))
        assert r.grad_ratio == pytest.approx(r.grad_norm / r.weight_norm)
        assert r.activation_mean == pytest.approx(a.mean())
        assert r.activation_std == pytest.approx(a.std())
        if r.activation == "relu":
            assert r.dead == pytest.approx(np.mean(np.all(z <= 0, axis=0)))
        else:
            assert r.dead is None and r.saturated is None
    assert report.n_samples == 256 and report.loss == net.loss


def test_the_report_prints_converts_and_plots():
    X, y = _data()
    report = _deep("sigmoid", depth=4).diagnose(X, y)
    text = str(report)
    assert text.splitlines()[0].split()[:3] == ["layer", "shape", "activation"]
    assert len(text.splitlines()) == 1 + 5 and "16→64" in text
    assert repr(report).startswith("Diagnosis(5 layers:")
    data = report.to_dict()
    assert [row["verdict"] for row in data["layers"]] == report.verdicts
    assert data["thresholds"] == diagnosis.THRESHOLDS
    pytest.importorskip("matplotlib")
    ax = report.plot(label="sigmoid")
    assert ax.get_yscale() == "log" and len(ax.lines) == 1


def test_bad_input_is_refused_as_forward_refuses_it():
    net = fm.Network([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="X"):
        net.diagnose(np.ones((5, 3)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="y"):
        net.diagnose(np.ones((5, 4)), np.ones((4, 1)))


def test_a_fit_whose_gradient_overflows_names_the_layer_where_it_did():
    # Linear [1, 1, 1, 1] in float32 with weights 1e-30, 1e20, 1e20: the forward pass and the
    # loss stay finite (output 1e10), and backpropagation multiplies by 1e20 twice: the
    # gradient reaching layer 0 is 2e50, beyond float32, while layers 1 and 2 are finite.
    net = fm.Network([1, 1, 1, 1], activation="linear", dtype="float32", seed=0)
    for w, value in zip(net.weights, (1e-30, 1e20, 1e20)):
        w[:] = value
    for b in net.biases:
        b[:] = 0.0
    params = net.params.copy()
    with pytest.raises(FloatingPointError, match=r"the gradient became non-finite .*first at layer 0 \(1→1\)") as caught:
        net.fit(np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32), epochs=1, optimizer=fm.SGD(lr=0.1))
    assert caught.value.layer == 0
    np.testing.assert_array_equal(net.params, params)


def test_a_fit_whose_loss_overflows_names_no_layer():
    net = fm.Network([1, 1, 1], activation="linear", dtype="float32", seed=0)
    for w in net.weights:
        w[:] = 1e20
    with pytest.raises(FloatingPointError, match="the loss became non-finite") as caught:
        net.fit(np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32), epochs=1)
    assert caught.value.layer is None and "first at layer" not in str(caught.value)


# ---- per-layer gradient norms recorded by fit -------------------------------------------------


def test_recorded_layer_norms_are_the_gradient_of_each_layer():
    X, y = _data(n=64)
    net = fm.Network([16, 32, 8, 1], activation="tanh", dtype="float64", seed=1)
    twin = net.copy()
    history = net.fit(X, y, epochs=1, optimizer=fm.SGD(lr=0.01), record_layer_norms=True)  # one full-batch step
    grads_w, grads_b = twin.backward(X, y, twin.forward(X))
    expected = [math.hypot(np.linalg.norm(w), np.linalg.norm(b)) for w, b in zip(grads_w, grads_b)]
    (recorded,) = history["layer_grad_norms"]
    assert recorded == pytest.approx(expected, rel=1e-12)
    assert math.sqrt(sum(r * r for r in recorded)) == pytest.approx(history["grad_norm"][0], rel=1e-12)


def test_recorded_layer_norms_average_the_epochs_updates_and_ignore_threads(restore_num_threads):
    X, y = _data(n=200)
    runs = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        net = fm.Network([16, 64, 64, 1], activation="relu", dtype="float32", seed=2)
        runs.append(net.fit(X, y, epochs=3, batch_size=32, record_layer_norms=True)["layer_grad_norms"])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 3 and all(len(epoch) == 3 and all(v > 0 for v in epoch) for epoch in runs[0])


def test_layer_norms_are_recorded_only_when_asked_and_never_printed(capsys):
    X, y = _data(n=32)
    net = fm.Network([16, 8, 1], seed=0)
    assert "layer_grad_norms" not in net.fit(X, y, epochs=2).history
    net.fit(X, y, epochs=1, verbose=1, record_layer_norms=True)
    assert "layer_grad_norms" not in capsys.readouterr().out
    with pytest.raises(TypeError, match="record_layer_norms"):
        net.fit(X, y, record_layer_norms="yes")
