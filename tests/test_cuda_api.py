"""The Python side of the CUDA backend: ``Network(..., device=...)``, ``net.to``,
``net.device``, copies on access, ``fastmlp info``.

Three kinds of test:
- what runs everywhere (CI has no GPU): the device's validation, the error a
  network gets from device="cuda" where this build or machine cannot use a GPU,
  ``fastmlp info``'s CUDA lines;
- the same, on a stand-in for the device (``FakeDevice``, below): a second
  engine network plays the GPU's buffers, so that a place in network.py that
  reads the host's buffers without bringing them up to date first, or writes
  them without saying so, shows as a difference from the same work on the CPU;
- on a real GPU (marker ``cuda``; skipped without one, see conftest.py): fit,
  predict and evaluate there against the CPU, within float32's (or float64's)
  rounding.
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core, cli
from test_distributed import OneRank  # the single-process communicator


def make_data(n=64, inputs=3, outputs=2, dtype=np.float32, seed=0, classes=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, inputs)).astype(dtype)
    if classes is not None:
        return X, rng.integers(0, classes, size=n)
    y = np.tanh(X @ rng.standard_normal((inputs, outputs))).astype(dtype)
    return X, y


# ---- everywhere ---------------------------------------------------------------------------


def gpu_usable() -> bool:
    info = _core.cuda_info()
    return bool(info["built"] and info["devices"] and not info["error"])


def test_a_network_is_on_the_cpu_by_default():
    net = fm.Network([3, 4, 2], seed=0)
    assert net.device == "cpu"
    assert fm.Network.from_architecture(net.architecture, seed=0).device == "cpu"
    assert "device" not in repr(net)  # the CPU's repr is as before
    assert net.to("cpu") is net and net.device == "cpu"
    assert fm.Network([3, 4, 2], seed=0, device="cpu").device == "cpu"


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:0", ""])
def test_an_unknown_device_is_refused_naming_the_choices(device):
    with pytest.raises(ValueError, match=r"device: expected one of cpu, cuda"):
        fm.Network([3, 4, 2], device=device)
    with pytest.raises(ValueError, match=r"device: expected one of cpu, cuda"):
        fm.Network.from_architecture(fm.Network([3, 2]).architecture, device=device)
    net = fm.Network([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"device: expected one of cpu, cuda"):
        net.to(device)
    assert net.device == "cpu"


def test_a_device_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="device"):
        fm.Network([3, 4, 2], device=None)
    with pytest.raises(TypeError, match="device"):
        fm.Network([3, 4, 2]).to(0)


@pytest.mark.skipif(gpu_usable(), reason="a GPU can be used here")
def test_cuda_without_a_gpu_says_why_and_leaves_the_network_on_the_cpu():
    info = _core.cuda_info()
    expected = r"built without CUDA.*FASTMLP_CUDA=ON" if not info["built"] else r"\S"
    with pytest.raises(RuntimeError, match=expected):
        fm.Network([3, 4, 2], device="cuda")
    with pytest.raises(RuntimeError, match=expected):
        fm.Network.from_architecture(fm.Network([3, 2]).architecture, device="cuda")
    net = fm.Network([3, 4, 2], seed=0)
    before = net.predict(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match=expected):
        net.to("cuda")
    assert net.device == "cpu"
    np.testing.assert_array_equal(net.predict(np.ones((2, 3), np.float32)), before)
    assert isinstance(net.params, np.ndarray) and np.shares_memory(net.params, net.weights[0])


def test_cuda_info_has_its_fields():
    info = _core.cuda_info()
    assert set(info) >= {"built", "devices", "name", "capability", "memory", "multiprocessors",
                         "runtime_version", "driver_version", "cublas", "error"}
    assert isinstance(info["built"], bool) and isinstance(info["devices"], int)
    if not info["built"]:
        assert info["devices"] == 0 and info["error"]


def test_info_prints_the_cuda_backend(capsys):
    code = cli.main(["info"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    rows = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines)}
    info = _core.cuda_info()
    if not info["built"]:
        assert rows["cuda"].startswith("not built") and "FASTMLP_CUDA=ON" in rows["cuda"]
    elif not gpu_usable():
        assert rows["cuda"].startswith("built") and "no usable GPU" in rows["cuda"]
    else:
        assert rows["cuda"].startswith("built, runtime ")
        assert info["name"] in rows["gpu"] and f"capability {info['capability']}" in rows["gpu"]
        assert ("cuBLAS" in rows["gpu gemm"]) == bool(info["cublas"])
    # Aligned with the other rows.
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}) == 1


def test_the_cuda_version_as_cuda_writes_it():
    assert cli._cuda_version(13000) == "13.0"
    assert cli._cuda_version(12080) == "12.8"


# ---- on a stand-in for the device ----------------------------------------------------------


class FakeDevice:
    """Stands in for a network handle (``_core.Network32/64``) on a GPU, on a machine
    without one, with the binding's contract: fit, predict and evaluate run on "the
    device", here a second engine network; the host's buffers (what the Network's
    views see) catch up with it only in ``sync_host``, and it takes the host's only
    when they were marked changed (``touch``, or any other method that writes: it runs
    on the host). Stricter than the binding, whose touch syncs first. So a read of the views that forgot ``sync_host`` sees old values, and a
    write that forgot ``touch`` is lost: either shows as a difference from the CPU."""

    _VIEWS = ("params", "grads", "state", "layers", "sqrt_checkpoint", "dtype")
    _READERS = ("snapshot", "cache", "activation_memory", "parameter_count")  # the rest may write

    def __init__(self, net: fm.Network):
        self._host = net._core
        twin = fm.Network.from_architecture(net.architecture, loss=net.loss, dtype=net.dtype, seed=net.seed)
        self._twin = twin  # keeps the device's handle alive
        self._device = twin._core
        self.device = "cpu"
        self.ahead = None  # "host" or "device": whose buffers are newer
        self.data_keys: list[int] = []
        self.released = 0

    @staticmethod
    def _copy(source, target) -> None:
        params, kind, steps, buffers, rng, state = source.snapshot()
        # A config of the same rule and buffer count (SGD keeps one with momentum only).
        momentum = 0.9 if kind == "sgd" and buffers else 0.0
        config = _core.OptimizerConfig(kind=kind, momentum=momentum) if steps or buffers else None
        target.restore(params, config, steps, buffers, *rng, state)
        target.grads[...] = source.grads

    def to_device(self, mask_seed=0):
        self._copy(self._host, self._device)
        self.device, self.ahead = "cuda", None

    def to_host(self):
        self.sync_host()
        self.device = "cpu"

    def sync_host(self):
        if self.ahead == "device":
            self._copy(self._device, self._host)
            self.ahead = None

    def touch(self):
        assert self.device == "cuda"
        self.ahead = "host"

    def release_device_data(self):
        self.released += 1

    def _upload(self):
        if self.ahead == "host":
            self._copy(self._host, self._device)
            self.ahead = None

    def fit(self, *args, data_key=0, **kwargs):
        if self.device == "cpu":
            return self._host.fit(*args, **kwargs)
        assert data_key != 0
        self.data_keys.append(data_key)
        self._upload()
        result = self._device.fit(*args, **kwargs)
        self.ahead = "device"
        return result

    def predict(self, *args):
        if self.device == "cpu":
            return self._host.predict(*args)
        self._upload()
        return self._device.predict(*args)

    def evaluate(self, *args):
        if self.device == "cpu":
            return self._host.evaluate(*args)
        self._upload()
        return self._device.evaluate(*args)

    def __getattr__(self, name):
        found = getattr(self._host, name)
        if name in self._VIEWS or not callable(found) or self.device == "cpu":
            return found

        def on_the_host(*args, **kwargs):  # synced first; its writes marked
            self.sync_host()
            result = found(*args, **kwargs)
            if name not in self._READERS:
                self.ahead = "host"
            return result

        return on_the_host


def on_fake_device(net: fm.Network) -> fm.Network:
    net._core = FakeDevice(net)
    assert net.to("cuda") is net and net.device == "cuda"
    return net


def pair(*args, **kwargs):
    """The same network twice: on the CPU, and on the stand-in device."""
    return fm.Network(*args, **kwargs), on_fake_device(fm.Network(*args, **kwargs))


def assert_same_networks(cpu: fm.Network, other: fm.Network) -> None:
    np.testing.assert_array_equal(other.params, cpu.params)
    np.testing.assert_array_equal(other.state, cpu.state)
    a, b = cpu._snapshot(), other._snapshot()
    assert a[1][1:3] == b[1][1:3] and a[2] == b[2]  # optimizer kind and steps, generator
    for x, y in zip(a[1][3], b[1][3]):
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("options", [
    dict(epochs=5),
    dict(epochs=4, batch_size=10, optimizer=fm.Adam(0.01)),
    dict(epochs=3, batch_size=7, sample_weight="random", optimizer=fm.SGD(0.05, momentum=0.9)),
    dict(epochs=6, batch_size=16, validation_split=0.25, early_stopping=fm.EarlyStopping(patience=2)),
    dict(epochs=5, batch_size=16, on_epoch_end="write"),
])
def test_a_fit_on_the_device_is_the_fit_on_the_cpu(options):
    X, y = make_data()
    if options.get("sample_weight") == "random":
        options = {**options, "sample_weight": np.random.default_rng(1).random(len(X))}
    if options.get("on_epoch_end") == "write":  # a callback that changes the network between epochs
        def shrink(net):
            def callback(epoch, logs):
                net.weights[0] = net.weights[0] * 0.5
            return callback
        cpu, device = pair([3, 8, 2], "tanh", seed=3)
        a = cpu.fit(X, y, **{**options, "on_epoch_end": shrink(cpu)})
        b = device.fit(X, y, **{**options, "on_epoch_end": shrink(device)})
    else:
        cpu, device = pair([3, 8, 2], "tanh", seed=3)
        a, b = cpu.fit(X, y, **options), device.fit(X, y, **options)
    assert a.history == b.history and a.best_epoch == b.best_epoch and a.stopped_epoch == b.stopped_epoch
    assert_same_networks(cpu, device)
    np.testing.assert_array_equal(device.predict(X), cpu.predict(X))
    assert device.evaluate(X, y) == cpu.evaluate(X, y)
    # A second fit continues the first's optimizer state, then a step on the host.
    cpu.fit(X, y, epochs=2, batch_size=9)
    device.fit(X, y, epochs=2, batch_size=9)
    assert_same_networks(cpu, device)
    for net in (cpu, device):
        net.backward(X, y, net.forward(X))
        net.step()
    assert_same_networks(cpu, device)
    np.testing.assert_array_equal(device.predict(X), cpu.predict(X))


def test_one_data_key_per_fit_and_the_data_released_after_it(tmp_path):
    X, y = make_data()
    net = on_fake_device(fm.Network([3, 5, 2], seed=0))
    net.fit(X, y, epochs=6, batch_size=16, checkpoint_every=2, checkpoint_path=tmp_path / "c.npz")
    assert len(net._core.data_keys) == 3 and len(set(net._core.data_keys)) == 1
    assert net._core.released == 1
    net.fit(X, y, epochs=2, verbose=0)
    assert net._core.released == 2


def test_early_stopping_restores_the_best_weights_on_the_device():
    X, y = make_data(n=40)
    X_val, y_val = make_data(n=20, seed=5)
    cpu, device = pair([3, 16, 2], "relu", seed=1)
    options = dict(epochs=30, batch_size=8, optimizer=fm.SGD(0.5), validation_data=(X_val, y_val),
                   early_stopping=fm.EarlyStopping(patience=3, restore_best_weights=True))
    a, b = cpu.fit(X, y, **options), device.fit(X, y, **options)
    assert a.history == b.history and a.best_epoch == b.best_epoch
    assert_same_networks(cpu, device)
    np.testing.assert_array_equal(device.predict(X_val), cpu.predict(X_val))


def test_on_the_device_the_properties_are_copies_and_item_assignment_writes_through():
    cpu, net = pair([3, 4, 2], norm="batch", seed=0)
    X, y = make_data(n=8)
    cpu.fit(X, y, epochs=2)
    net.fit(X, y, epochs=2)
    W, b = np.full_like(cpu.weights[0], 0.25), np.full_like(cpu.biases[1], -0.5)
    cpu.weights[0], cpu.biases[1] = W, b  # the device's are written after a fit (the device ahead)
    net.weights[0], net.biases[1] = W, b
    cpu.fit(X, y, epochs=1)
    net.fit(X, y, epochs=1)
    assert_same_networks(cpu, net)
    held = [cpu.norm_gains, net.norm_gains]  # a list kept across a fit still writes the network's now
    for other in (cpu, net):
        other.fit(X, y, epochs=1)
    for gains in held:
        gains[0] = np.full(4, 1.5)
    for other in (cpu, net):
        other.fit(X, y, epochs=1)
    assert_same_networks(cpu, net)
    for name in ("params", "grads", "state"):
        first, second = getattr(net, name), getattr(net, name)
        assert not np.shares_memory(first, second)
        first[...] = 7
        assert not (getattr(net, name) == 7).all()
    for name in ("weights", "biases", "norm_gains", "norm_biases", "running_means", "running_vars"):
        copies = getattr(net, name)
        copies[0][...] = 5  # changes the copy only
        assert not (getattr(net, name)[0] == 5).all()
    net.weights[0] = W  # writes through: the device's next predict uses it
    np.testing.assert_array_equal(net.weights[0], W)
    copy = net.copy()
    assert copy.device == "cpu"
    np.testing.assert_array_equal(copy.weights[0], W)
    np.testing.assert_array_equal(net.predict(X), copy.predict(X))
    with pytest.raises(ValueError, match="expected shape"):
        net.weights[0] = W[:1]
    with pytest.raises(TypeError, match="one layer at a time"):
        net.weights[0:1] = [W]
    assert isinstance(pickle.loads(pickle.dumps(net.weights)), list)
    grads_w, grads_b = net.backward(X, y, net.forward(X))
    np.testing.assert_array_equal(grads_w[0], net._grad_weights[0])
    assert not np.shares_memory(grads_w[0], net._grad_weights[0])


def test_copies_pickles_and_files_of_a_device_network_are_on_the_cpu(tmp_path):
    X, y = make_data()
    net = on_fake_device(fm.Network([3, 6, 2], seed=2))
    net.fit(X, y, epochs=3, batch_size=10, optimizer=fm.Adam(0.01))
    assert "device='cuda'" in repr(net)
    net.save(tmp_path / "m.npz")
    for other in (net.copy(), net.astype("float64"), pickle.loads(pickle.dumps(net)), fm.load(tmp_path / "m.npz")):
        assert other.device == "cpu"
        np.testing.assert_allclose(other.params, net.params, rtol=1e-6)
    back = fm.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    held = net.weights
    assert net.to("cpu") is net and net.device == "cpu"  # the device's values brought back
    np.testing.assert_array_equal(net.params, back.params)
    assert np.shares_memory(net.params, net.weights[0])
    held[0] = np.zeros_like(held[0])  # a list of copies made on the device still writes the network
    assert not net.weights[0].any()


def overflowing_gradient(net: fm.Network) -> fm.Network:
    """Linear [1, 1, 1, 1] in float32 with weights 1e-30, 1e20, 1e20 (as test_diagnosis.py):
    the forward pass and the loss stay finite, and the gradient reaching layer 0 overflows."""
    for i, value in enumerate((1e-30, 1e20, 1e20)):
        net.weights[i] = np.full((1, 1), value)
        net.biases[i] = np.zeros(1)
    return net


def test_a_non_finite_fit_on_the_device_names_the_layer_as_on_the_cpu():
    X, y = make_data()
    cpu, device = pair([3, 8, 8, 2], seed=0)
    errors = []
    for net in (cpu, device):
        with pytest.raises(FloatingPointError) as caught:
            net.fit(X, y * 1e20, epochs=50, optimizer=fm.SGD(10.0))
        errors.append(caught.value)
    assert str(errors[0]) == str(errors[1]) and errors[0].layer == errors[1].layer
    assert_same_networks(cpu, device)
    # The gradient's overflow: its layer is read from the device's gradient.
    cpu, device = (overflowing_gradient(net) for net in pair([1, 1, 1, 1], activation="linear", seed=0))
    for net in (cpu, device):
        with pytest.raises(FloatingPointError, match=r"the gradient became non-finite .*first at layer 0") as caught:
            net.fit(np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32), epochs=1, optimizer=fm.SGD(0.1))
        assert caught.value.layer == 0
    assert_same_networks(cpu, device)


def test_a_fit_across_ranks_on_the_device_is_refused():
    X, y = make_data()
    net = on_fake_device(fm.Network([3, 4, 2], seed=0))
    with pytest.raises(ValueError, match=r"rank 0: ValueError: comm: training across ranks on device 'cuda'"):
        net.fit(X, y, comm=OneRank())


# ---- on a GPU --------------------------------------------------------------------------------

TOLERANCE = {np.float32: 2e-4, np.float64: 1e-9}


def assert_close(actual, expected, dtype, what=""):
    """Within the dtype's tolerance, relative to the values' scale (near-zero values too)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    rtol = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def gpu_pair(*args, **kwargs):
    return fm.Network(*args, **kwargs), fm.Network(*args, **kwargs, device="cuda")


def assert_fits_agree(cpu, gpu, a, b, dtype, n_samples):
    assert a.epoch == b.epoch and set(a.history) == set(b.history)
    for key in a.history:
        if key.endswith("accuracy"):  # a logit near a tie may fall either way: a sample or two
            np.testing.assert_allclose(b.history[key], a.history[key], atol=2.5 / n_samples)
        else:
            assert_close(b.history[key], a.history[key], dtype, key)
    assert_close(gpu.params, cpu.params, dtype, "params")
    assert_close(gpu.state, cpu.state, dtype, "state")


FITS = [
    pytest.param([4, 16, 3], "mse", dict(epochs=10), id="full-batch-mse"),
    pytest.param([4, 32, 16, 3], "mse", dict(epochs=10, batch_size=13), id="ragged-mini-batches"),
    pytest.param([4, 1, 3], "huber", dict(epochs=10, batch_size=64, optimizer=fm.SGD(0.05, momentum=0.9,
                                                                                    nesterov=True)),
                 id="width-1-huber-nesterov"),
    pytest.param([4, 33, 3], "cross_entropy", dict(epochs=10, batch_size=32, optimizer=fm.Adam(0.003)),
                 id="cross-entropy-adam"),
    pytest.param([4, 7, 1], "binary_cross_entropy",
                 dict(epochs=10, batch_size=20, optimizer=fm.AdamW(0.003, weight_decay=0.01, clip_norm=0.5)),
                 id="bce-adamw-clip-norm"),
    pytest.param([4, 257, 3], "mse",
                 dict(epochs=10, batch_size=50, sample_weight="random",
                      optimizer=fm.SGD(0.02, clip_value=0.1, weight_decay=1e-3,
                                       schedule=fm.schedules.Cosine(total_steps=40))),
                 id="weights-clip-value-cosine"),
    pytest.param([4, 16, 16, 3], "mse", dict(epochs=10, batch_size=25, optimizer=fm.LAMB(0.01)), id="lamb"),
    pytest.param([4, 64, 3], "mse", dict(epochs=10, batch_size=1, shuffle=False), id="batch-of-one"),
]


def use_path(monkeypatch, path: str) -> None:
    """The device fit's path: "fused" where the network allows it (the default), or the
    layer path always (FASTMLP_CUDA_FUSED=0, read at each fit)."""
    if path == "layers":
        monkeypatch.setenv("FASTMLP_CUDA_FUSED", "0")
    else:
        monkeypatch.delenv("FASTMLP_CUDA_FUSED", raising=False)


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["fused", "layers"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes, loss, options", FITS)
def test_gpu_fit_matches_the_cpu(sizes, loss, options, dtype, path, monkeypatch):
    use_path(monkeypatch, path)
    n = 30 if options.get("batch_size") == 1 else 200
    classes = {"cross_entropy": sizes[-1], "binary_cross_entropy": 2}.get(loss)
    X, y = make_data(n=n, inputs=sizes[0], outputs=sizes[-1], dtype=dtype, seed=4, classes=classes)
    if options.get("sample_weight") == "random":
        options = {**options, "sample_weight": np.random.default_rng(2).random(n) * 3}
    cpu, gpu = gpu_pair(sizes, "tanh", loss=loss, dtype=dtype, seed=7)
    batch = min(options.get("batch_size") or n, n)
    if path == "layers":  # the fused path is taken where it fits: every network here fits it
        assert gpu._core.fit_path(batch, loss) == "layers"
    a, b = cpu.fit(X, y, **options), gpu.fit(X, y, **options)
    assert_fits_agree(cpu, gpu, a, b, dtype, n)
    assert_close(gpu.decision_function(X), cpu.decision_function(X), dtype, "decision_function")
    ea, eb = cpu.evaluate(X, y), gpu.evaluate(X, y)
    assert_close(eb["loss"], ea["loss"], dtype, "evaluate")
    if "accuracy" in ea:
        assert eb["accuracy"] == pytest.approx(ea["accuracy"], abs=2.5 / n)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(norm="layer", residual=True), dict(norm="batch")],
                         ids=["layer-norm-residual", "batch-norm"])
def test_gpu_fit_of_norm_layers_matches_the_cpu(options, dtype):
    X, y = make_data(n=120, inputs=5, outputs=2, dtype=dtype, seed=8)
    cpu, gpu = gpu_pair([5, 16, 16, 2], "relu", dtype=dtype, seed=1, **options)
    fit = dict(epochs=10, batch_size=32, optimizer=fm.Adam(0.003))
    a, b = cpu.fit(X, y, **fit), gpu.fit(X, y, **fit)
    assert_fits_agree(cpu, gpu, a, b, dtype, len(X))
    assert_close(gpu.predict(X), cpu.predict(X), dtype, "predict")


@pytest.mark.cuda
def test_gpu_fit_with_dropout_runs_and_stays_finite():
    X, y = make_data(n=100, inputs=4, outputs=2)
    net = fm.Network([4, 32, 2], dropout=0.2, seed=0, device="cuda")
    history = net.fit(X, y, epochs=5, batch_size=16)
    assert np.isfinite(history["loss"]).all() and np.isfinite(net.params).all()


@pytest.mark.cuda
def test_gpu_fit_with_validation_and_early_stopping_matches_the_cpu():
    X, y = make_data(n=150, inputs=4, outputs=2, seed=9)
    cpu, gpu = gpu_pair([4, 24, 2], "relu", seed=2)
    options = dict(epochs=10, batch_size=32, validation_split=0.2, optimizer=fm.SGD(0.1),
                   early_stopping=fm.EarlyStopping(patience=20, restore_best_weights=True))
    a, b = cpu.fit(X, y, **options), gpu.fit(X, y, **options)
    assert b.best_epoch == a.best_epoch  # the weights restored are the same epoch's
    assert_fits_agree(cpu, gpu, a, b, np.float32, len(X))


@pytest.mark.cuda
def test_gpu_fit_in_chunks_and_resumed_is_the_fit_in_one(tmp_path):
    # One engine call, a call per 3 epochs (checkpoints: X, y stay on the device under one
    # data_key), and a fit resumed from the last checkpoint: the same bits on one GPU.
    X, y = make_data(n=100, inputs=4, outputs=2)
    whole, chunked, resumed = (fm.Network([4, 16, 2], seed=0, device="cuda") for _ in range(3))
    options = dict(epochs=10, batch_size=16, optimizer=fm.Adam(0.01))
    a = whole.fit(X, y, **options)
    b = chunked.fit(X, y, **options, checkpoint_every=3, checkpoint_path=tmp_path / "c.npz")
    c = resumed.fit(X, y, **options, checkpoint_every=3, checkpoint_path=tmp_path / "d.npz",
                    resume_from=tmp_path / "c.npz")
    assert a.history == b.history == c.history
    np.testing.assert_array_equal(chunked.params, whole.params)
    np.testing.assert_array_equal(resumed.params, whole.params)


@pytest.mark.cuda
def test_gpu_round_trips_keep_every_bit():
    X, y = make_data(n=50, inputs=4, outputs=2)
    net = fm.Network([4, 8, 2], seed=0)
    net.fit(X, y, epochs=2, optimizer=fm.Adam(0.01))
    before = net._snapshot()
    net.to("cuda").to("cpu")  # nothing changed on the device: nothing comes back
    after = net._snapshot()
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1][1:3] == before[1][1:3] and after[2] == before[2]
    for x, z in zip(before[1][3], after[1][3]):
        np.testing.assert_array_equal(z, x)
    assert net.device == "cpu" and np.shares_memory(net.params, net.weights[0])
    # Up and back down: a device fit whose steps change no weight (lr far below their ulp)
    # brings every weight back bit for bit, through the device's copy.
    weights = [w.copy() for w in net.weights]
    net.to("cuda").fit(X, y, epochs=1, optimizer=fm.SGD(1e-30))
    for w, old in zip(net.weights, weights):
        np.testing.assert_array_equal(w, old)
    net.to("cpu")
    for w, old in zip(net.weights, weights):
        np.testing.assert_array_equal(w, old)


@pytest.mark.cuda
def test_gpu_copies_on_access_and_item_assignment():
    X, y = make_data(n=40, inputs=4, outputs=2)
    net = fm.Network([4, 8, 2], seed=0, device="cuda")
    net.fit(X, y, epochs=3, batch_size=8)
    p = net.params
    assert not np.shares_memory(p, net.params)
    p[...] = 0
    assert np.abs(net.params).max() > 0
    W = np.full((8, 4), 0.5, np.float32)
    net.weights[0] = W
    np.testing.assert_array_equal(net.weights[0], W)
    cpu = net.copy()
    assert cpu.device == "cpu"
    assert_close(net.predict(X), cpu.predict(X), np.float32)
    # A CPU-side step (forward, backward, step) then the device again.
    net.backward(X, y, net.forward(X))
    cpu.backward(X, y, cpu.forward(X))
    assert_close(net.grads, cpu.grads, np.float32)
    net.step(fm.SGD(0.1))
    cpu.step(fm.SGD(0.1))
    assert_close(net.predict(X), cpu.predict(X), np.float32)


@pytest.mark.cuda
def test_gpu_trained_network_saves_and_loads(tmp_path):
    X, y = make_data(n=80, inputs=4, outputs=2)
    net = fm.Network([4, 16, 2], seed=0, device="cuda")
    net.fit(X, y, epochs=5, batch_size=16, optimizer=fm.Adam(0.01))
    net.save(tmp_path / "m.npz")
    back = fm.load(tmp_path / "m.npz")
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.params, net.params)
    assert_close(back.predict(X), net.predict(X), np.float32)
    np.testing.assert_array_equal(back.to("cuda").predict(X), net.predict(X))  # same device, same bits
    # Training on continues alike (optimizer state and generator saved).
    a = net.fit(X, y, epochs=2, batch_size=16)
    b = back.fit(X, y, epochs=2, batch_size=16)
    assert a.history == b.history
    np.testing.assert_array_equal(back.params, net.params)


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["fused", "layers"])
def test_gpu_non_finite_fit_stops_with_finite_weights(path, monkeypatch):
    use_path(monkeypatch, path)
    X, y = make_data(n=64, inputs=4, outputs=2)
    cpu, gpu = gpu_pair([4, 16, 16, 2], seed=0)
    errors = []
    for net in (cpu, gpu):
        with pytest.raises(FloatingPointError, match="became non-finite") as caught:
            net.fit(X, y * 1e20, epochs=50, optimizer=fm.SGD(10.0))
        errors.append(caught.value)
        assert np.isfinite(net.params).all()
    assert str(errors[1]) == str(errors[0])
    assert len(errors[1].history) == len(errors[0].history)
    for net in (overflowing_gradient(fm.Network([1, 1, 1, 1], activation="linear", seed=0)),
                overflowing_gradient(fm.Network([1, 1, 1, 1], activation="linear", seed=0, device="cuda"))):
        before = net.params
        with pytest.raises(FloatingPointError, match=r"the gradient became non-finite .*first at layer 0") as caught:
            net.fit(np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32), epochs=1, optimizer=fm.SGD(0.1))
        assert caught.value.layer == 0
        np.testing.assert_array_equal(net.params, before)


@pytest.mark.cuda
def test_gpu_predicts_from_two_threads():
    X, y = make_data(n=500, inputs=4, outputs=2)
    net = fm.Network([4, 64, 2], seed=0, device="cuda")
    net.fit(X, y, epochs=2, batch_size=50)
    expected = net.predict(X)
    failures = []

    def work():
        try:
            for _ in range(20):
                np.testing.assert_array_equal(net.predict(X), expected)
        except Exception as error:  # reported below, from the main thread
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]


@pytest.mark.cuda
def test_gpu_refuses_what_it_does_not_support_yet_and_stays_usable():
    X, y = make_data(n=40, inputs=4, outputs=2)
    net = fm.Network([4, 8, 2], seed=0, device="cuda")
    with pytest.raises((ValueError, RuntimeError), match="per-layer gradient norms"):
        net.fit(X, y, epochs=2, record_layer_norms=True)
    history = net.fit(X, y, epochs=2)  # nothing of the refused fit left behind
    assert len(history) == 2 and np.isfinite(net.params).all()


def test_cublas_is_looked_for_in_nvidia_wheels_and_the_toolkit(tmp_path, monkeypatch):
    """fastmlp._cuda lists NVIDIA's pip wheel layout (nvidia/cu13/lib, nvidia/cublas/lib)
    before the toolkit's folders; load_cublas never raises, and is "" without CUDA."""
    import importlib.machinery
    import importlib.util

    from fastmlp import _cuda

    for relative in ("cu13/lib/libcublas.so.13", "cublas/lib/libcublas.so.12", "cublas/lib/other.so"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    spec = importlib.machinery.ModuleSpec("nvidia", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "nvidia" else real(name, *a))
    found = _cuda._candidates()
    assert found[:2] == [str(tmp_path / "cu13/lib/libcublas.so.13"), str(tmp_path / "cublas/lib/libcublas.so.12")]
    assert not any(p.endswith("other.so") for p in found)
    if not hasattr(_core, "cuda"):
        assert _cuda.load_cublas() == ""
