"""The boundary between Python and C++ (fastmlp._core and fastmlp.kernels).

- the name tuples come from the C++ tables and are what the Python API offers;
- the typed configurations are built by keyword, validated once, read-only;
- read-only arrays (np.load(mmap_mode="r"), np.frombuffer, writeable=False) are
  read without a copy by every kernel and Network method; a read-only output is
  refused by name (defect 1);
- an output sharing memory with an input: kernels.gemm and the other in-place
  kernels copy the input first (the result equals the twin's), the bindings
  refuse overlapping bytes (defect 6);
- huge or negative integers give ValueError / TypeError naming the argument,
  never "Unable to cast" (defect 9);
- snapshot / restore: a round trip, and every field checked before any is applied.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core, kernels, reference
from fastmlp.network import ACTIVATIONS, INIT_SCHEMES, LOSSES

# ---- names and typed configurations -----------------------------------------------------------


def test_the_name_tuples_come_from_core():
    assert ACTIVATIONS is _core.ACTIVATIONS and kernels.ACTIVATIONS is _core.ACTIVATIONS
    assert LOSSES is _core.LOSSES and kernels.LOSSES is _core.LOSSES
    assert INIT_SCHEMES is _core.INIT_SCHEMES and kernels.INIT_SCHEMES is _core.INIT_SCHEMES
    assert _core.OPTIMIZERS == ("sgd", "adam", "adamw", "lamb")
    assert _core.SCHEDULES == ("constant", "step", "exponential", "cosine")
    assert _core.FIT_STATUSES == ("completed", "non_finite", "interrupted")
    for names in (_core.ACTIVATIONS, _core.LOSSES, _core.OPTIMIZERS, _core.SCHEDULES, _core.INIT_SCHEMES):
        assert isinstance(names, tuple) and len(set(names)) == len(names)


def test_every_activation_name_goes_through_the_engine_and_back():
    core = _core.Network64([2] * (len(_core.ACTIVATIONS) + 1), list(_core.ACTIVATIONS), 0)
    assert tuple(layer["activation"] for layer in core.layers if layer["type"] == "activation") == _core.ACTIVATIONS


def test_the_kernels_module_does_not_import_the_network_module():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(kernels))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "network" not in imported and "fastmlp.network" not in imported


def test_an_unknown_name_lists_the_choices_of_the_table():
    with pytest.raises(ValueError, match="optimizer: unknown name 'rmsprop'; expected sgd, adam, adamw or lamb"):
        _core.OptimizerConfig(kind="rmsprop")
    with pytest.raises(ValueError, match="schedule: unknown name 'linear'; expected constant, step"):
        _core.ScheduleConfig(kind="linear")
    with pytest.raises(ValueError, match="activation: unknown name 'softplus'; expected linear, relu"):
        _core.Network64([2, 2], ["softplus"], 0)
    with pytest.raises(ValueError, match="init: unknown name 'orthogonal'; expected he_normal"):
        _core.Network64([2, 2], ["relu"], 0, ["orthogonal"])


def test_optimizer_config_is_built_by_keyword_and_read_only():
    config = _core.OptimizerConfig(kind="adam", lr=0.5, beta1=0.8, clip_norm=2.0)
    assert (config.kind, config.lr, config.beta1, config.beta2, config.clip_norm) == ("adam", 0.5, 0.8, 0.999, 2.0)
    assert config.state_buffers == 2
    assert _core.OptimizerConfig(kind="sgd", momentum=0.9).state_buffers == 1
    assert "kind='adam'" in repr(config) and "lr=0.5" in repr(config)
    with pytest.raises(AttributeError):
        config.lr = 1.0
    with pytest.raises(TypeError):
        _core.OptimizerConfig("adam")  # keywords only


@pytest.mark.parametrize("bad,name", [
    (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(momentum=-1.0), "momentum"),
    (dict(dampening=2.0), "dampening"), (dict(beta1=1.0), "beta1"), (dict(beta2=-0.1), "beta2"),
    (dict(eps=0.0), "eps"), (dict(clip_norm=-1.0), "clip_norm"), (dict(clip_value=float("inf")), "clip_value"),
    (dict(nesterov=True), "nesterov"), (dict(weight_decay=-1.0), "weight_decay"),
])
def test_optimizer_config_validates_on_construction(bad, name):
    with pytest.raises(ValueError, match=name):
        _core.OptimizerConfig(kind="sgd", **bad)


def test_schedule_config_is_built_by_keyword_and_validated():
    config = _core.ScheduleConfig(kind="cosine", warmup_steps=3, total_steps=10, min_factor=0.25)
    assert (config.kind, config.warmup_steps, config.total_steps, config.min_factor) == ("cosine", 3, 10, 0.25)
    with pytest.raises(AttributeError):
        config.total_steps = 5
    for bad, name in [(dict(step_size=0), "step_size"), (dict(gamma=0.0), "gamma"), (dict(total_steps=0), "total_steps"),
                      (dict(min_factor=1.5), "min_factor"), (dict(warmup_steps=-1), "warmup_steps")]:
        with pytest.raises(ValueError, match=name):
            _core.ScheduleConfig(kind="step", **bad)


def test_optimizers_and_schedules_hand_the_engine_typed_configs():
    opt = fm.Adam(lr=0.01, schedule=fm.Warmup(4, fm.Cosine(100, min_factor=0.1)), clip_norm=1.0)
    config, schedule = opt._config(), opt._schedule_config()
    assert isinstance(config, _core.OptimizerConfig) and isinstance(schedule, _core.ScheduleConfig)
    assert (config.kind, config.lr, config.clip_norm, config.clip_value) == ("adam", 0.01, 1.0, 0.0)
    assert (schedule.kind, schedule.warmup_steps, schedule.total_steps, schedule.min_factor) == ("cosine", 4, 100, 0.1)
    assert fm.SGD()._schedule_config() is None


@pytest.mark.parametrize("spec,message", [
    ({"kind": "cosine"}, r"needs the keys \['total_steps'\]"),
    ({"kind": "step", "step_size": 2, "gamma": 0.5, "warmup": 3}, r"unknown keys \['warmup'\]"),
    ({"kind": "exponential", "gamma": "0.5"}, r"spec\['gamma'\]"),
    ({"kind": "linear"}, r"spec\['kind'\]"),
    ("cosine", "spec: expected a schedule spec dict"),
])
def test_schedule_factor_checks_the_spec_dict(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        kernels.schedule_factor(spec, 0)


# ---- defect 1: read-only inputs ------------------------------------------------------------------


def read_only(array) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array


def test_every_kernel_reads_read_only_inputs():
    rng = np.random.default_rng(0)
    a, b = read_only(rng.standard_normal((5, 4))), read_only(rng.standard_normal((4, 3)))
    z, da = read_only(rng.standard_normal((5, 3))), read_only(rng.standard_normal((5, 3)))
    bias = read_only(rng.standard_normal(3))
    target = read_only(np.eye(3)[[0, 1, 2, 0, 1]])
    np.testing.assert_allclose(kernels.gemm(a, b), reference.gemm(a, b), rtol=1e-12)
    np.testing.assert_allclose(kernels.gemm(b, a, trans_a=True, trans_b=True), reference.gemm(b, a, trans_a=True,
                                                                                                trans_b=True), rtol=1e-12)
    np.testing.assert_allclose(kernels.activation_forward(z, "tanh"), reference.activation_forward(z, "tanh"),
                               rtol=1e-12)
    np.testing.assert_allclose(kernels.activation_backward(da, z, activation="gelu"),
                               reference.activation_backward(da, z, activation="gelu"), rtol=1e-12)
    for fast, twin in zip(kernels.bias_activation_forward(z, bias, "relu"),
                          reference.bias_activation_forward(z, bias, "relu")):
        np.testing.assert_allclose(fast, twin, rtol=1e-12)
    for fast, twin in zip(kernels.activation_bias_backward(da, z, activation="sigmoid"),
                          reference.activation_bias_backward(da, z, activation="sigmoid")):
        np.testing.assert_allclose(fast, twin, rtol=1e-12)
    np.testing.assert_allclose(kernels.bias_add_forward(z, bias), reference.bias_add_forward(z, bias), rtol=1e-12)
    np.testing.assert_allclose(kernels.bias_add_backward(z), reference.bias_add_backward(z), rtol=1e-12)
    for loss in LOSSES:
        assert kernels.loss_forward(loss, z, target) == pytest.approx(reference.loss_forward(loss, z, target), rel=1e-12)
        np.testing.assert_allclose(kernels.loss_backward(loss, z, target), reference.loss_backward(loss, z, target),
                                   rtol=1e-12, atol=1e-15)
    assert kernels.count_correct("cross_entropy", z, target) == reference.count_correct("cross_entropy", z, target)
    np.testing.assert_allclose(kernels.softmax(z), reference.softmax(z), rtol=1e-12)
    assert kernels.grad_norm(z) == pytest.approx(reference.grad_norm(z), rel=1e-12)
    assert kernels.mse_forward(z, da) == pytest.approx(reference.mse_forward(z, da), rel=1e-12)
    np.testing.assert_allclose(kernels.mse_backward(z, da), reference.mse_backward(z, da), rtol=1e-12)
    grads = read_only(rng.standard_normal(6))
    params, expected = np.ones(6), reference.sgd_update(np.ones(6), grads, 0.1)
    np.testing.assert_allclose(kernels.sgd_update(params, grads, 0.1), expected, rtol=1e-12)


def test_the_bindings_read_a_read_only_array_in_place():
    x = read_only(np.arange(6.0).reshape(2, 3))
    out = np.empty((2, 3))
    _core.activation_forward("linear", x, out)
    np.testing.assert_array_equal(out, x)
    core = _core.Network64([3, 2], ["linear"], 0)
    predicted = np.empty((2, 2))
    core.predict(x, predicted)  # X read where it lies: no conversion on the way
    np.testing.assert_allclose(predicted, core.forward(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_network_methods_read_memory_mapped_and_frozen_inputs(tmp_path, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 3)).astype(dtype)
    y = (X[:, :1] * 2 - X[:, 1:2]).astype(dtype)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    X_map, y_map = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    X_buf = np.frombuffer(X.tobytes(), dtype=dtype).reshape(X.shape)
    assert not X_map.flags.writeable and not X_buf.flags.writeable
    net = fm.Network([3, 8, 1], dtype=dtype, seed=0)
    twin = net.copy()
    history = net.fit(X_map, y_map, epochs=3, batch_size=8)
    assert history.history["loss"] == twin.fit(X, y, epochs=3, batch_size=8).history["loss"]
    np.testing.assert_array_equal(net.params, twin.params)
    np.testing.assert_array_equal(net.predict(X_map), twin.predict(X))
    np.testing.assert_array_equal(net.predict(X_buf), twin.predict(X))
    np.testing.assert_array_equal(net.forward(X_map), twin.forward(X))
    assert net.evaluate(X_map, y_map) == twin.evaluate(X, y)
    assert net.score(X_buf, y_map) == twin.score(X, y)
    net.backward(X_map, y_map, net.forward(X_map))
    twin.backward(X, y, twin.forward(X))
    np.testing.assert_array_equal(net.grads, twin.grads)


def test_a_read_only_classifier_target_is_read():
    X = read_only(np.random.default_rng(2).standard_normal((30, 2)))
    labels = read_only((X[:, 0] > 0).astype(np.int64))
    net = fm.Network([2, 4, 2], loss="cross_entropy", dtype="float64", seed=0)
    net.fit(X, labels, epochs=2)
    assert 0.0 <= net.score(X, labels) <= 1.0
    assert net.predict_proba(X).shape == (30, 2)


@pytest.mark.parametrize("call,name", [
    (lambda: kernels.gemm(np.ones((2, 2)), np.ones((2, 2)), read_only(np.zeros((2, 2)))), "c"),
    (lambda: kernels.activation_forward(np.ones(3), "relu", out=read_only(np.zeros(3))), "out"),
    (lambda: kernels.activation_backward(np.ones(3), np.ones(3), out=read_only(np.zeros(3))), "out"),
    (lambda: kernels.sgd_update(read_only(np.ones(3)), np.ones(3), 0.1), "params"),
    (lambda: kernels.sgd_step(np.ones(3), np.ones(3), read_only(np.zeros(3)), lr=0.1, momentum=0.9), "velocity"),
    (lambda: kernels.adam_step(np.ones(3), np.ones(3), np.zeros(3), read_only(np.zeros(3)), lr=0.1, step=1), "v"),
    (lambda: _core.softmax(np.ones((2, 2)), read_only(np.zeros((2, 2)))), "out"),
    (lambda: _core.Network64([2, 1], ["linear"], 0).predict(np.ones((3, 2)), read_only(np.zeros((3, 1)))), "out"),
])
def test_a_read_only_output_is_refused_by_name(call, name):
    with pytest.raises(ValueError, match=rf"^{name}: .*read-only"):
        call()


# ---- defect 6: outputs overlapping inputs -----------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_into_one_of_its_inputs_equals_the_twin(beta):
    rng = np.random.default_rng(3)
    n = 200  # past one block of the GEMM's packing, so c is written before all of a is read
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    expected = reference.gemm(a, b, a.copy(), beta=beta)
    result = kernels.gemm(a, b, a, beta=beta)  # c is a
    assert result is a
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-10)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    expected = reference.gemm(a, b, b.copy(), alpha=0.5, beta=beta, trans_b=True)
    np.testing.assert_allclose(kernels.gemm(a, b, b, alpha=0.5, beta=beta, trans_b=True), expected, rtol=1e-10,
                               atol=1e-10)


def test_gemm_into_a_view_of_an_input_equals_the_twin():
    rng = np.random.default_rng(4)
    buffer = rng.standard_normal((400, 400))
    a, b = buffer[:200, :300], rng.standard_normal((300, 200))
    c = buffer[100:300, 100:300]  # overlaps a's lower right
    expected = reference.gemm(a.copy(), b, c.copy(), beta=1.0)
    kernels.gemm(a, b, c, beta=1.0)
    np.testing.assert_allclose(c, expected, rtol=1e-10, atol=1e-10)
    buffer = rng.standard_normal((400, 400))
    a, b, c = buffer.T[:200, :200], buffer[200:, 200:], buffer[:200, :200]  # a: column-major view of c's bytes
    expected = reference.gemm(a.copy(), b.copy(), c.copy(), beta=1.0)
    kernels.gemm(a, b, c, beta=1.0)
    np.testing.assert_allclose(c, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("args,message", [
    (lambda a, b: (a, b, a), "c overlaps a"),
    (lambda a, b: (a, b, b), "c overlaps b"),
    (lambda a, b: (a[:3, :3], b[:3, :3], a[2:5, 2:5]), "c overlaps a"),
])
def test_the_gemm_binding_refuses_overlapping_bytes(args, message):
    a, b = np.ones((6, 6)), np.ones((6, 6))
    with pytest.raises(ValueError, match=message):
        _core.gemm(*args(a, b), 1.0, 0.0, False, False)


def test_elementwise_kernels_into_a_shifted_view_equal_the_twin():
    buffer = np.linspace(-2, 2, 12)
    z, out = buffer[:10], buffer[2:]
    expected = reference.activation_forward(z.copy(), "tanh")
    kernels.activation_forward(z, "tanh", out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    buffer = np.linspace(-2, 2, 12)
    da, z, out = np.ones(10), buffer[:10], buffer[2:]
    expected = reference.activation_backward(da, z.copy(), activation="sigmoid")
    kernels.activation_backward(da, z, activation="sigmoid", out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    z = np.linspace(-1, 1, 8)
    expected = reference.activation_forward(z, "relu")
    np.testing.assert_array_equal(kernels.activation_forward(z, "relu", out=z), expected)  # out is z: allowed


@pytest.mark.parametrize("call,message", [
    (lambda buf: _core.activation_forward("relu", buf[:10], buf[2:]), "out overlaps z"),
    (lambda buf: _core.softmax(buf[:10].reshape(2, 5), buf[2:].reshape(2, 5)), "out overlaps z"),
    (lambda buf: _core.loss("mse", buf[:4].reshape(2, 2), buf[4:8].reshape(2, 2), buf[6:10].reshape(2, 2)),
     "grad overlaps target"),
    (lambda buf: _core.activation_bias_backward("relu", buf[:4].reshape(2, 2), buf[:4].reshape(2, 2),
                                                buf[:4].reshape(2, 2), buf[4:8].reshape(2, 2), buf[2:4], False),
     "d_bias overlaps z"),
    (lambda buf: _core.optimizer_update(_core.OptimizerConfig(kind="adam"), buf[:4], np.ones(4), buf[4:8], buf[4:8],
                                        [], 1, 0.1), "state2 overlaps state1"),
    (lambda buf: _core.optimizer_update(_core.OptimizerConfig(kind="sgd"), buf[:4], buf[2:6], None, None, [], 1, 0.1),
     "params overlaps grads"),
])
def test_the_bindings_refuse_an_output_overlapping_an_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.linspace(0.0, 1.0, 12))


def test_optimizer_steps_read_grads_aliasing_params_as_before_the_update():
    params = np.linspace(-1, 1, 6)
    expected = reference.sgd_update(params.copy(), params.copy(), 0.5)
    kernels.sgd_update(params, params, 0.5)  # p -= 0.5 p
    np.testing.assert_allclose(params, expected, rtol=1e-12)
    params, m = np.linspace(-1, 1, 6), np.zeros(6)
    with pytest.raises(ValueError, match="v: shares memory with m"):
        kernels.adam_step(params, np.ones(6), m, m, lr=0.1, step=1)
    with pytest.raises(ValueError, match="velocity: shares memory with params"):
        kernels.sgd_step(params, np.ones(6), params, lr=0.1, momentum=0.9)


# ---- defect 9: huge and negative integers -----------------------------------------------------


BAD_INTEGERS = {
    "init_params seed -1": (lambda: kernels.init_params([2, 3], "he_normal", seed=-1), "seed"),
    "init_params seed 2**64": (lambda: kernels.init_params([2, 3], "he_normal", seed=2**64), "seed"),
    "init_params size 2**63": (lambda: kernels.init_params([2**63, 3], "he_normal", seed=0), r"layer_sizes\[0\]"),
    "init_params size -1": (lambda: kernels.init_params([2, -1], "he_normal", seed=0), r"layer_sizes\[1\]"),
    "schedule_factor step 2**63": (lambda: kernels.schedule_factor({"kind": "constant"}, 2**63), "step"),
    "schedule_factor step -1": (lambda: kernels.schedule_factor(None, -1), "step"),
    "schedule_factor total_steps 2**63": (lambda: kernels.schedule_factor({"kind": "cosine", "total_steps": 2**63}, 0),
                                          "total_steps"),
    "schedule_factor warmup 2**64": (lambda: kernels.schedule_factor({"kind": "constant", "warmup_steps": 2**64}, 0),
                                     "warmup_steps"),
    "schedule factor t 2**63": (lambda: fm.Cosine(10).factor(2**63), "t"),
    "Cosine 2**63": (lambda: fm.Cosine(2**63), "total_steps"),
    "StepDecay 2**63": (lambda: fm.StepDecay(2**63), "step_size"),
    "Warmup 2**64": (lambda: fm.Warmup(2**64), "steps"),
    "sgd_step step 2**63": (lambda: kernels.sgd_step(np.ones(3), np.ones(3), None, lr=0.1, step=2**63), "step"),
    "adam_step step 0": (lambda: kernels.adam_step(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), lr=0.1, step=0),
                         "step"),
    "lamb_step huge offset": (lambda: kernels.lamb_step(np.ones(4), np.ones(4), np.zeros(4), np.zeros(4), lr=0.1, step=1,
                                                        segments=[(2**63 - 1, 2)]), r"segments\[0\]"),
    "lamb_step offset + size overflows": (lambda: kernels.lamb_step(np.ones(4), np.ones(4), np.zeros(4), np.zeros(4),
                                                                    lr=0.1, step=1, segments=[(0, 2), (2**62, 2**62)]),
                                          r"segments\[1\]"),
    "lamb_step offset 2**64": (lambda: kernels.lamb_step(np.ones(4), np.ones(4), np.zeros(4), np.zeros(4), lr=0.1,
                                                         step=1, segments=[(2**64, 1)]), r"segments\[0\] offset"),
    "lamb_step negative size": (lambda: kernels.lamb_step(np.ones(4), np.ones(4), np.zeros(4), np.zeros(4), lr=0.1,
                                                          step=1, segments=[(0, -1)]), r"segments\[0\] size"),
}


HUGE = 10**400  # past any float
BAD_INTEGERS.update({
    "gemm alpha 10**400": (lambda: kernels.gemm(np.ones((2, 2)), np.ones((2, 2)), alpha=HUGE), "alpha"),
    "loss delta 10**400": (lambda: kernels.loss_forward("huber", np.ones((2, 2)), np.ones((2, 2)), delta=HUGE), "delta"),
    "adam lr 10**400": (lambda: kernels.adam_step(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), lr=HUGE, step=1), "lr"),
    "sgd momentum 10**400": (lambda: kernels.sgd_step(np.ones(3), np.ones(3), np.zeros(3), lr=0.1, momentum=HUGE),
                             "momentum"),
    "grad_norm clip_value 10**400": (lambda: kernels.grad_norm(np.ones(3), clip_value=HUGE), "clip_value"),
    "lamb grad_scale string": (lambda: kernels.lamb_step(np.ones(4), np.ones(4), np.zeros(4), np.zeros(4), lr=0.1,
                                                         step=1, segments=[], grad_scale="2"), "grad_scale"),
})


@pytest.mark.parametrize("call,name", BAD_INTEGERS.values(), ids=BAD_INTEGERS.keys())
def test_a_bad_integer_is_named(call, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert "Unable to cast" not in message and "incompatible" not in message, message
    assert __import__("re").search(name, message), message


# ---- snapshot and restore -----------------------------------------------------------------------


def trained_core():
    net = fm.Network([3, 5, 2], dtype="float64", seed=7)
    X = np.random.default_rng(5).standard_normal((20, 3))
    net.fit(X, X[:, :2] ** 2, epochs=3, batch_size=4, optimizer=fm.Adam(lr=0.01))
    return net


def test_snapshot_is_a_consistent_copy_of_the_whole_state():
    net = trained_core()
    params, kind, steps, buffers, rng, _ = net._core.snapshot()
    assert (kind, steps, len(buffers)) == ("adam", 15, 2)
    np.testing.assert_array_equal(params, net.params)
    params[0] += 1.0  # a copy
    assert params[0] != net.params[0]
    words, has_spare, spare = rng
    assert len(words) == 4 and isinstance(has_spare, bool) and np.isfinite(spare)


def test_restore_applies_every_field():
    source = trained_core()
    params, kind, steps, buffers, (words, has_spare, spare), _ = source._core.snapshot()
    target = fm.Network([3, 5, 2], dtype="float64", seed=0)
    target._core.restore(params, _core.OptimizerConfig(kind="adam", lr=0.01), steps, buffers, words, has_spare, spare)
    after = target._core.snapshot()
    np.testing.assert_array_equal(after[0], params)
    assert after[1:3] == (kind, steps)
    for mine, theirs in zip(after[3], buffers):
        np.testing.assert_array_equal(mine, theirs)
    assert after[4] == (tuple(words), has_spare, spare)
    target._core.restore(params, None, 0, [], words, has_spare, spare)
    assert target._core.snapshot()[2:4] == (0, [])


def restore_with(core, **changes):
    params, _, steps, buffers, (words, has_spare, spare), _ = core.snapshot()
    fields = dict(params=params, optimizer=_core.OptimizerConfig(kind="adam", lr=0.01), steps=steps,
                  buffers=buffers, rng_words=list(words), has_spare=has_spare, spare=spare)
    fields.update(changes)
    core.restore(**fields)


BAD_STATES = {
    "scalar params": (dict(params=np.float64(1.0)), "params: expected shape"),
    "short params": (dict(params=np.zeros(3)), r"params: expected shape \(32,\)"),
    "NaN params": (dict(params=np.full(32, np.nan)), "params: expected finite"),
    "string params": (dict(params=np.array(["a"] * 32)), "params: expected a numeric array"),
    "negative steps": (dict(steps=-1), "steps"),
    "steps past 2**62": (dict(steps=2**62 + 1), "steps"),
    "steps 2**64": (dict(steps=2**64), "steps"),
    "float steps": (dict(steps=1.5), "steps: expected an integer"),
    "one buffer for adam": (dict(buffers=[np.zeros(32)]), "buffers: the optimizer adam keeps 2"),
    "infinite buffer": (dict(buffers=[np.zeros(32), np.full(32, np.inf)]), r"buffers\[1\]: expected finite"),
    "steps without an optimizer": (dict(optimizer=None, buffers=[]), "steps: expected 0 without an optimizer"),
    "optimizer not a config": (dict(optimizer={"kind": "adam"}), "optimizer: expected an OptimizerConfig"),
    "zero generator": (dict(rng_words=[0, 0, 0, 0]), "rng_words: all four are zero"),
    "three words": (dict(rng_words=[1, 2, 3]), "rng_words: expected 4 words"),
    "negative word": (dict(rng_words=[1, 2, 3, -4]), r"rng_words\[3\]"),
    "word 2**64": (dict(rng_words=[2**64, 2, 3, 4]), r"rng_words\[0\]"),
    "NaN spare": (dict(spare=float("nan")), "spare: expected a finite"),
}


@pytest.mark.parametrize("changes,message", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_restore_checks_every_field_and_applies_nothing_on_error(changes, message):
    net = trained_core()
    before = net._core.snapshot()
    with pytest.raises((ValueError, TypeError), match=message):
        restore_with(net._core, **{"params": np.zeros(32), "steps": 3, **changes})
    after = net._core.snapshot()
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:3] == before[1:3] and after[4] == before[4]


def test_restore_refuses_values_too_large_for_the_network_dtype():
    core = _core.Network32([2, 2], ["linear"], 0)
    params, _, _, _, (words, has_spare, spare), _ = core.snapshot()
    big = np.full(params.shape, 1e300)  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="params: expected finite values"):
        core.restore(big, None, 0, [], words, has_spare, spare)


# ---- what the fuzz driver found at the kernels' edges ------------------------------------------


def test_a_zero_dimensional_input_keeps_its_shape():
    z = np.array(0.5)
    assert kernels.activation_forward(z, "tanh").shape == ()
    assert kernels.mse_backward(z, np.array(0.25)).shape == ()


@pytest.mark.parametrize("call,message", [
    (lambda: kernels.bias_add_backward(np.ones(3)), "dz: expected a 2-D array"),
    (lambda: kernels.adam_step(np.ones(3), np.ones(3), None, np.zeros(3), lr=0.1, step=1), "m: expected a state buffer"),
    (lambda: kernels.lamb_step(np.ones(3), np.ones(3), np.zeros(3), None, lr=0.1, step=1, segments=[]),
     "v: expected a state buffer"),
    (lambda: kernels.gemm(np.ones((2, 0)), np.ones((0, 2)), alpha=float("inf")), "alpha: expected a finite number"),
    (lambda: kernels.gemm(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), beta=float("nan")),
     "beta: expected a finite number"),
    (lambda: kernels.mse_backward(np.ones(3), np.ones(3), scale=float("inf")), "scale: expected a finite number"),
])
def test_edge_arguments_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("step", [
    lambda p, g: kernels.sgd_step(p, g, None, lr=0.1),
    lambda p, g: kernels.sgd_update(p, g, 0.1),
    lambda p, g: kernels.adam_step(p, g, np.zeros(3), np.zeros(3), lr=0.1, step=1),
    lambda p, g: kernels.lamb_step(p, g, np.zeros(3), np.zeros(3), lr=0.1, step=1, segments=[(0, 3)]),
])
def test_an_update_that_would_not_be_finite_is_an_error_naming_grads(step):
    params = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="grads: the update would make .* non-finite"):
        step(params, np.array([1.0, np.inf, 1.0]))
    assert np.isfinite(params).all(), "a parameter whose update is not finite keeps its value"


# ---- found by the fuzz test with more examples -------------------------------------------


def test_activation_backward_computes_a_in_the_common_dtype():
    z = np.linspace(-3, 3, 33, dtype=np.float32)
    da = np.linspace(1, 2, 33)  # float64: the computation is float64, f(z) included
    for name in ("gelu", "tanh", "swish"):
        want = reference.activation_backward(da, z, activation=name)
        np.testing.assert_allclose(kernels.activation_backward(da, z, activation=name), want, rtol=1e-12, atol=1e-15)
        dz, _ = kernels.activation_bias_backward(da.reshape(3, 11), z.reshape(3, 11), activation=name)
        np.testing.assert_allclose(dz.reshape(-1), want, rtol=1e-12, atol=1e-15)


def test_count_correct_cross_entropy_needs_a_column():
    empty = np.zeros((4, 0))
    for module in (kernels, reference):
        with pytest.raises(ValueError, match="pred: cross_entropy needs at least one column"):
            module.count_correct("cross_entropy", empty, empty)
    assert kernels.count_correct("cross_entropy", np.zeros((0, 0)), np.zeros((0, 0))) == 0


def test_grad_norm_clips_to_a_value_that_rounds_to_zero_in_float32():
    grads = np.array([3.0, -4.0], dtype=np.float32)
    assert kernels.grad_norm(grads, clip_value=5e-324) == 0.0 == reference.grad_norm(grads, clip_value=5e-324)
    assert kernels.grad_norm(grads) == 5.0


def test_update_grads_must_have_the_shape_of_params():
    params = np.ones(1)
    with pytest.raises(ValueError, match=r"grads has shape \(\) but params has shape \(1,\)"):
        kernels.sgd_update(params, np.float64(0.5), lr=0.1)
    assert params[0] == 1.0


def test_mse_backward_with_a_scale_does_not_overflow_before_scaling():
    pred, target = np.array([[2e38]], dtype=np.float32), np.zeros((1, 1), dtype=np.float32)
    got = kernels.mse_backward(pred, target, scale=1e-10)
    np.testing.assert_allclose(got, reference.mse_backward(pred, target, scale=1e-10), rtol=1e-6)
    assert np.isfinite(got).all()
