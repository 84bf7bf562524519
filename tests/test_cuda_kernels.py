"""The CUDA kernels (cpp/cuda/, bound one by one as fastmlp._core.cuda) against their
NumPy twins in fastmlp.reference.

float32 results are held to the twin computed in float64 on the same (upcast) inputs
(relative 1e-4 of the largest value, the GPU's libdevice and FMA contractions differ
from NumPy's rounding); float64 to about 1e-12. Shapes include the awkward ones (1, 3,
7, 33, 257) that leave partial tiles and warps. The whole module is skipped unless
this fastmlp was built with CUDA and a GPU is present.
"""

from __future__ import annotations

import glob
import math
import os
import sys
import threading

import numpy as np
import pytest

from fastmlp import _core
from fastmlp.reference import activation as ref_activation
from fastmlp.reference import layers as ref_layers
from fastmlp.reference import loss as ref_loss
from fastmlp.reference import optimizer as ref_optimizer

pytestmark = pytest.mark.cuda

cuda = getattr(_core, "cuda", None)
if cuda is None or not cuda.available():
    pytest.skip("needs fastmlp built with CUDA and a GPU", allow_module_level=True)

DTYPES = [np.float32, np.float64]
ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "swish", "gelu")
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy", "huber")
SIZES = (1, 3, 7, 33, 257)


def tolerance(dtype):
    return 1e-4 if dtype == np.float32 else 1e-11


def assert_close(actual, expected, dtype, scale=None, what=""):
    """|actual − expected| <= tol · max(1, max |expected|) (· scale), the max difference
    named on failure."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    size = max(1.0, float(np.max(np.abs(expected)))) * (1.0 if scale is None else scale)
    diff = float(np.max(np.abs(actual - expected)))
    assert diff <= tolerance(dtype) * size, f"{what}: max difference {diff:.3g} (allowed {tolerance(dtype) * size:.3g})"


def random(rng, shape, dtype, low=-2.0, high=2.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def as64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# ---- GEMM ----------------------------------------------------------------------------------
def cublas_candidates():
    """libcublas files a pip-installed CUDA (torch's nvidia-cublas) or the toolkit ships."""
    found = []
    for root in sys.path:
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cublas", "lib", "libcublas.so.*")))
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libcublas.so.*")))
    found += sorted(glob.glob("/usr/local/cuda/lib64/libcublas.so.*"))
    return [path for path in found if "Lt" not in os.path.basename(path)]


@pytest.fixture(scope="module")
def cublas():
    """Loads cuBLAS (the loader's search, else a file found on disk); skips without one."""
    name = cuda.cublas_load("")
    for path in cublas_candidates():
        if name:
            break
        name = cuda.cublas_load(path)
    if not name:
        pytest.skip("no libcublas found")
    cuda.use_cublas(True)
    return name


def gemm_operands(rng, m, n, k, op_a, op_b, dtype):
    a = random(rng, (m, k) if op_a == "N" else (k, m), dtype)
    b = random(rng, (k, n) if op_b == "N" else (n, k), dtype)
    return a, b


def gemm_twin(a, b, op_a, op_b, c, beta, bias, activation):
    a64, b64 = as64(a, b)
    z = (a64.T if op_a == "T" else a64) @ (b64.T if op_b == "T" else b64)
    if beta:
        z = z + np.asarray(c, dtype=np.float64)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    return ref_activation.activation_forward(z, activation), z


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op_a", ["N", "T"])
@pytest.mark.parametrize("op_b", ["N", "T"])
def test_own_gemm_awkward_sizes(dtype, op_a, op_b):
    rng = np.random.default_rng(1)
    for m, n, k in [(1, 1, 1), (3, 7, 33), (33, 3, 7), (257, 33, 3), (7, 257, 65), (64, 64, 16), (65, 1, 257)]:
        a, b = gemm_operands(rng, m, n, k, op_a, op_b, dtype)
        c = cuda.gemm(a, b, op_a=op_a, op_b=op_b, own=True)
        expected, _ = gemm_twin(a, b, op_a, op_b, None, 0, None, "linear")
        assert c.dtype == dtype
        assert_close(c, expected, dtype, scale=math.sqrt(k), what=f"gemm {op_a}{op_b} {m}x{n}x{k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_own_gemm_epilogue(dtype, activation):
    rng = np.random.default_rng(2)
    m, n, k = 33, 70, 19
    a, b = gemm_operands(rng, m, n, k, "N", "T", dtype)
    c0 = random(rng, (m, n), dtype)
    bias = random(rng, (n,), dtype)
    for beta in (0, 1):
        c, z = cuda.gemm(a, b, op_a="N", op_b="T", c=c0, beta=beta, bias=bias, activation=activation,
                         keep_z=True, own=True)
        expected, expected_z = gemm_twin(a, b, "N", "T", c0, beta, bias, activation)
        assert_close(z, expected_z, dtype, scale=math.sqrt(k), what="z")
        assert_close(c, expected, dtype, scale=math.sqrt(k), what=f"c ({activation}, beta {beta})")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_k_zero_and_beta(dtype):
    rng = np.random.default_rng(3)
    a = np.zeros((5, 0), dtype=dtype)
    b = np.zeros((0, 4), dtype=dtype)
    c0 = random(rng, (5, 4), dtype)
    bias = random(rng, (4,), dtype)
    c = cuda.gemm(a, b, c=c0, beta=1, bias=bias, activation="relu", own=True)
    np.testing.assert_array_equal(c, np.maximum(c0 + bias, 0))
    c = cuda.gemm(a, b, own=True)
    np.testing.assert_array_equal(c, np.zeros((5, 4), dtype=dtype))


def test_gemm_bad_shapes():
    a = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="op"):
        cuda.gemm(a, np.ones((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="beta"):
        cuda.gemm(a, np.ones((4, 2), dtype=np.float32), beta=1)
    with pytest.raises(ValueError, match="bias"):
        cuda.gemm(a, np.ones((4, 2), dtype=np.float32), bias=np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError):
        cuda.gemm(a, np.ones((4, 2), dtype=np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_non_contiguous_inputs(dtype):
    rng = np.random.default_rng(4)
    big = random(rng, (80, 90), dtype)
    a = big[::2, 1::3]  # (40, 30), strided both ways
    b = random(rng, (60, 50), dtype)[::2, :].T  # (50, 30) viewed transposed: not C-contiguous
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    c = cuda.gemm(a, b, op_b="T", own=True)
    expected, _ = gemm_twin(a, b, "N", "T", None, 0, None, "linear")
    assert_close(c, expected, dtype, scale=math.sqrt(30), what="gemm of views")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_deterministic(dtype):
    rng = np.random.default_rng(5)
    a, b = gemm_operands(rng, 129, 65, 300, "T", "N", dtype)
    first = cuda.gemm(a, b, op_a="T", own=True)
    for _ in range(3):
        np.testing.assert_array_equal(cuda.gemm(a, b, op_a="T", own=True), first)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op_a", ["N", "T"])
@pytest.mark.parametrize("op_b", ["N", "T"])
def test_cublas_gemm(cublas, dtype, op_a, op_b):
    # Large enough (m·n·k >= 2^21) for gemm to take cuBLAS; odd sizes on purpose.
    assert cuda.cublas_active()
    rng = np.random.default_rng(6)
    m, n, k = 257, 131, 97
    a, b = gemm_operands(rng, m, n, k, op_a, op_b, dtype)
    c0 = random(rng, (m, n), dtype)
    bias = random(rng, (n,), dtype)
    for beta, activation, with_bias in [(0, "linear", False), (1, "tanh", True), (0, "relu", True)]:
        c, z = cuda.gemm(a, b, op_a=op_a, op_b=op_b, c=c0, beta=beta, bias=bias if with_bias else None,
                         activation=activation, keep_z=True)
        expected, expected_z = gemm_twin(a, b, op_a, op_b, c0, beta, bias if with_bias else None, activation)
        assert_close(z, expected_z, dtype, scale=math.sqrt(k), what=f"cuBLAS z {op_a}{op_b}")
        assert_close(c, expected, dtype, scale=math.sqrt(k), what=f"cuBLAS c {op_a}{op_b} {activation}")
        again = cuda.gemm(a, b, op_a=op_a, op_b=op_b, c=c0, beta=beta, bias=bias if with_bias else None,
                          activation=activation)
        np.testing.assert_array_equal(again, c)  # deterministic


def test_cublas_off_gives_own_kernel(cublas):
    rng = np.random.default_rng(7)
    a, b = gemm_operands(rng, 256, 128, 128, "N", "N", np.float32)
    own = cuda.gemm(a, b, own=True)
    cuda.use_cublas(False)
    try:
        assert not cuda.cublas_active()
        np.testing.assert_array_equal(cuda.gemm(a, b), own)
    finally:
        cuda.use_cublas(True)


def test_cublas_off_by_environment(cublas, monkeypatch):
    rng = np.random.default_rng(19)
    a, b = gemm_operands(rng, 256, 128, 128, "N", "T", np.float32)
    own = cuda.gemm(a, b, op_b="T", own=True)
    monkeypatch.setenv("FASTMLP_CUDA_GEMM", "own")
    assert not cuda.cublas_active()
    np.testing.assert_array_equal(cuda.gemm(a, b, op_b="T"), own)
    monkeypatch.delenv("FASTMLP_CUDA_GEMM")
    assert cuda.cublas_active()


def test_gemm_from_threads(cublas):
    # Each thread its own stream and cuBLAS handle; the products as on one thread.
    rng = np.random.default_rng(20)
    operands = [gemm_operands(rng, 300, 200, 100, "N", "N", np.float32) for _ in range(4)]
    expected = [cuda.gemm(a, b) for a, b in operands]
    results = {}

    def work(index):
        results[index] = [cuda.gemm(a, b) for a, b in operands for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(3):
        for j, c in enumerate(results[index]):
            np.testing.assert_array_equal(c, expected[j // 3])


# ---- activations ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations(dtype, activation):
    rng = np.random.default_rng(8)
    z = random(rng, (37, 33), dtype, -6, 6)
    z[0, :4] = [0, -0.0, 1e-30, -1e-30]
    da = random(rng, z.shape, dtype)
    a = cuda.activation_forward(activation, z)
    z64, da64 = as64(z, da)
    a64 = ref_activation.activation_forward(z64, activation)
    assert a.dtype == dtype
    assert_close(a, a64, dtype, what=f"{activation} forward")
    np.testing.assert_array_equal(cuda.activation_forward(activation, z, in_place=True), a)
    dz = cuda.activation_backward(activation, da, z, a)
    dz64 = ref_activation.activation_backward(da64, z64, a64, activation)
    assert_close(dz, dz64, dtype, what=f"{activation} backward")
    np.testing.assert_array_equal(cuda.activation_backward(activation, da, z, a, in_place=True), dz)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 7), (257, 33), (1000, 3), (7, 70)])
def test_activation_bias_backward(dtype, activation, rows, cols):
    rng = np.random.default_rng(9)
    z = random(rng, (rows, cols), dtype)
    a = ref_activation.activation_forward(z, activation)
    da = random(rng, z.shape, dtype)
    dz, db = cuda.activation_bias_backward(activation, da, z, a)
    dz64 = ref_activation.activation_backward(*as64(da, z, a), activation=activation)
    assert_close(dz, dz64, dtype, what="dz")
    assert_close(db, dz64.sum(axis=0), dtype, scale=math.sqrt(rows), what="d_bias")
    start = random(rng, (cols,), dtype)
    dz2, db2 = cuda.activation_bias_backward(activation, da, z, a, d_bias=start, in_place=True)
    np.testing.assert_array_equal(dz2, dz)
    assert_close(db2, dz64.sum(axis=0) + start, dtype, scale=math.sqrt(rows), what="d_bias accumulated")
    dz3, none = cuda.activation_bias_backward(activation, da, z, a, with_bias=False)
    assert none is None
    np.testing.assert_array_equal(dz3, dz)
    # the same bits every run
    np.testing.assert_array_equal(cuda.activation_bias_backward(activation, da, z, a)[1], db)


# ---- rows ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_rows(dtype):
    rng = np.random.default_rng(10)
    src = random(rng, (257, 7), dtype)
    order = rng.permutation(257).astype(np.int32)
    for first, rows in [(0, 257), (5, 33), (256, 1), (3, 0)]:
        np.testing.assert_array_equal(cuda.gather_rows(src, order, first, rows), src[order[first:first + rows]])
        if first + rows <= 257:
            np.testing.assert_array_equal(cuda.gather_rows(src, None, first, rows), src[first:first + rows])
    weights = random(rng, (257, 1), dtype)
    np.testing.assert_array_equal(cuda.gather_rows(weights, order, 2, 100), weights[order[2:102]])
    with pytest.raises(ValueError, match="order"):
        cuda.gather_rows(src, order, 250, 10)
    with pytest.raises(ValueError, match="not a row"):
        cuda.gather_rows(src, np.array([300], dtype=np.int32), 0, 1)


# ---- loss ------------------------------------------------------------------------------------
def loss_inputs(rng, loss, rows, outputs, dtype):
    pred = random(rng, (rows, outputs), dtype, -3, 3)
    if loss == "cross_entropy":
        target = np.zeros((rows, outputs), dtype=dtype)
        target[np.arange(rows), rng.integers(0, outputs, rows)] = 1
    elif loss == "binary_cross_entropy":
        target = rng.integers(0, 2, (rows, outputs)).astype(dtype)
    else:
        target = random(rng, (rows, outputs), dtype, -3, 3)
    return pred, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("rows, outputs", [(1, 1), (3, 7), (257, 10), (33, 1), (2000, 3)])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss(dtype, loss, rows, outputs, weighted):
    rng = np.random.default_rng(11)
    pred, target = loss_inputs(rng, loss, rows, outputs, dtype)
    weight = rng.uniform(0, 3, rows).astype(dtype) if weighted else None
    delta = 0.7
    loss_sum, correct, normalizer, grad, status = cuda.loss_forward_backward(
        loss, pred, target, weight, delta=delta, count_correct=True)
    assert status == 0
    p64, t64 = as64(pred, target)
    w64 = None if weight is None else np.asarray(weight, dtype=np.float64)
    mean = ref_loss.loss_forward(loss, p64, t64, delta, w64)
    batch = rows if weight is None else float(w64.sum())
    assert normalizer == pytest.approx(batch if loss == "cross_entropy" else batch * outputs, rel=1e-12)
    assert loss_sum / normalizer == pytest.approx(mean, rel=tolerance(dtype), abs=tolerance(dtype))
    assert_close(grad, ref_loss.loss_backward(loss, p64, t64, delta, w64), dtype, what=f"{loss} grad")
    expected_correct = ref_loss.count_correct(loss, pred, target, weight)
    assert correct == pytest.approx(expected_correct, rel=1e-6 if dtype == np.float32 else 1e-12)
    # in place (grad over pred), without counting, and with no gradient
    in_place = cuda.loss_forward_backward(loss, pred, target, weight, delta=delta, in_place=True)
    np.testing.assert_array_equal(in_place[3], grad)
    assert in_place[0] == loss_sum and in_place[1] == 0
    no_grad = cuda.loss_forward_backward(loss, pred, target, weight, delta=delta, grad=False)
    assert no_grad[3] is None and no_grad[0] == loss_sum


def test_loss_count_correct_nan_and_ties():
    pred = np.array([[1, 3, 3], [np.nan, 5, 5], [2, np.nan, np.nan], [0, 0, 0]], dtype=np.float32)
    target = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
    _, correct, _, _, _ = cuda.loss_forward_backward("cross_entropy", pred, target, count_correct=True,
                                                     with_state=False)
    assert correct == 4  # first max; the first NaN counts as the largest


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_status_protocol(dtype):
    rng = np.random.default_rng(12)
    pred, target = loss_inputs(rng, "mse", 9, 4, dtype)
    pred[3, 2] = np.nan
    *_, status = cuda.loss_forward_backward("mse", pred, target, step=2)
    assert status == 1  # step_bad_loss
    pred[3, 2] = 0
    # a state already failed: nothing is written (the figures stay 0)
    loss_sum, correct, normalizer, _, status = cuda.loss_forward_backward("mse", pred, target, status=2,
                                                                          count_correct=True)
    assert (loss_sum, normalizer, status) == (0.0, 0.0, 2)
    if dtype == np.float32:  # a mean beyond float32's range is a bad loss too
        big = np.full((2, 1), 3e38, dtype=np.float32)
        *_, status = cuda.loss_forward_backward("mse", big, -big)
        assert status == 1


def test_loss_zero_weight_batch():
    pred = np.ones((4, 2), dtype=np.float64)
    target = np.zeros((4, 2), dtype=np.float64)
    loss_sum, _, normalizer, grad, status = cuda.loss_forward_backward("mse", pred, target, np.zeros(4))
    assert (loss_sum, normalizer, status) == (0.0, 0.0, 0)
    np.testing.assert_array_equal(grad, 0)


# ---- optimizer ------------------------------------------------------------------------------
OPTIMIZER_CASES = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("sgd", {"momentum": 0.5, "dampening": 0.3, "clip_value": 0.5}),
    ("sgd", {"clip_norm": 0.5}),
    ("adam", {}),
    ("adam", {"weight_decay": 0.1, "clip_norm": 1.0}),
    ("adamw", {"weight_decay": 0.1, "clip_value": 0.3}),
    ("lamb", {"eps": 1e-6}),
    ("lamb", {"eps": 1e-6, "weight_decay": 0.01, "clip_norm": 2.0}),
]
SCHEDULES = [
    None,
    {"kind": "step", "step_size": 2, "gamma": 0.5, "warmup_steps": 1},
    {"kind": "cosine", "total_steps": 3, "min_factor": 0.1},
    {"kind": "exponential", "gamma": 0.9},
]


def configs(kind, options, schedule):
    config = _core.OptimizerConfig(kind=kind, lr=0.05, **options)
    schedule_config = _core.ScheduleConfig(**(schedule or {}))
    twin = ref_optimizer.Optimizer(kind, 0.05, schedule=schedule,
                                   **{k: (v if v else None) if k in ("clip_norm", "clip_value") else v
                                      for k, v in options.items()})
    return config, schedule_config, twin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, options", OPTIMIZER_CASES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_optimizer_steps(dtype, kind, options, schedule):
    rng = np.random.default_rng(13)
    n = 10_000  # three chunks of 4096, the last partial
    segments = [(0, 3), (3, 4093), (4096, 1), (4097, 5903)]
    config, schedule_config, twin = configs(kind, options, schedule)
    params = random(rng, (n,), dtype)
    twin_params = params.astype(np.float64)
    s1 = np.zeros(n, dtype=dtype) if config.state_buffers >= 1 else None
    s2 = np.zeros(n, dtype=dtype) if config.state_buffers >= 2 else None
    for t in range(4):
        grads = random(rng, (n,), dtype, -1, 1)
        params, s1, s2, grad_norm, lr, status, state = cuda.optimizer_update(
            config, schedule_config, params, grads, s1, s2, segments, t=t, step=t)
        expected = twin.step(twin_params, grads.astype(np.float64), segments)
        assert status == 0 and state["kept"] == 0
        assert state["t"] == t + 1 and state["step"] == t + 1
        assert grad_norm == pytest.approx(expected["grad_norm"], rel=1e-6 if dtype == np.float32 else 1e-12)
        assert lr == pytest.approx(expected["lr"], rel=1e-13)
        assert_close(params, twin_params, dtype, what=f"{kind} params after {t + 1} steps")
        if s1 is not None:
            assert_close(s1, twin.velocity if kind == "sgd" else twin.m, dtype, what="s1")
        if s2 is not None:
            assert_close(s2, twin.v, dtype, scale=1.0, what="s2")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("segments", [[], [(100, 4000), (4100, 1)], [(0, 9000)], [(7, 0), (5000, 5000)]])
def test_lamb_gaps_between_segments(dtype, segments):
    # Parameters outside every segment are updated with trust 1, as on the CPU.
    rng = np.random.default_rng(21)
    n = 10_000
    config, schedule_config, twin = configs("lamb", {"eps": 1e-6, "weight_decay": 0.01}, None)
    params = random(rng, (n,), dtype)
    twin_params = params.astype(np.float64)
    s1, s2 = np.zeros(n, dtype=dtype), np.zeros(n, dtype=dtype)
    for t in range(2):
        grads = random(rng, (n,), dtype, -1, 1)
        params, s1, s2, *_ = cuda.optimizer_update(config, schedule_config, params, grads, s1, s2, segments, t=t)
        twin.step(twin_params, grads.astype(np.float64), segments)
        assert_close(params, twin_params, dtype, what=f"lamb with segments {segments}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd", "adam", "lamb"])
def test_optimizer_bad_gradient_changes_nothing(dtype, kind):
    rng = np.random.default_rng(14)
    n = 5000
    config = _core.OptimizerConfig(kind=kind, lr=0.1, momentum=0.9 if kind == "sgd" else 0.0)
    schedule = _core.ScheduleConfig()
    params = random(rng, (n,), dtype)
    grads = random(rng, (n,), dtype)
    grads[4321] = np.nan
    s1 = random(rng, (n,), dtype) if config.state_buffers >= 1 else None
    s2 = np.abs(random(rng, (n,), dtype)) if config.state_buffers >= 2 else None
    out, o1, o2, _, _, status, state = cuda.optimizer_update(config, schedule, params, grads, s1, s2,
                                                             [(0, n)], t=3, step=5)
    assert status == 2  # step_bad_gradient
    assert state["failed_step"] == 5 and state["t"] == 3 and state["step"] == 6
    np.testing.assert_array_equal(out, params)
    for before, after in [(s1, o1), (s2, o2)]:
        if before is not None:
            np.testing.assert_array_equal(after, before)
    # a state already failed: nothing changes, not even with a good gradient
    grads[4321] = 0
    out, *_, status, state = cuda.optimizer_update(config, schedule, params, grads, s1, s2, [(0, n)],
                                                   t=3, status=1)
    assert status == 1 and state["t"] == 3 and state["step"] == 1
    np.testing.assert_array_equal(out, params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_bad_update(dtype):
    huge = np.finfo(dtype).max
    n = 100
    params = np.ones(n, dtype=dtype)
    grads = np.ones(n, dtype=dtype)
    # p − lr · g overflows at 7 alone, while Σ g² (in double) stays finite
    if dtype == np.float32:
        lr, params[7], grads[7] = 2.0, huge, -huge
    else:
        lr, grads[7] = 1e300, -1e10
    schedule = _core.ScheduleConfig()
    sgd = _core.OptimizerConfig(kind="sgd", lr=lr)
    out, _, _, _, _, status, state = cuda.optimizer_update(sgd, schedule, params, grads, t=4)
    assert status == 3 and state["kept"] == 1
    assert state["t"] == 4  # SGD changes nothing, and counts no update
    np.testing.assert_array_equal(out, params)
    # Adam's step is about lr: with lr at the limit, the parameter at -limit overflows and
    # keeps its value while the rest move
    adam = _core.OptimizerConfig(kind="adam", lr=float(huge))
    grads[7] = 1
    params[7] = -huge
    out, m, v, _, _, status, state = cuda.optimizer_update(adam, schedule, params, grads, np.zeros(n, dtype),
                                                           np.zeros(n, dtype), t=0)
    assert status == 3 and state["kept"] == 1 and state["t"] == 1
    assert out[7] == params[7] and np.all(out[:7] != params[:7])


def test_optimizer_scratch_and_bad_arguments():
    assert cuda.optimizer_scratch(0, 0) >= 1
    assert cuda.optimizer_scratch(10_000, 4) > cuda.optimizer_scratch(10_000, 0)
    config = _core.OptimizerConfig(kind="lamb", lr=0.1)
    p = np.zeros(10, dtype=np.float32)
    with pytest.raises(ValueError, match="in order"):
        cuda.optimizer_update(config, _core.ScheduleConfig(), p, p, p, p, [(5, 3), (0, 5)])
    with pytest.raises(ValueError, match="inside"):
        cuda.optimizer_update(config, _core.ScheduleConfig(), p, p, p, p, [(5, 6)])
    with pytest.raises(ValueError, match="s2"):
        cuda.optimizer_update(config, _core.ScheduleConfig(), p, p, p, None, [(0, 10)])


# ---- layers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, width", [(1, 1), (3, 7), (33, 257), (257, 33), (5, 1000)])
def test_layer_norm(dtype, rows, width):
    rng = np.random.default_rng(15)
    x = random(rng, (rows, width), dtype) + dtype(3)
    gain, bias = random(rng, (width,), dtype), random(rng, (width,), dtype)
    y, xhat, rstd = cuda.layer_norm_forward(x, gain, bias, eps=1e-5)
    ey, exhat, erstd = ref_layers.layer_norm(*as64(x, gain, bias), eps=1e-5)
    assert_close(y, ey, dtype, what="y")
    assert_close(xhat, exhat, dtype, what="xhat")
    assert_close(rstd, erstd, dtype, what="rstd")
    np.testing.assert_array_equal(cuda.layer_norm_forward(x, gain, bias, in_place=True)[0], y)
    dy = random(rng, (rows, width), dtype)
    dx, dg, db = cuda.layer_norm_backward(dy, xhat, rstd, gain)
    edx, edg, edb = ref_layers.layer_norm_backward(*as64(dy, xhat, rstd, gain))
    assert_close(dx, edx, dtype, what="dx")
    assert_close(dg, edg, dtype, scale=math.sqrt(rows), what="d_gain")
    assert_close(db, edb, dtype, scale=math.sqrt(rows), what="d_bias")
    dx2, dg2, db2 = cuda.layer_norm_backward(dy, xhat, rstd, gain, d_gain=dg, d_bias=db, in_place=True)
    np.testing.assert_array_equal(dx2, dx)
    assert_close(dg2, 2 * edg, dtype, scale=math.sqrt(rows), what="d_gain accumulated")
    assert_close(db2, 2 * edb, dtype, scale=math.sqrt(rows), what="d_bias accumulated")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, width", [(2, 1), (3, 7), (257, 33), (33, 257), (3000, 3)])
def test_batch_norm(dtype, rows, width):
    rng = np.random.default_rng(16)
    x = random(rng, (rows, width), dtype) * dtype(2) + dtype(5)
    gain, bias = random(rng, (width,), dtype), random(rng, (width,), dtype)
    mean0, var0 = random(rng, (width,), dtype), rng.uniform(0.5, 2, width).astype(dtype)
    y, xhat, rstd, mean, var = cuda.batch_norm_forward_train(x, gain, bias, mean0, var0, eps=1e-5, momentum=0.1)
    emean, evar = mean0.astype(np.float64), var0.astype(np.float64)
    ey, exhat, erstd = ref_layers.batch_norm(*as64(x, gain, bias), emean, evar, training=True, eps=1e-5,
                                             momentum=0.1)
    assert_close(y, ey, dtype, what="y")
    assert_close(xhat, exhat, dtype, what="xhat")
    assert_close(rstd, erstd, dtype, what="rstd")
    assert_close(mean, emean, dtype, what="running_mean")
    assert_close(var, evar, dtype, what="running_var")
    same = cuda.batch_norm_forward_train(x, gain, bias, eps=1e-5, in_place=True)
    np.testing.assert_array_equal(same[0], y)
    assert same[3] is None and same[4] is None
    ye = cuda.batch_norm_forward_eval(x, gain, bias, mean, var, eps=1e-5)
    eye = ref_layers.batch_norm(*as64(x, gain, bias, mean, var), training=False, eps=1e-5)
    assert_close(ye, eye, dtype, what="eval y")
    dy = random(rng, (rows, width), dtype)
    dx, dg, db = cuda.batch_norm_backward(dy, xhat, rstd, gain)
    edx, edg, edb = ref_layers.batch_norm_backward(*as64(dy, xhat, rstd, gain))
    assert_close(dx, edx, dtype, what="dx")
    assert_close(dg, edg, dtype, scale=math.sqrt(rows), what="d_gain")
    assert_close(db, edb, dtype, scale=math.sqrt(rows), what="d_bias")
    dx2, dg2, db2 = cuda.batch_norm_backward(dy, xhat, rstd, gain, d_gain=dg, d_bias=db, in_place=True)
    np.testing.assert_array_equal(dx2, dx)
    assert_close(dg2, 2 * edg, dtype, scale=math.sqrt(rows), what="d_gain accumulated")


def test_batch_norm_needs_two_rows():
    x = np.ones((1, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 2 samples"):
        cuda.batch_norm_forward_train(x, x[0], x[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(dtype):
    rng = np.random.default_rng(17)
    n, p = 100_003, 0.3
    mask = cuda.dropout_mask(n, p, 1234, 7)
    np.testing.assert_array_equal(mask, ref_layers.dropout_mask_hashed(n, p, 1234, 7))
    assert abs(mask.mean() - (1 - p)) < 0.01
    assert not np.array_equal(mask, cuda.dropout_mask(n, p, 1234, 8))  # the counter moves the mask
    np.testing.assert_array_equal(cuda.dropout_mask(33, 0.0, 1, 1), np.ones(33, dtype=np.uint8))
    x = random(rng, (n,), dtype)
    np.testing.assert_array_equal(cuda.dropout_forward(x, mask, p), ref_layers.dropout(x, mask, p))
    np.testing.assert_array_equal(cuda.dropout_backward(x, mask, p), ref_layers.dropout_backward(x, mask, p))


@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_add_and_add_into(dtype):
    rng = np.random.default_rng(18)
    x, skip = random(rng, (257, 33), dtype), random(rng, (257, 33), dtype)
    np.testing.assert_array_equal(cuda.residual_add(x, skip), ref_layers.residual_add(x, skip))
    np.testing.assert_array_equal(cuda.add_into(x, skip), x + skip)
    with pytest.raises(ValueError, match="shape"):
        cuda.residual_add(x, skip[:3])
