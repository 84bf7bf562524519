"""Deep networks (issue 11): the architecture as data, residual blocks, layer and
batch norm, dropout and gradient checkpointing, in the engine, against the NumPy
twin of the layer list (fastmlp.reference.LayerNetwork)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import reference

# (layer_sizes, keyword arguments): the shapes the engine's stages take.
CONFIGS = {
    "plain": ([3, 7, 7, 2], dict(activation="tanh")),
    "residual": ([3, 7, 7, 7, 2], dict(activation="tanh", residual=True)),
    "layer-norm": ([5, 33, 33, 1], dict(activation="gelu", norm="layer")),
    "batch-norm": ([4, 7, 7, 3], dict(activation="sigmoid", norm="batch")),
    "dropout": ([3, 8, 8, 2], dict(activation="tanh", dropout=0.25)),
    "all": ([6, 7, 7, 7, 3], dict(activation="swish", residual=True, norm="layer", dropout=0.2)),
    "all-batch": ([6, 7, 7, 7, 3], dict(activation="tanh", residual=True, norm="batch", dropout=0.1)),
    "width-1": ([1, 1, 1, 1], dict(activation="relu", residual=True, norm="layer")),
}


def make(name, dtype="float64", seed=3):
    sizes, kwargs = CONFIGS[name]
    net = fm.Network(sizes, dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    for b in net.biases:  # non-zero biases: no relu kink sits at exactly zero
        b[...] = rng.uniform(-0.3, 0.3, b.shape)
    for g, b in zip(net.norm_gains, net.norm_biases):
        g[...] = rng.uniform(0.5, 1.5, g.shape)
        b[...] = rng.uniform(-0.3, 0.3, b.shape)
    return net


def data(net, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, net.n_inputs)).astype(net.dtype)
    y = rng.standard_normal((n, net.n_outputs)).astype(net.dtype)
    return X, y


def assert_close(actual, expected, dtype):
    """Elementwise within a few roundings of the array's largest value (a float32 gradient
    of size 100 is only as exact as 100 · eps)."""
    eps = float(np.finfo(dtype).eps)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=64 * eps, atol=64 * eps * scale)


# ---- the architecture as data ----------------------------------------------------------------


def test_the_shorthand_expands_to_blocks_with_skips_where_widths_agree():
    net = fm.Network([4, 8, 8, 3], "relu", residual=True, norm="layer", dropout=0.1, seed=0)
    arch = net.architecture
    assert [layer["type"] for layer in arch] == ["dense", "layer_norm", "activation", "dropout", "residual",
                                                 "layer_norm", "dense"]  # a final norm after residual blocks
    assert [layer["type"] for layer in arch[4]["block"]] == ["dense", "layer_norm", "activation", "dropout"]
    assert arch[0] == {"type": "dense", "inputs": 4, "outputs": 8, "init": "he_normal"}
    assert arch[1] == {"type": "layer_norm", "width": 8, "eps": 1e-5}
    assert net.layer_sizes == (4, 8, 8, 3) and net.activations == ("relu", "relu", "linear")
    assert [layer["type"] for layer in fm.Network([4, 8, 8, 3], "relu", norm="layer").architecture] == [
        "dense", "layer_norm", "activation", "dense", "layer_norm", "activation", "dense"]  # no residual: no final norm
    batch = fm.Network([2, 5, 1], "tanh", norm="batch", seed=0).architecture
    assert batch[1] == {"type": "batch_norm", "width": 5, "eps": 1e-5, "momentum": 0.1}
    assert batch[0]["init"] == "xavier_normal"  # "auto" for a tanh block


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_architecture_with_the_same_seed_gives_the_same_network(name, dtype):
    sizes, kwargs = CONFIGS[name]
    net = fm.Network(sizes, dtype=dtype, seed=11, **kwargs)
    spec = json.loads(json.dumps(net.architecture))  # plain JSON
    twin = fm.Network.from_architecture(spec, dtype=dtype, seed=11)
    assert twin.architecture == net.architecture
    np.testing.assert_array_equal(twin.params, net.params)
    np.testing.assert_array_equal(twin.state, net.state)
    assert repr(twin) == repr(net)


def test_a_plain_network_keeps_its_initial_weights():
    # The layer list draws the dense layers' weights in the old order: same seed, same weights.
    net = fm.Network([3, 16, 8, 2], "relu", seed=5, dtype="float64")
    twin = reference.Network([3, 16, 8, 2], ["relu", "relu", "linear"], "float64", seed=5)
    np.testing.assert_array_equal(net.params, twin.params)


def test_norm_parameters_and_running_statistics_are_views():
    net = fm.Network([3, 4, 4, 1], "relu", norm="batch", seed=0, dtype="float64")
    assert len(net.norm_gains) == 2 and len(net.running_means) == 2
    assert all((g == 1).all() for g in net.norm_gains) and all((b == 0).all() for b in net.norm_biases)
    assert all((m == 0).all() for m in net.running_means) and all((v == 1).all() for v in net.running_vars)
    X, _ = data(net, 6)
    before = net.predict(X)
    net.norm_biases[0] = np.full(4, 0.5)
    assert not np.array_equal(net.predict(X), before)
    net.running_vars[1][...] = 4.0
    assert (net.state[-4:] == 4.0).all()
    with pytest.raises(ValueError, match=r"expected shape \(4,\)"):
        net.norm_gains[0] = np.ones(5)


BAD_ARCHITECTURES = [
    ([], ValueError, r"^architecture: the layer list is empty"),
    ("dense", TypeError, r"^architecture: expected a list of layer dicts"),
    ([{"type": "conv"}], ValueError, r"^architecture\[0\] type: expected one of"),
    ([{"type": "dense", "inputs": 2}], ValueError, r"^architecture\[0\]: a dense layer needs 'outputs'"),
    ([{"type": "dense", "inputs": 2, "outputs": 3, "bias": False}], ValueError, r"unknown keys \['bias'\]"),
    ([{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "dense", "inputs": 4, "outputs": 1}], ValueError,
     r"^architecture\[1\]: the dense layer takes 4 inputs but the layer before gives 3"),
    ([{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "layer_norm", "width": 2}], ValueError,
     r"^architecture\[1\]: the layer_norm layer has width 2"),
    ([{"type": "dense", "inputs": 2, "outputs": 3},
      {"type": "residual", "block": [{"type": "dense", "inputs": 3, "outputs": 4}]}], ValueError,
     r"^architecture\[1\]: the residual block maps width 3 to 4"),
    ([{"type": "dense", "inputs": 2, "outputs": 2},
      {"type": "residual", "block": [{"type": "residual", "block": [{"type": "activation", "name": "relu"}]}]}],
     ValueError, r"residual blocks do not nest"),
    ([{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "dropout", "p": 1.0}], ValueError,
     r"^architecture\[1\] p: expected a number in \[0, 1\)"),
    ([{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "batch_norm", "momentum": 0}], ValueError,
     r"^architecture\[1\] momentum"),
    ([{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "layer_norm", "eps": -1}], ValueError,
     r"^architecture\[1\] eps"),
    ([{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "activation", "name": "softplus"}], ValueError,
     r"^architecture\[1\] name: expected one of"),
    ([{"type": "activation", "name": "relu"}], ValueError, r"a first activation layer has no width"),
    ([{"type": "layer_norm", "width": 3}], ValueError, r"no dense layer"),
    ([{"type": "dense", "inputs": 2, "outputs": 3, "init": "zeros"}], ValueError, r"^architecture\[0\] init: expected one of"),
]


@pytest.mark.parametrize("spec, error, message", BAD_ARCHITECTURES)
def test_a_bad_architecture_is_refused_naming_the_entry(spec, error, message):
    with pytest.raises(error, match=message):
        fm.Network.from_architecture(spec)


def test_a_classifier_must_end_with_a_linear_dense_layer():
    spec = [{"type": "dense", "inputs": 2, "outputs": 3}, {"type": "activation", "name": "sigmoid"}]
    with pytest.raises(ValueError, match=r"must end with a linear dense layer"):
        fm.Network.from_architecture(spec, loss="cross_entropy")


def test_shorthand_arguments_are_checked():
    with pytest.raises(ValueError, match=r"^norm: expected one of"):
        fm.Network([2, 3, 1], norm="group")
    with pytest.raises(ValueError, match=r"^dropout:"):
        fm.Network([2, 3, 1], dropout=1.0)
    with pytest.raises(TypeError, match=r"^residual: expected True or False"):
        fm.Network([2, 3, 1], residual="yes")


# ---- the engine against its twin ------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("batch", [2, 7, 33, 257])
def test_forward_and_backward_match_the_twin(name, dtype, threads, batch, restore_num_threads):
    net = make(name, dtype)
    X, y = data(net, batch)
    twin = reference.LayerNetwork.from_network(net)  # the same generator state: the same masks
    fm.set_num_threads(threads)
    out = net.forward(X)
    assert_close(out, twin.forward(X), dtype)
    d = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    net.backward_output(X, d)
    assert_close(net.grads, twin.backward_output(d), dtype)
    assert_close(net.state, twin.state, dtype)  # the running statistics moved alike
    assert_close(net.predict(X), twin.predict(X), dtype)


def test_strided_input_is_read_as_its_values():
    net = make("all", "float32")
    X, _ = data(net, 40)
    wide = np.zeros((40, 2 * net.n_inputs), dtype=np.float32)
    wide[:, ::2] = X
    np.testing.assert_array_equal(net.predict(wide[:, ::2]), net.predict(X))


@pytest.mark.parametrize("name", ["residual", "layer-norm", "batch-norm", "dropout", "all", "all-batch"])
def test_gradients_pass_finite_differences_in_float64(name):
    net = make(name, "float64")
    X, y = data(net, 6)
    # floor: a bias right before batch norm has a zero gradient (the norm removes it),
    # whose finite difference is rounding, up to ~1e-11
    result = fm.gradient_check(net, X, y, floor=1e-5)
    assert result.max_rel_error < 1e-6, result


# ---- modes: training and eval ------------------------------------------------------------------


def test_dropout_draws_fresh_masks_in_training_and_none_in_eval():
    net = make("dropout", "float64")
    X, _ = data(net, 16)
    assert not np.array_equal(net.forward(X), net.forward(X))  # fresh masks each call
    np.testing.assert_array_equal(net.predict(X), net.predict(X))
    plain = fm.Network.from_architecture([layer for layer in net.architecture if layer["type"] != "dropout"],
                                         dtype="float64")
    plain.params[...] = net.params
    np.testing.assert_array_equal(plain.predict(X), net.predict(X))  # eval: dropout is the identity


def test_the_same_seed_draws_the_same_masks_at_any_thread_count(restore_num_threads):
    fits = []
    for threads in (1, 2, 1):
        net = fm.Network([8, 64, 64, 2], "relu", dropout=0.3, residual=True, seed=4)
        X, y = data(net, 256)
        fm.set_num_threads(threads)
        net.fit(X, y, epochs=3, batch_size=128, optimizer=fm.Adam(lr=1e-3))
        fits.append(net.params.copy())
    np.testing.assert_array_equal(fits[0], fits[1])
    np.testing.assert_array_equal(fits[0], fits[2])


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    net = make("batch-norm", "float64")
    X, y = data(net, 32)
    twin = reference.LayerNetwork.from_network(net)
    net.fit(X, y, epochs=4, batch_size=8, shuffle=False, optimizer=fm.SGD(lr=0.05))
    # the twin's fit: batch after batch, forward (moves the statistics) and an SGD step
    for _ in range(4):
        for start in range(0, 32, 8):
            out = twin.forward(X[start:start + 8])
            grads = twin.backward_output(reference.loss_backward("mse", out, y[start:start + 8]))
            twin.params -= 0.05 * grads
    np.testing.assert_allclose(net.state, twin.state, rtol=1e-10)
    np.testing.assert_allclose(net.predict(X), twin.predict(X), rtol=1e-9, atol=1e-12)
    assert not np.allclose(net.predict(X[:8]), net.forward(X[:8]))  # eval differs from training


def test_batch_norm_refuses_a_training_batch_of_one():
    net = fm.Network([2, 4, 1], norm="batch", seed=0)
    X = np.ones((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"batch norm in training needs at least 2 samples"):
        net.forward(X[:1])
    with pytest.raises(ValueError, match=r"batches of 2 leave a batch of 1"):
        net.fit(X, X[:, :1], batch_size=2)
    net.fit(X[:4], X[:4, :1], batch_size=2)
    assert net.predict(X[:1]).shape == (1, 1)  # eval mode takes one sample


# ---- gradient checkpointing ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "residual", "layer-norm", "batch-norm", "dropout", "all", "all-batch"])
@pytest.mark.parametrize("checkpoint", [1, 2, 3, "sqrt"])
def test_checkpointing_gives_bit_identical_fits(name, checkpoint):
    results = []
    for k in (None, checkpoint):
        net = make(name, "float32", seed=9)
        X, y = data(net, 96)
        history = net.fit(X, y, epochs=3, batch_size=32, optimizer=fm.Adam(lr=1e-2), checkpoint=k,
                          record_layer_norms=True)
        results.append((net.params.copy(), net.state.copy(), history.history))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]


def test_checkpointing_with_two_pieces_on_two_threads_is_bit_identical(restore_num_threads):
    # Batches of 128 run as two pieces at once, one per thread, each in its own segment;
    # the widths differ from segment to segment, so they share scratch of several widths.
    fm.set_num_threads(2)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 8)), rng.standard_normal((256, 1))
    fits = []
    for k in (None,) + (2, 1, 3, "sqrt") * 3:
        net = fm.Network([8, 64, 16, 16, 64, 64, 1], "tanh", dtype="float64", seed=0)
        net.fit(X, y, epochs=3, batch_size=128, optimizer=fm.SGD(lr=0.05), checkpoint=k)
        fits.append(net.params.copy())
    for params in fits[1:]:
        np.testing.assert_array_equal(params, fits[0])


def test_checkpointing_a_deep_network_saves_most_of_its_activation_memory():
    net = fm.Network([64] + [128] * 32 + [1], "relu", seed=0)
    full, sqrt = net.activation_memory(256), net.activation_memory(256, "sqrt")
    assert sqrt < full / 2
    assert net.activation_memory(256, 1) >= sqrt  # every block kept: no scratch saved
    assert net._core.sqrt_checkpoint == 6  # ⌈√33⌉ blocks


def test_checkpoint_argument_is_checked():
    net = fm.Network([2, 3, 1], seed=0)
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match=r"^checkpoint: expected None, a positive integer or 'sqrt'"):
        net.fit(X, X[:, :1], checkpoint="log")
    with pytest.raises(ValueError, match=r"^checkpoint: expected an integer >= 1"):
        net.fit(X, X[:, :1], checkpoint=0)


# ---- copies ------------------------------------------------------------------------------------


def test_pickle_and_copy_keep_the_layers_and_the_running_statistics():
    net = make("all-batch", "float32")
    X, y = data(net, 64)
    net.fit(X, y, epochs=2, batch_size=16)
    for clone in (pickle.loads(pickle.dumps(net)), net.copy(), net.astype("float64").astype("float32")):
        assert clone.architecture == net.architecture
        np.testing.assert_array_equal(clone.state, net.state)
        np.testing.assert_array_equal(clone.predict(X), net.predict(X))
    # and training goes on alike (the generator state travels: the same masks and shuffles)
    clone = pickle.loads(pickle.dumps(net))
    net.fit(X, y, epochs=2, batch_size=16)
    clone.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(clone.params, net.params)


def test_the_final_norm_gives_the_output_layer_unit_scale_features():
    # 20 relu blocks add ~0.4 each to the stream's mean; the final norm takes it back to 0
    net = fm.Network([8] + [64] * 20 + [1], "relu", residual=True, norm="layer", seed=0, dtype="float64")
    X = np.random.default_rng(0).uniform(-1, 1, (256, 8))
    net.forward(X)
    stream = net._core.cache(len(net._layers) - 3)[1]  # the last residual block's output
    final = net._core.cache(len(net._layers) - 2)[1]  # after the final layer norm
    assert 6 < stream.mean() < 10
    assert abs(final.mean()) < 1e-6 and abs(final.std() - 1) < 1e-3
    assert net.diagnose(X, (X**2).sum(axis=1)).verdicts == ["ok"] * 21


def test_a_network_may_start_with_a_residual_block_of_any_layer():
    for first in ({"type": "layer_norm", "width": 4}, {"type": "activation", "name": "tanh"}):
        spec = [{"type": "residual", "block": [first, {"type": "dense", "inputs": 4, "outputs": 4}]},
                {"type": "dense", "inputs": 4, "outputs": 1}]
        net = fm.Network.from_architecture(spec, dtype="float64", seed=0)
        assert net.n_inputs == 4 and net.architecture[0]["block"][0]["type"] == first["type"]
        X, y = data(net, 5)
        assert fm.gradient_check(net, X, y).max_rel_error < 1e-6
        np.testing.assert_array_equal(net.copy().predict(X), net.predict(X))


def test_a_failed_fit_leaves_the_running_statistics_of_its_last_finite_step():
    net = fm.Network([4, 16, 16, 1], "relu", norm="batch", seed=0)
    X, y = data(net, 64)
    with pytest.raises(FloatingPointError):
        net.fit(X, y * 1e3, epochs=50, batch_size=16, optimizer=fm.SGD(lr=10.0))
    assert np.isfinite(net.state).all() and np.isfinite(net.params).all()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net)).state, net.state)


def test_diagnose_leaves_the_network_as_it_was():
    net = make("all-batch", "float32")
    X, y = data(net, 32)
    before = (net.predict(X), net.state.copy(), pickle.dumps(net))
    net.diagnose(X, y)
    np.testing.assert_array_equal(net.predict(X), before[0])
    np.testing.assert_array_equal(net.state, before[1])
    assert pickle.dumps(net) == before[2]  # the generator too: the next fit draws the same masks


def test_a_pickle_of_the_layer_sizes_form_still_loads():
    # What Network.__reduce__ gave before the layer list: (sizes, settings, dtype, params, optimizer, rng).
    from fastmlp.network import _rebuild

    net = fm.Network([3, 5, 2], "tanh", seed=7, dtype="float64")
    params, optimizer_state, rng, _ = net._snapshot()
    settings = {"activation": ["tanh"], "output_activation": "linear", "loss": "mse", "huber_delta": 1.0,
                "init": ["xavier_normal", "he_normal"], "seed": 7}
    old = _rebuild((3, 5, 2), settings, "float64", params, optimizer_state, rng)
    assert old.architecture == net.architecture
    np.testing.assert_array_equal(old.params, net.params)


def test_layer_norms_are_recorded_per_dense_layer():
    net = make("all", "float32")
    X, y = data(net, 32)
    history = net.fit(X, y, epochs=2, record_layer_norms=True)
    assert len(history["layer_grad_norms"][0]) == len(net.weights) == 4
