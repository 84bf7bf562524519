"""The C++ training kernels in fastmlp.kernels held to their NumPy twins in fastmlp.reference.

- loss_forward / loss_backward (mse, cross_entropy, binary_cross_entropy, huber) and softmax,
  on the awkward sizes 1, 3, 7, 33, 257, contiguous and as views, at huge logits too;
- grad_norm, with and without clip_value, below and above the parallel threshold, and bit
  identical on 1 and 2 threads;
- sgd_step / adam_step (Adam and AdamW) / lamb_step over 5 consecutive steps with the state
  carried in the buffers, and bit identical on 1 and 2 threads;
- schedule_factor for every kind, and the fm.schedules objects;
- init_params for every scheme, and the initial weights of fm.Network;
- whole-network training (fm.Network.fit against reference.Network.fit) for every loss,
  every optimizer, with and without a schedule and clipping.

The last tests pin five agreements that were disagreements when this file was written
(from_network and huber_delta, clip_value 0, LAMB segment order, the dtype of mixed loss
inputs, norm clipping at the threshold).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core, kernels, reference
from kernel_helpers import ATOL_ULPS, LAYOUTS, assert_close, dtype_id, eps_of, max_abs, with_layout

SIZES = (1, 3, 7, 33, 257)
DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
STEPS = 5  # consecutive optimizer steps, the state carried in the buffers
PARALLEL_LENGTH = 200_000  # above the optimizers' parallel threshold (2**17 elements)
THREAD_LENGTH = 300_000
SHAPES = list(itertools.product(SIZES, SIZES))


def rtol_of(dtype) -> float:
    return RTOL[np.dtype(dtype)]



# ---- losses and softmax ------------------------------------------------------------------------

# (loss name, Huber's delta): Huber at two deltas.
LOSS_CASES = [("mse", 1.0), ("cross_entropy", 1.0), ("binary_cross_entropy", 1.0), ("huber", 0.5), ("huber", 1.0)]


def loss_inputs(name, shape, dtype, delta, seed):
    """(pred, target) of ``dtype`` with realistic targets for the loss."""
    rng = np.random.default_rng(seed)
    batch, outputs = shape
    pred = rng.standard_normal(shape) * 2
    if name == "mse":
        target = rng.standard_normal(shape)
    elif name == "cross_entropy":  # one-hot rows and soft rows summing to 1, alternately
        target = np.zeros(shape)
        target[np.arange(batch), rng.integers(0, outputs, batch)] = 1.0
        soft = rng.dirichlet(np.ones(outputs), size=batch)
        target[1::2] = soft[1::2]
    elif name == "binary_cross_entropy":  # 0/1 labels and probabilities
        target = np.where(rng.uniform(size=shape) < 0.5, rng.integers(0, 2, shape), rng.uniform(0, 1, shape))
    else:  # huber: residuals on both sides of ±delta, at least 5% of delta from the kinks
        magnitude = np.where(rng.uniform(size=shape) < 0.5, rng.uniform(0, 0.95, shape), rng.uniform(1.05, 4, shape))
        target = pred - delta * magnitude * rng.choice([-1.0, 1.0], shape)
    return pred.astype(dtype), target.astype(dtype)


def check_loss(name, pred, target, delta, dtype, layouts=LAYOUTS, what=""):
    """kernels.loss_forward / loss_backward on ``pred`` and ``target`` in every layout vs the twin."""
    expected_value = reference.loss_forward(name, pred, target, delta)
    expected_grad = reference.loss_backward(name, pred, target, delta)
    assert expected_grad.dtype == dtype
    rtol = rtol_of(dtype)
    atol_grad = ATOL_ULPS * eps_of(dtype) * max_abs(expected_grad)
    for layout in layouts:
        p, t = with_layout(pred, layout), with_layout(target, layout)
        value = kernels.loss_forward(name, p, t, delta)
        grad = kernels.loss_backward(name, p, t, delta)
        label = f"{name} delta={delta} {dtype_id(dtype)} {pred.shape} {layout}{what}"
        assert isinstance(value, float)
        assert grad.dtype == dtype and grad.shape == pred.shape, label
        assert np.isfinite(value) and np.isfinite(grad).all(), label
        assert_close(value, expected_value, rtol=rtol, atol=rtol * 1e-6, what=f"loss value {label}")
        assert_close(grad, expected_grad, rtol=rtol, atol=atol_grad, what=f"loss gradient {label}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name,delta", LOSS_CASES, ids=lambda x: str(x))
def test_loss_matches_reference(name, delta, shape, dtype):
    seed = [LOSS_CASES.index((name, delta)), *shape, np.dtype(dtype).itemsize]
    pred, target = loss_inputs(name, shape, dtype, delta, seed)
    check_loss(name, pred, target, delta, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy", "mse", "huber"])
def test_loss_with_the_gradient_written_over_pred_matches_a_separate_gradient(name, dtype):
    """loss.hpp lets grad alias pred: the value and the gradient are the same as into
    a separate array (cross_entropy once read pred after writing the gradient over it)."""
    pred, target = loss_inputs(name, (7, 5), dtype, 1.0, [11, len(name)])
    separate = np.empty_like(pred)
    expected = _core.loss(name, pred, target, separate)
    in_place = pred.copy()
    value = _core.loss(name, in_place, target, in_place)
    assert value == expected
    np.testing.assert_array_equal(in_place, separate)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy", "mse", "huber"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (7, 3), (33, 257)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_loss_at_huge_logits_is_finite_and_matches_reference(name, shape, dtype):
    rng = np.random.default_rng([*shape, len(name), np.dtype(dtype).itemsize])
    pred = rng.standard_normal(shape) * 3
    huge = rng.uniform(size=shape) < 0.4
    pred[huge] = rng.choice([-1e3, 1e3], int(huge.sum())) * rng.uniform(0.9, 1.0, int(huge.sum()))
    pred[0, 0] = 1e3
    pred[-1, -1] = -1e3
    _, target = loss_inputs(name, shape, np.float64, 1.0, 1)
    check_loss(name, pred.astype(dtype), target.astype(dtype), 1.0, dtype, layouts=("contiguous", "transposed"),
               what=" (huge logits)")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_matches_reference(shape, dtype):
    rng = np.random.default_rng([*shape, np.dtype(dtype).itemsize])
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    expected = reference.softmax(z)
    for layout in LAYOUTS:
        result = kernels.softmax(with_layout(z, layout))
        assert result.dtype == dtype
        assert_close(result, expected, rtol=rtol_of(dtype), atol=ATOL_ULPS * eps_of(dtype),
                     what=f"softmax {shape} {layout}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_at_huge_logits(dtype):
    z = np.array([[1e3, -1e3, 0.0], [-1e3, -1e3, -1e3], [1e3, 1e3 - 1, -1e3], [5.0, 1e3, 999.0]], dtype=dtype)
    for layout in ("contiguous", "transposed", "strided"):
        result = kernels.softmax(with_layout(z, layout))
        assert np.isfinite(result).all()
        assert_close(result, reference.softmax(z), rtol=rtol_of(dtype), atol=ATOL_ULPS * eps_of(dtype),
                     what=f"softmax huge {layout}")
        assert_close(result.sum(axis=1), np.ones(4), rtol=0, atol=8 * eps_of(dtype))


@pytest.mark.parametrize("name", ["mse", "cross_entropy", "binary_cross_entropy", "huber"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_count_correct_matches_reference(shape, dtype, name):
    rng = np.random.default_rng([*shape, np.dtype(dtype).itemsize, len(name)])
    batch, outputs = shape
    pred = rng.standard_normal(shape).astype(dtype)
    if name == "cross_entropy":
        target = np.eye(outputs, dtype=dtype)[rng.integers(0, outputs, batch)]
        right = (batch + 1) // 2
        pred[:right] += 10 * target[:right]  # these rows are surely right, the others by chance
    else:
        target = rng.integers(0, 2, shape).astype(dtype)
    expected = reference.count_correct(name, pred, target)
    for layout in LAYOUTS:
        assert kernels.count_correct(name, with_layout(pred, layout), with_layout(target, layout)) == expected, layout
    if name in ("mse", "huber"):
        assert expected == 0
    elif name == "cross_entropy":
        assert right <= expected <= batch


# ---- gradient norm ---------------------------------------------------------------------------------

NORM_LENGTHS = (1, 3, 7, 33, 257, 70_000, 300_000)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("clip_value", [None, 0.3, 5.0])
@pytest.mark.parametrize("n", NORM_LENGTHS)
def test_grad_norm_matches_reference(n, clip_value, dtype):
    rng = np.random.default_rng([n, 0 if clip_value is None else int(clip_value * 10), np.dtype(dtype).itemsize])
    g = (rng.standard_normal(n) * 2).astype(dtype)
    expected = reference.grad_norm(g, clip_value)
    big = np.full(2 * n, np.nan, dtype=dtype)  # a strided view with NaN in the gaps
    big[::2] = g
    # both sum the squares in float64, so a tight rtol holds for float32 too
    for what, grads in (("contiguous", g), ("strided", big[::2]), ("2-D", g.reshape(1, n))):
        result = kernels.grad_norm(grads, clip_value)
        assert isinstance(result, float)
        assert_close(result, expected, rtol=1e-12, what=f"grad_norm n={n} clip={clip_value} {what}")
    if clip_value == 0.3 and n >= 33:
        assert expected < reference.grad_norm(g)  # the clamp bites


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n", [2**17, THREAD_LENGTH])  # both at or above the 2-thread threshold
def test_grad_norm_is_bit_identical_across_thread_counts(n, dtype, restore_num_threads):
    g = np.random.default_rng(n).standard_normal(n).astype(dtype)
    results = {}
    for threads in (1, 2):
        fm.set_num_threads(threads)
        results[threads] = (kernels.grad_norm(g), kernels.grad_norm(g, 0.5))
    assert results[1] == results[2]


# ---- optimizers ---------------------------------------------------------------------------------------

OPT_LENGTHS = (1, 3, 7, 33, 257, PARALLEL_LENGTH)
# (grad_scale, clip_value): plain, and clipped by value then scaled as clip_norm does
PREPROCESS = [(1.0, None), (0.5, 0.1)]

SGD_CONFIGS = [
    dict(momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=wd)
    for momentum, dampening, nesterov, wd in itertools.product((0.0, 0.9), (0.0, 0.1), (False, True), (0.0, 0.01))
    if not nesterov or (momentum > 0 and dampening == 0)  # nesterov needs momentum and no dampening
]
ADAM_CONFIGS = [
    dict(decoupled=decoupled, weight_decay=wd, beta1=b1, beta2=b2)
    for decoupled, wd, (b1, b2) in itertools.product((False, True), (0.0, 0.1), ((0.9, 0.999), (0.5, 0.9)))
]


def config_id(config) -> str:
    return "-".join(f"{k}={v}" for k, v in config.items())


def optimizer_inputs(n, dtype, seed):
    """Initial parameters and one gradient per step."""
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * rng.choice([0.01, 1.0, 3.0])).astype(dtype) for _ in range(STEPS)]
    return params, grads


def assert_buffers_close(actual, expected, dtype, what):
    """Elementwise, with rtol per dtype and an atol of a few ulps of each buffer's scale."""
    for name in expected:
        scale = max(max_abs(expected[name]), max_abs(actual[name]))
        assert actual[name].dtype == dtype, f"{what}: {name} dtype"
        assert_close(actual[name], expected[name], rtol=rtol_of(dtype), atol=8 * eps_of(dtype) * scale,
                     what=f"{what}: {name}")


def run_both(kernel_step, reference_step, params, grads, state_names, dtype, what):
    """STEPS updates by the kernel and by the twin from the same start, compared after every step."""
    mine = {"params": params.copy(), **{name: np.zeros_like(params) for name in state_names}}
    twin = {"params": params.copy(), **{name: np.zeros_like(params) for name in state_names}}
    for step in range(1, STEPS + 1):
        g = grads[step - 1]
        kernel_step(mine, g.copy(), step)
        reference_step(twin, g.copy(), step)
        assert_buffers_close(mine, twin, dtype, f"{what} step {step}")
    assert not np.array_equal(mine["params"], params), f"{what}: the parameters did not move"


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n", OPT_LENGTHS)
@pytest.mark.parametrize("grad_scale,clip_value", PREPROCESS)
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=config_id)
def test_sgd_step_matches_reference(config, grad_scale, clip_value, n, dtype):
    params, grads = optimizer_inputs(n, dtype, [n, SGD_CONFIGS.index(config), np.dtype(dtype).itemsize])
    states = ("velocity",) if config["momentum"] else ()
    common = dict(lr=0.05, grad_scale=grad_scale, clip_value=clip_value, **config)

    def kernel(buffers, g, step):
        kernels.sgd_step(buffers["params"], g, buffers.get("velocity"), step=step, **common)

    def twin(buffers, g, step):
        reference.sgd_step(buffers["params"], g, buffers.get("velocity"), step=step, **common)

    run_both(kernel, twin, params, grads, states, dtype, f"sgd {config_id(config)} n={n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n", OPT_LENGTHS)
@pytest.mark.parametrize("grad_scale,clip_value", PREPROCESS)
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=config_id)
def test_adam_step_matches_reference(config, grad_scale, clip_value, n, dtype):
    params, grads = optimizer_inputs(n, dtype, [n, 100 + ADAM_CONFIGS.index(config), np.dtype(dtype).itemsize])
    common = dict(lr=0.01, grad_scale=grad_scale, clip_value=clip_value, eps=1e-8, **config)

    def kernel(buffers, g, step):
        kernels.adam_step(buffers["params"], g, buffers["m"], buffers["v"], step=step, **common)

    def twin(buffers, g, step):
        reference.adam_step(buffers["params"], g, buffers["m"], buffers["v"], step=step, **common)

    run_both(kernel, twin, params, grads, ("m", "v"), dtype, f"adam {config_id(config)} n={n}")


def lamb_layout(n, pattern):
    """(segments, zero_weights, zero_grads): LAMB's segments over a buffer of n, with which
    positions start at zero weight and which get zero gradients at every step.

    "none": no segment (trust 1 everywhere); "one": the whole buffer; "several": a normal
    segment, a zero-weight one (trust 1 at the first step), a gap outside every segment, a
    zero-gradient one (zero update without weight decay: trust 1), another normal one, and the
    last value outside every segment.
    """
    zero_w, zero_g = np.zeros(n, bool), np.zeros(n, bool)
    if pattern == "none":
        return [], zero_w, zero_g
    if pattern == "one":
        return [(0, n)], zero_w, zero_g
    if n == 1:
        zero_w[0] = True
        return [(0, 1)], zero_w, zero_g
    if n == 3:  # a zero-weight segment, a value outside, a zero-gradient segment
        zero_w[0], zero_g[2] = True, True
        return [(0, 1), (2, 1)], zero_w, zero_g
    q = n // 7
    segments = [(0, 2 * q), (2 * q, q), (4 * q, q), (5 * q, n - 5 * q - 1)]  # [3q, 4q) and n-1 outside
    zero_w[2 * q : 3 * q] = True
    zero_g[4 * q : 5 * q] = True
    return segments, zero_w, zero_g


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n", OPT_LENGTHS)
@pytest.mark.parametrize("grad_scale,clip_value", PREPROCESS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("pattern", ["several", "one", "none"])
def test_lamb_step_matches_reference(pattern, weight_decay, grad_scale, clip_value, n, dtype):
    params, grads = optimizer_inputs(n, dtype, [n, 200 + len(pattern), int(weight_decay * 100), np.dtype(dtype).itemsize])
    segments, zero_w, zero_g = lamb_layout(n, pattern)
    params[zero_w] = 0
    for g in grads:
        g[zero_g] = 0
    common = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=weight_decay, segments=segments,
                  grad_scale=grad_scale, clip_value=clip_value)

    def kernel(buffers, g, step):
        kernels.lamb_step(buffers["params"], g, buffers["m"], buffers["v"], step=step, **common)

    def twin(buffers, g, step):
        reference.lamb_step(buffers["params"], g, buffers["m"], buffers["v"], step=step, **common)

    run_both(kernel, twin, params, grads, ("m", "v"), dtype, f"lamb {pattern} wd={weight_decay} n={n}")


def test_lamb_special_segments_behave_as_documented():
    """The special segments of lamb_layout do what their names say, in the kernel."""
    n = 700
    segments, zero_w, zero_g = lamb_layout(n, "several")
    params = np.random.default_rng(0).standard_normal(n)
    params[zero_w] = 0
    grads = np.random.default_rng(1).standard_normal(n)
    grads[zero_g] = 0
    m, v = np.zeros(n), np.zeros(n)
    before = params.copy()
    kernels.lamb_step(params, grads, m, v, lr=0.01, step=1, segments=segments)
    # first step of Adam's direction: m̂/(√v̂ + eps) = g/(|g| + eps) ≈ ±1; trust 1 → a move of lr
    assert_close(np.abs(params[zero_w]), 0.01 * np.abs(grads[zero_w]) / (np.abs(grads[zero_w]) + 1e-6), rtol=1e-12)
    assert np.array_equal(params[zero_g], before[zero_g])  # zero update
    outside = np.ones(n, bool)
    for offset, size in segments:
        outside[offset : offset + size] = False
    assert outside.sum() == 101  # the gap and the last value
    assert_close(params[outside] - before[outside], -0.01 * grads[outside] / (np.abs(grads[outside]) + 1e-6), rtol=1e-12)


THREAD_CASES = {
    "sgd": lambda p, g, s1, s2, step: kernels.sgd_step(p, g, s1, lr=0.05, momentum=0.9, nesterov=True,
                                                       weight_decay=0.01, step=step, grad_scale=0.5, clip_value=1.0),
    "sgd_plain": lambda p, g, s1, s2, step: kernels.sgd_step(p, g, None, lr=0.05, step=step),
    "adam": lambda p, g, s1, s2, step: kernels.adam_step(p, g, s1, s2, lr=0.01, weight_decay=0.1, step=step,
                                                         clip_value=1.0),
    "adamw": lambda p, g, s1, s2, step: kernels.adam_step(p, g, s1, s2, lr=0.01, weight_decay=0.1, step=step,
                                                          decoupled=True, grad_scale=0.5),
    "lamb": lambda p, g, s1, s2, step: kernels.lamb_step(p, g, s1, s2, lr=0.01, weight_decay=0.01, step=step,
                                                         segments=lamb_layout(p.size, "several")[0], clip_value=1.0),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kind", list(THREAD_CASES))
def test_optimizer_steps_are_bit_identical_across_thread_counts(kind, dtype, restore_num_threads):
    params, grads = optimizer_inputs(THREAD_LENGTH, dtype, [7, len(kind), np.dtype(dtype).itemsize])
    results = {}
    for threads in (1, 2):
        fm.set_num_threads(threads)
        p, s1, s2 = params.copy(), np.zeros_like(params), np.zeros_like(params)
        for step in range(1, STEPS + 1):
            THREAD_CASES[kind](p, grads[step - 1], s1, s2, step)
        results[threads] = (p, s1, s2)
    assert not np.array_equal(results[1][0], params)
    for a, b in zip(results[1], results[2]):
        assert np.array_equal(a, b)


# ---- schedules ----------------------------------------------------------------------------------------

SCHEDULE_SPECS = [None] + [
    {**spec, **warmup}
    for spec in (
        {"kind": "constant"},
        {"kind": "step", "step_size": 3, "gamma": 0.5},
        {"kind": "step", "step_size": 1, "gamma": 0.9},
        {"kind": "exponential", "gamma": 0.9},
        {"kind": "exponential", "gamma": 1.05},
        {"kind": "cosine", "total_steps": 40},
        {"kind": "cosine", "total_steps": 40, "min_factor": 0.0},
        {"kind": "cosine", "total_steps": 7, "min_factor": 0.1},
        {"kind": "cosine", "total_steps": 1, "min_factor": 1.0},
    )
    for warmup in ({}, {"warmup_steps": 0}, {"warmup_steps": 1}, {"warmup_steps": 5})
]


@pytest.mark.parametrize("spec", SCHEDULE_SPECS, ids=lambda s: "none" if s is None else config_id(s))
def test_schedule_factor_matches_reference(spec):
    for t in range(51):
        expected = reference.schedule_factor(spec, t)
        result = kernels.schedule_factor(spec, t)
        assert isinstance(result, float)
        assert_close(result, expected, rtol=1e-14, what=f"schedule_factor({spec}, {t})")


SCHEDULE_OBJECTS = [
    fm.Constant(),
    fm.StepDecay(3),
    fm.StepDecay(2, gamma=0.5),
    fm.Exponential(0.95),
    fm.Cosine(10),
    fm.Cosine(30, min_factor=0.2),
    fm.Warmup(4),
    fm.Warmup(2, fm.Cosine(10)),
    fm.Warmup(5, fm.StepDecay(4, gamma=0.3)),
    fm.Warmup(3, fm.Exponential(0.8)),
]


@pytest.mark.parametrize("schedule", SCHEDULE_OBJECTS, ids=repr)
def test_schedule_objects_match_reference(schedule):
    spec = schedule._spec()
    for t in range(51):
        assert_close(schedule.factor(t), reference.schedule_factor(spec, t), rtol=1e-14,
                     what=f"{schedule!r}.factor({t})")


# ---- initialisers ---------------------------------------------------------------------------------------

INIT_SIZES = ([3, 5, 2], [1, 64, 32, 1], [33, 7, 257])
SEEDS = (0, 1, 12345, 2**64 - 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sizes", INIT_SIZES, ids=str)
@pytest.mark.parametrize("scheme", reference.INIT_SCHEMES)
def test_init_params_matches_reference(scheme, sizes, seed, dtype):
    expected = reference.init_params(sizes, scheme, seed, dtype)
    result = kernels.init_params(sizes, scheme, seed, dtype)
    assert result.dtype == dtype and result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)  # the same generator, the same libm: equal


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("sizes", INIT_SIZES, ids=str)
def test_init_params_with_one_scheme_per_layer(sizes, dtype):
    schemes = [reference.INIT_SCHEMES[(i * 5 + 1) % 6] for i in range(len(sizes) - 1)]
    np.testing.assert_array_equal(kernels.init_params(sizes, schemes, 7, dtype),
                                  reference.init_params(sizes, schemes, 7, dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", [0, 3, 2**63 + 5])
@pytest.mark.parametrize("sizes", INIT_SIZES, ids=str)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "mixed"])
def test_network_auto_init_matches_reference(activation, sizes, seed, dtype):
    if activation == "mixed":  # one per hidden layer: tanh, relu, tanh, ...
        activation = [("tanh", "relu")[i % 2] for i in range(len(sizes) - 2)]
    net = fm.Network(sizes, activation=activation, init="auto", seed=seed, dtype=dtype)
    schemes = [reference.resolve_init("auto", a) for a in net.activations]
    assert tuple(schemes) == net.init
    expected = reference.init_params(sizes, schemes, seed, dtype)
    assert net.params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(net.params, expected)


# ---- whole-network training -------------------------------------------------------------------------------

N_SAMPLES = 20  # batches of 8, 8 and 4: a ragged last batch
EPOCHS = 4

# name -> (loss, huber_delta, outputs)
TRAIN_LOSSES = {
    "mse": ("mse", 1.0, 2),
    "huber": ("huber", 1.0, 2),
    "huber_delta0.5": ("huber", 0.5, 2),
    "cross_entropy": ("cross_entropy", 1.0, 3),
    "binary_cross_entropy": ("binary_cross_entropy", 1.0, 2),
}

OPTIMIZERS = {
    "sgd": lambda **kw: fm.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw),
    "adam": lambda **kw: fm.Adam(lr=1e-2, weight_decay=1e-3, **kw),
    "adamw": lambda **kw: fm.AdamW(lr=1e-2, **kw),
    "lamb": lambda **kw: fm.LAMB(lr=1e-2, weight_decay=1e-2, **kw),
}

VARIANTS = {
    "plain": {},
    "schedule": {"schedule": fm.Warmup(2, fm.Cosine(10))},
    "clipping": {"clip_norm": 0.5, "clip_value": 0.1},
    "schedule+clipping": {"schedule": fm.Warmup(2, fm.Cosine(10)), "clip_norm": 0.5, "clip_value": 0.1},
}


def toy_problem(loss, outputs, n=N_SAMPLES):
    """(X, y for fm.Network.fit, dense y for the twin)."""
    rng = np.random.default_rng(42)
    X = rng.standard_normal((n, 2))
    if loss == "cross_entropy":  # three classes, integer labels
        labels = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.3).astype(np.int64)
        assert set(labels) == {0, 1, 2}
        return X, labels, np.eye(outputs)[labels]
    if loss == "binary_cross_entropy":
        y = np.stack([X[:, 0] > 0, X[:, 0] * X[:, 1] > 0], axis=1).astype(np.float64)
        return X, y, y
    y = np.stack([np.sin(2 * X[:, 0]), X[:, 1] ** 2 - X[:, 0]], axis=1) * 1.5  # residuals past delta too
    return X, y, y


def twin_optimizer(opt) -> reference.Optimizer:
    """reference.Optimizer with the rule, numbers, schedule and clipping of a fastmlp optimizer."""
    kind = {fm.SGD: "sgd", fm.Adam: "adam", fm.AdamW: "adamw", fm.LAMB: "lamb"}[type(opt)]
    common = dict(weight_decay=opt.weight_decay, clip_norm=opt.clip_norm, clip_value=opt.clip_value,
                  schedule=None if opt.schedule is None else opt.schedule._spec())
    if kind == "sgd":
        extra = dict(momentum=opt.momentum, dampening=opt.dampening, nesterov=opt.nesterov)
    else:
        extra = dict(beta1=opt.betas[0], beta2=opt.betas[1], eps=opt.eps)
    return reference.Optimizer(kind, opt.lr, **common, **extra)


def train_both(loss_key, opt, dtype, n=N_SAMPLES, batch_size=8):
    loss, delta, outputs = TRAIN_LOSSES[loss_key]
    net = fm.Network([2, 6, outputs], activation="tanh", loss=loss, huber_delta=delta, dtype=dtype, seed=0)
    # built explicitly: from_network does not carry huber_delta (see the discrepancy test below)
    twin = reference.Network(net.layer_sizes, net.activations, dtype, params=net.params, loss=net.loss,
                             delta=net.huber_delta)
    start = np.array(net.params)
    X, y, y_dense = toy_problem(loss, outputs, n)
    history = net.fit(X, y, epochs=EPOCHS, batch_size=batch_size, shuffle=False, optimizer=opt)
    expected = twin.fit(X, y_dense, epochs=EPOCHS, batch_size=batch_size, optimizer=twin_optimizer(opt))
    assert not np.array_equal(net.params, start)
    assert len(history) == EPOCHS
    return net, twin, history, expected


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("opt_key", list(OPTIMIZERS))
@pytest.mark.parametrize("loss_key", list(TRAIN_LOSSES))
def test_fit_matches_reference_float64(loss_key, opt_key, variant):
    opt = OPTIMIZERS[opt_key](**VARIANTS[variant])
    net, twin, history, expected = train_both(loss_key, opt, "float64")
    what = f"{loss_key} {opt!r}"
    assert_close(net.params, twin.params, rtol=1e-10, atol=1e-14, what=f"params {what}")
    for key in ("loss", "grad_norm", "lr"):
        assert_close(history[key], expected[key], rtol=1e-10, what=f"history {key} {what}")
    if "schedule" in variant:  # the schedule is used: warm-up then cosine
        assert_close(expected["lr"][0], opt.lr * reference.schedule_factor(opt.schedule._spec(), 2), rtol=1e-14)


@pytest.mark.parametrize("opt_key", ["sgd", "adam"])
@pytest.mark.parametrize("loss_key", list(TRAIN_LOSSES))
def test_split_step_fit_matches_reference_float64(loss_key, opt_key):
    # Batches of 100 rows through a small network: each step runs as two pieces
    # (48 + 52 rows, forward and backward apart, gradients summed); the last batch
    # of 50 is one piece. The twin computes every batch whole.
    net, twin, history, expected = train_both(loss_key, OPTIMIZERS[opt_key](), "float64", n=150,
                                              batch_size=100)
    what = f"split step {loss_key} {opt_key}"
    assert_close(net.params, twin.params, rtol=1e-10, atol=1e-14, what=f"params {what}")
    for key in ("loss", "grad_norm"):
        assert_close(history[key], expected[key], rtol=1e-10, what=f"history {key} {what}")


@pytest.mark.parametrize("opt_key,loss_key", [("sgd", "mse"), ("adam", "cross_entropy"),
                                              ("adamw", "binary_cross_entropy"), ("lamb", "huber_delta0.5")])
def test_fit_matches_reference_float32(opt_key, loss_key):
    opt = OPTIMIZERS[opt_key](**VARIANTS["schedule+clipping" if opt_key in ("adam", "lamb") else "plain"])
    net, twin, history, expected = train_both(loss_key, opt, "float32")
    assert net.params.dtype == np.float32 and twin.params.dtype == np.float32
    assert_close(net.params, twin.params, rtol=1e-4, atol=1e-6, what=f"params {loss_key} {opt!r}")
    for key in ("loss", "grad_norm", "lr"):
        assert_close(history[key], expected[key], rtol=1e-4, what=f"history {key}")


@pytest.mark.parametrize("loss_key", list(TRAIN_LOSSES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_network_carries_loss_dtype_and_params(loss_key, dtype):
    loss, delta, outputs = TRAIN_LOSSES[loss_key]
    net = fm.Network([2, 6, outputs], activation="tanh", loss=loss, huber_delta=delta, dtype=dtype, seed=3)
    twin = reference.Network.from_network(net)
    assert twin.loss_name == net.loss
    assert twin.dtype == net.dtype
    assert twin.activations == net.activations
    np.testing.assert_array_equal(twin.params, net.params)
    X, _, y_dense = toy_problem(loss, outputs)
    assert_close(twin.forward(X), net.forward(X), rtol=rtol_of(dtype), atol=1e-6 if dtype == "float32" else 1e-14)


# ---- agreements that were once discrepancies (found while writing this file, then fixed) ---------------


def test_from_network_carries_huber_delta():
    net = fm.Network([2, 3, 1], activation="tanh", loss="huber", huber_delta=0.5, dtype="float64", seed=0)
    twin = reference.Network.from_network(net)
    assert twin.delta == net.huber_delta


def test_clip_value_zero_is_refused_by_kernels_and_twins():
    # None means no clamping; 0 is not a clamp either side would agree on.
    g = np.array([3.0, -4.0])
    for module in (kernels, reference):
        with pytest.raises(ValueError, match="clip_value"):
            module.grad_norm(g, 0.0)
        with pytest.raises(ValueError, match="clip_value"):
            module.sgd_step(np.array([1.0, 2.0]), g, None, lr=0.1, clip_value=0.0)


def test_lamb_step_takes_segments_in_any_order():
    params = np.arange(1.0, 7.0)
    args = dict(lr=0.1, step=1, segments=[(3, 3), (0, 3)])
    twin, twin_m, twin_v = params.copy(), np.zeros(6), np.zeros(6)
    reference.lamb_step(twin, np.ones(6), twin_m, twin_v, **args)
    mine, m, v = params.copy(), np.zeros(6), np.zeros(6)
    kernels.lamb_step(mine, np.ones(6), m, v, **args)
    assert_close(mine, twin, rtol=1e-12)


def test_loss_dtype_with_float32_pred_and_float64_target():
    pred = np.array([[0.1, 0.2, 0.7]], dtype=np.float32)
    target = np.array([[0.3, 1.0 / 3.0, 0.1]])
    assert kernels.loss_backward("mse", pred, target).dtype == reference.loss_backward("mse", pred, target).dtype
    assert kernels.loss_forward("mse", pred, target) == reference.loss_forward("mse", pred, target)


def test_engine_clip_norm_at_the_threshold():
    net = fm.Network([2, 3, 1], activation="tanh", dtype="float64", seed=0)
    grads = np.random.default_rng(0).standard_normal(net.n_params)
    net.grads[...] = grads
    clip_norm = kernels.grad_norm(grads)  # the gradient's norm is exactly clip_norm
    twin = np.array(net.params)
    reference.Optimizer("sgd", 0.1, clip_norm=clip_norm).step(twin, grads)
    net.step(fm.SGD(lr=0.1, clip_norm=clip_norm))
    assert_close(net.params, twin, rtol=1e-10, what="params after one clipped step")


def test_sgd_step_with_gradients_whose_squares_overflow_float32():
    # |g| = 1e20: g² overflows float32, yet lr · g is small and every new value
    # finite. The update must happen (a sum it was not asked for must not stop it).
    params = np.ones(40, dtype=np.float32)
    grads = np.full(40, 1e20, dtype=np.float32)
    expected = params.copy()
    reference.sgd_step(expected, grads, None, lr=1e-21)
    kernels.sgd_step(params, grads, None, lr=1e-21)
    np.testing.assert_array_equal(params, expected)
    assert not np.array_equal(params, np.ones(40, dtype=np.float32))


def test_engine_fit_refuses_a_bad_huber_delta_before_any_thread_runs():
    # Called directly (the Python layer checks it first), the engine must raise,
    # not fail inside a worker: the split step computes the loss on the pool's threads.
    net = fm.Network([2, 4, 1], loss="huber", dtype="float64", seed=0)
    X = np.zeros((100, 2))
    y = np.zeros((100, 1))
    start = net.params.copy()
    with pytest.raises(ValueError, match="huber's delta"):
        net._core.fit(X, y, 1, 100, False, "huber", 0.0, _core.OptimizerConfig(kind="sgd", lr=0.1), None, False)
    np.testing.assert_array_equal(net.params, start)
