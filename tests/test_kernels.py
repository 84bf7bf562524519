"""Every kernel in fastmlp.kernels held to its NumPy twin of the same name in fastmlp.reference.

Shapes are drawn from the awkward sizes 1, 3, 7, 33, 257 (edges of every register
and cache tile); inputs come contiguous and as views (transposed, strided with gaps
full of NaN, negative strides). Tolerances are per dtype; every failure prints the
max difference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import kernels, reference
from kernel_helpers import ATOL_ULPS, LAYOUTS, assert_close, dtype_id, eps_of, max_abs, with_layout

SIZES = (1, 3, 7, 33, 257)
DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
TRANSPOSES = ((False, False), (False, True), (True, False), (True, True))


def rtol_of(dtype) -> float:
    return RTOL[np.dtype(dtype)]


def test_layouts_are_what_they_say():
    values = np.arange(12.0).reshape(3, 4)
    for layout in LAYOUTS:
        view = with_layout(values, layout)
        assert np.array_equal(view, values), layout
        assert view.flags.c_contiguous == (layout == "contiguous"), layout
    assert with_layout(values, "negative").strides[0] < 0
    assert with_layout(values, "transposed").flags.f_contiguous


# ---- gemm ----------------------------------------------------------------------------------

C_MODES = ("new", "beta0_nan", "beta1", "beta_other")

GEMM_CASES = [
    pytest.param(m, n, k, ta, tb, case, id=f"m{m}-n{n}-k{k}-{'T' if ta else 'N'}{'T' if tb else 'N'}")
    for case, ((m, n, k), (ta, tb)) in enumerate(itertools.product(itertools.product(SIZES, repeat=3), TRANSPOSES))
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("m,n,k,trans_a,trans_b,case", GEMM_CASES)
def test_gemm_matches_reference(m, n, k, trans_a, trans_b, case, dtype):
    rng = np.random.default_rng([case, np.dtype(dtype).itemsize])
    a_values = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b_values = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    a = with_layout(a_values, LAYOUTS[rng.integers(4)])
    b = with_layout(b_values, LAYOUTS[rng.integers(4)])
    alpha = float(rng.choice([1.0, -1.0, 0.75, -2.5, 1.3]))
    mode = C_MODES[case % len(C_MODES)]
    what = f"gemm {mode} alpha={alpha}"
    scale = k * max_abs(a_values) * max_abs(b_values) * abs(alpha)

    if mode == "new":
        expected = reference.gemm(a_values, b_values, alpha=alpha, trans_a=trans_a, trans_b=trans_b)
        result = kernels.gemm(a, b, alpha=alpha, trans_a=trans_a, trans_b=trans_b)
        assert result.dtype == dtype
        assert_close(result, expected, rtol=rtol_of(dtype), atol=rtol_of(dtype) * scale, what=what)
        return

    beta = {"beta0_nan": 0.0, "beta1": 1.0, "beta_other": -0.6}[mode]
    c_values = np.full((m, n), np.nan, dtype) if mode == "beta0_nan" else rng.standard_normal((m, n)).astype(dtype)
    # c: contiguous, or the left n columns of a wider buffer (leading dimension > n) whose
    # other columns must come back untouched.
    wide = bool(rng.integers(2))
    buffer = np.full((m, n + 5 if wide else n), -7.0, dtype)
    c = buffer[:, :n]
    c[...] = c_values
    expected = reference.gemm(a_values, b_values, c_values.copy(), alpha=alpha, beta=beta,
                              trans_a=trans_a, trans_b=trans_b)
    result = kernels.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    assert result is c, "gemm must update c in place and return it"
    assert np.isfinite(result).all(), f"{what}: beta=0 must overwrite C, NaN survived"
    if wide:
        assert (buffer[:, n:] == -7.0).all(), "gemm wrote outside c"
    atol = rtol_of(dtype) * (scale + abs(beta) * (0.0 if beta == 0 else max_abs(c_values)))
    assert_close(result, expected, rtol=rtol_of(dtype), atol=atol, what=what)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", [(300, 300, 300), (257, 513, 300)])
def test_gemm_is_bit_identical_across_thread_counts(m, n, k, trans_a, trans_b, dtype, restore_num_threads):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    results = {}
    for threads in (1, 2, 3):
        fm.set_num_threads(threads)
        assert fm.get_num_threads() == threads
        results[threads] = kernels.gemm(a, b, alpha=0.5, trans_a=trans_a, trans_b=trans_b)
    for threads in (2, 3):
        diff = float(np.max(np.abs(results[threads].astype(np.float64) - results[1])))
        assert np.array_equal(results[threads], results[1]), (
            f"gemm with {threads} threads differs from 1 thread: max |diff| = {diff:.3e}"
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 3), (257, 3, 33), (33, 257, 300), (3, 7, 257)])
def test_gemm_matches_the_cpp_naive_loop(m, n, k, trans_a, trans_b, dtype):
    # The blocked kernel held to the triple loop kept beside it in gemm.cpp.
    from fastmlp import _core

    rng = np.random.default_rng(11)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    fast, naive = c0.copy(), c0.copy()
    _core.gemm(a, b, fast, 0.75, -0.5, trans_a, trans_b)
    _core.gemm(a, b, naive, 0.75, -0.5, trans_a, trans_b, naive=True)
    atol = rtol_of(dtype) * k * max_abs(a) * max_abs(b)
    assert_close(fast, naive, rtol=rtol_of(dtype), atol=atol, what="blocked gemm vs naive gemm")


def test_gemm_dtype_policy():
    a32, b32 = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    assert kernels.gemm(a32, b32).dtype == np.float32
    assert kernels.gemm(a32, b32.astype(np.float64)).dtype == np.float64
    ints = kernels.gemm([[1, 2], [3, 4]], [[5, 6], [7, 8]])
    assert ints.dtype == np.float64
    assert_close(ints, np.array([[19.0, 22.0], [43.0, 50.0]]), rtol=0, what="gemm of integer lists")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("m,n,k", [(3, 4, 0), (0, 4, 3), (3, 0, 4), (0, 0, 0)])
def test_gemm_empty_dimensions(m, n, k, dtype):
    # BLAS semantics: k = 0 gives C = beta·C (zeros for a new C); m or n = 0 an empty C.
    a, b = np.ones((m, k), dtype), np.ones((k, n), dtype)
    assert_close(kernels.gemm(a, b), reference.gemm(a, b), rtol=0, what="gemm with an empty dimension")
    c = np.full((m, n), 2.0, dtype)
    kernels.gemm(a, b, c, alpha=1.0, beta=0.5)
    assert_close(c, np.full((m, n), 1.0, dtype), rtol=0, what="gemm with an empty dimension, beta=0.5")


# ---- activations -----------------------------------------------------------------------------

ACTIVATION_SHAPES = [(1,), (257,), (1, 1), (3, 7), (33, 257), (257, 3), (7, 3, 33)]


def activation_inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape) * 3
    z.reshape(-1)[::5] = 0.0  # the kinks of relu and leaky_relu, exactly
    da = rng.standard_normal(shape)
    return z.astype(dtype), da.astype(dtype)


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", ACTIVATION_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_activation_forward_matches_reference(activation, dtype, shape, layout):
    z_values, _ = activation_inputs(shape, dtype, seed=len(shape) * 1000 + shape[0])
    z = with_layout(z_values, layout)
    result = kernels.activation_forward(z, activation)
    expected = reference.activation_forward(z_values, activation)
    assert result.dtype == dtype
    atol = ATOL_ULPS * eps_of(dtype) * max(1.0, max_abs(z_values))
    assert_close(result, expected, rtol=rtol_of(dtype), atol=atol, what=f"{activation} forward")
    assert np.array_equal(z, z_values), "activation_forward changed its input"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", ACTIVATION_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_activation_backward_matches_reference(activation, dtype, shape, layout):
    z_values, da_values = activation_inputs(shape, dtype, seed=len(shape) * 1000 + shape[0] + 1)
    a_values = reference.activation_forward(z_values, activation)
    i = LAYOUTS.index(layout)
    da = with_layout(da_values, LAYOUTS[i])
    z = with_layout(z_values, LAYOUTS[(i + 1) % 4])
    a = with_layout(a_values, LAYOUTS[(i + 2) % 4])
    atol = ATOL_ULPS * eps_of(dtype) * max(1.0, max_abs(da_values))

    expected = reference.activation_backward(da_values, z_values, a_values, activation)
    result = kernels.activation_backward(da, z, a, activation=activation)
    assert result.dtype == dtype
    assert_close(result, expected, rtol=rtol_of(dtype), atol=atol, what=f"{activation} backward")

    # a = f(z) computed by the kernel when not given
    expected = reference.activation_backward(da_values, z_values, activation=activation)
    result = kernels.activation_backward(da, z, activation=activation)
    assert_close(result, expected, rtol=rtol_of(dtype), atol=atol, what=f"{activation} backward, a=None")


EXTREMES = [-1000.0, -100.0, -30.0, -5.0, -1e-3, -1e-30, -0.0, 0.0, 1e-30, 1e-3, 5.0, 30.0, 100.0, 1000.0]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_activations_at_extreme_inputs(activation, dtype):
    z = np.array(EXTREMES, dtype=dtype)
    da = np.linspace(-2, 2, len(z)).astype(dtype)
    forward = kernels.activation_forward(z, activation)
    backward = kernels.activation_backward(da, z, activation=activation)
    assert np.isfinite(forward).all() and np.isfinite(backward).all(), (forward, backward)
    assert_close(forward, reference.activation_forward(z, activation), rtol=rtol_of(dtype),
                 atol=ATOL_ULPS * eps_of(dtype), what=f"{activation} forward at extremes")
    assert_close(backward, reference.activation_backward(da, z, activation=activation), rtol=rtol_of(dtype),
                 atol=ATOL_ULPS * eps_of(dtype) * 2, what=f"{activation} backward at extremes")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_kink_derivatives_follow_pytorch(activation):
    # relu'(0) = 0, leaky_relu'(0) = slope (activation.hpp)
    dz = kernels.activation_backward(np.ones(2), np.array([0.0, -0.0]), activation=activation)
    expected = 0.0 if activation == "relu" else reference.LEAKY_RELU_SLOPE
    assert_close(dz, [expected, expected], rtol=0, what=f"{activation}'(0)")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_activation_out_argument(dtype):
    z = np.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    out = np.empty_like(z)
    assert kernels.activation_forward(z, "tanh", out=out) is out
    assert_close(out, reference.activation_forward(z, "tanh"), rtol=rtol_of(dtype),
                 atol=ATOL_ULPS * eps_of(dtype), what="tanh forward into out")
    da = np.ones_like(z)
    dz = np.empty_like(z)
    assert kernels.activation_backward(da, z, activation="tanh", out=dz) is dz
    assert_close(dz, reference.activation_backward(da, z, activation="tanh"), rtol=rtol_of(dtype),
                 atol=ATOL_ULPS * eps_of(dtype), what="tanh backward into out")


# ---- bias add ---------------------------------------------------------------------------------

BIAS_SHAPES = [(b, o) for b in SIZES for o in SIZES]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch,outputs", BIAS_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_bias_add_forward_matches_reference(dtype, batch, outputs, layout):
    rng = np.random.default_rng([batch, outputs, 1])
    z_values = rng.standard_normal((batch, outputs)).astype(dtype)
    bias_values = rng.standard_normal(outputs).astype(dtype)
    z = with_layout(z_values, layout)
    bias = with_layout(bias_values, LAYOUTS[(LAYOUTS.index(layout) + 2) % 4])
    result = kernels.bias_add_forward(z, bias)
    assert result.dtype == dtype
    assert_close(result, reference.bias_add_forward(z_values, bias_values), rtol=rtol_of(dtype),
                 what="bias_add_forward")
    assert np.array_equal(z, z_values), "bias_add_forward changed its input z"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch,outputs", BIAS_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_bias_add_backward_matches_reference(dtype, batch, outputs, layout):
    rng = np.random.default_rng([batch, outputs, 2])
    dz_values = rng.standard_normal((batch, outputs)).astype(dtype)
    result = kernels.bias_add_backward(with_layout(dz_values, layout))
    assert result.dtype == dtype and result.shape == (outputs,)
    atol = rtol_of(dtype) * batch * max_abs(dz_values)  # summation order differs
    assert_close(result, reference.bias_add_backward(dz_values), rtol=rtol_of(dtype), atol=atol,
                 what="bias_add_backward")


# ---- mse --------------------------------------------------------------------------------------

MSE_SHAPES = [(1,), (257,), (1, 1), (3, 7), (33, 257), (257, 257), (7, 3, 33)]


def mse_inputs(shape, dtype, layout):
    rng = np.random.default_rng([len(shape), shape[0], shape[-1]])
    pred_values = rng.standard_normal(shape).astype(dtype)
    target_values = rng.standard_normal(shape).astype(dtype)
    i = LAYOUTS.index(layout)
    return (pred_values, target_values,
            with_layout(pred_values, layout), with_layout(target_values, LAYOUTS[(i + 1) % 4]))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_mse_forward_matches_reference(dtype, shape, layout):
    pred_values, target_values, pred, target = mse_inputs(shape, dtype, layout)
    result = kernels.mse_forward(pred, target)
    assert isinstance(result, float)
    assert_close(result, reference.mse_forward(pred_values, target_values), rtol=rtol_of(dtype),
                 what="mse_forward")


@pytest.mark.parametrize("scale", [None, 0.37])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_mse_backward_matches_reference(dtype, shape, layout, scale):
    pred_values, target_values, pred, target = mse_inputs(shape, dtype, layout)
    result = kernels.mse_backward(pred, target, scale)
    assert result.dtype == dtype
    assert_close(result, reference.mse_backward(pred_values, target_values, scale), rtol=rtol_of(dtype),
                 atol=eps_of(dtype) * max(1.0, max_abs(result)), what=f"mse_backward scale={scale}")


# ---- sgd ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1,), (257,), (3, 7), (257, 33)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_sgd_update_matches_reference(dtype, shape, layout):
    rng = np.random.default_rng([len(shape), shape[0], 3])
    params = rng.standard_normal(shape).astype(dtype)
    grad_values = rng.standard_normal(shape).astype(dtype)
    expected = reference.sgd_update(params.copy(), grad_values, 0.05)
    result = kernels.sgd_update(params, with_layout(grad_values, layout), 0.05)
    assert result is params, "sgd_update must update params in place and return it"
    assert_close(params, expected, rtol=rtol_of(dtype), atol=eps_of(dtype) * max_abs(expected),
                 what="sgd_update")


# ---- bad input ---------------------------------------------------------------------------------


def _m(*shape, dtype=np.float64):
    return np.ones(shape, dtype=dtype)


SHAPE_ERRORS = {
    "gemm inner sizes": lambda: kernels.gemm(_m(3, 4), _m(5, 6)),
    "gemm inner sizes after transpose": lambda: kernels.gemm(_m(3, 4), _m(4, 6), trans_a=True),
    "gemm c shape": lambda: kernels.gemm(_m(3, 4), _m(4, 5), _m(3, 6)),
    "gemm 1-D a": lambda: kernels.gemm(np.ones(4), _m(4, 5)),
    "gemm 3-D b": lambda: kernels.gemm(_m(3, 4), _m(4, 5, 1)),
    "gemm column-major c": lambda: kernels.gemm(_m(3, 4), _m(4, 5), np.asfortranarray(_m(3, 5)), beta=1.0),
    "activation unknown name": lambda: kernels.activation_forward(_m(3), "softplus"),
    "activation_forward out size": lambda: kernels.activation_forward(_m(3, 4), "relu", out=_m(3, 5)),
    "activation_forward out transposed shape": lambda: kernels.activation_forward(_m(3, 4), "relu", out=_m(4, 3)),
    "activation_backward out transposed shape": lambda: kernels.activation_backward(
        _m(3, 4), _m(3, 4), activation="relu", out=_m(4, 3)),
    "activation_backward da size": lambda: kernels.activation_backward(_m(3, 5), _m(3, 4), activation="tanh"),
    "activation_backward a size": lambda: kernels.activation_backward(_m(3, 4), _m(3, 4), _m(2, 4), "tanh"),
    "activation_backward da transposed shape": lambda: kernels.activation_backward(_m(4, 3), _m(3, 4),
                                                                                   activation="tanh"),
    "activation_backward da flat": lambda: kernels.activation_backward(_m(12), _m(3, 4), activation="tanh"),
    "activation_backward a transposed shape": lambda: kernels.activation_backward(_m(3, 4), _m(3, 4), _m(4, 3),
                                                                                  "sigmoid"),
    "bias_add_forward bias length": lambda: kernels.bias_add_forward(_m(3, 4), np.ones(5)),
    "bias_add_forward 2-D bias": lambda: kernels.bias_add_forward(_m(3, 4), _m(1, 4)),
    "bias_add_forward 1-D z": lambda: kernels.bias_add_forward(np.ones(4), np.ones(4)),
    "bias_add_backward 1-D dz": lambda: kernels.bias_add_backward(np.ones(4)),
    "mse_forward shapes": lambda: kernels.mse_forward(_m(3, 4), _m(4, 3)),
    "mse_forward column vs flat": lambda: kernels.mse_forward(_m(3, 1), np.ones(3)),
    "mse_backward shapes": lambda: kernels.mse_backward(_m(3, 4), _m(3, 5)),
    "sgd_update shapes": lambda: kernels.sgd_update(_m(3, 4), _m(4, 3), 0.1),
    "sgd_update non-contiguous params": lambda: kernels.sgd_update(_m(4, 6)[:, ::2], _m(4, 3), 0.1),
}


@pytest.mark.parametrize("call", SHAPE_ERRORS.values(), ids=SHAPE_ERRORS.keys())
def test_mismatched_shapes_raise_value_error(call):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value), "the error must say what went wrong"


STRINGS = np.array([["a", "b"], ["c", "d"]])
COMPLEX = np.ones((2, 2), dtype=complex)
OBJECTS = np.array([[None, None], [None, None]], dtype=object)

TYPE_ERRORS = {
    "gemm string a": lambda: kernels.gemm(STRINGS, _m(2, 2)),
    "gemm complex b": lambda: kernels.gemm(_m(2, 2), COMPLEX),
    "gemm None a": lambda: kernels.gemm(None, _m(2, 2)),
    "gemm list c": lambda: kernels.gemm(_m(2, 2), _m(2, 2), [[0.0, 0.0], [0.0, 0.0]]),
    "gemm int c": lambda: kernels.gemm(_m(2, 2), _m(2, 2), np.zeros((2, 2), dtype=int)),
    "activation_forward strings": lambda: kernels.activation_forward(STRINGS, "relu"),
    "activation_forward objects": lambda: kernels.activation_forward(OBJECTS, "relu"),
    "activation_forward name not a string": lambda: kernels.activation_forward(_m(2, 2), 3),
    "activation_backward complex da": lambda: kernels.activation_backward(COMPLEX, _m(2, 2), activation="tanh"),
    "activation_backward string z": lambda: kernels.activation_backward(_m(2, 2), STRINGS, activation="tanh"),
    "bias_add_forward string bias": lambda: kernels.bias_add_forward(_m(2, 2), np.array(["a", "b"])),
    "bias_add_backward complex dz": lambda: kernels.bias_add_backward(COMPLEX),
    "mse_forward strings": lambda: kernels.mse_forward(STRINGS, _m(2, 2)),
    "mse_backward objects": lambda: kernels.mse_backward(_m(2, 2), OBJECTS),
    "sgd_update list params": lambda: kernels.sgd_update([1.0, 2.0], [1.0, 2.0], 0.1),
    "sgd_update int params": lambda: kernels.sgd_update(np.ones(2, dtype=int), np.ones(2), 0.1),
    "sgd_update string grads": lambda: kernels.sgd_update(np.ones(2), np.array(["a", "b"]), 0.1),
}


@pytest.mark.parametrize("call", TYPE_ERRORS.values(), ids=TYPE_ERRORS.keys())
def test_non_numeric_input_raises_type_error(call):
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value), "the error must say what went wrong"


# ---- the fused layer kernels -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch,outputs", BIAS_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_bias_activation_forward_matches_reference(activation, dtype, batch, outputs, layout):
    rng = np.random.default_rng(batch * 1000 + outputs)
    z = with_layout(rng.standard_normal((batch, outputs)).astype(dtype), layout)
    bias = rng.standard_normal(outputs).astype(dtype)
    z_fast, a_fast = kernels.bias_activation_forward(z, bias, activation)
    z_ref, a_ref = reference.bias_activation_forward(z, bias, activation)
    tol = rtol_of(dtype)
    assert_close(z_fast, z_ref, rtol=tol, what="z + bias")
    assert_close(a_fast, a_ref, rtol=tol, atol=ATOL_ULPS * eps_of(dtype) * max(1.0, max_abs(a_ref)),
                 what=f"{activation}(z + bias)")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch,outputs", BIAS_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_activation_bias_backward_matches_reference(activation, dtype, batch, outputs, layout):
    rng = np.random.default_rng(batch * 1000 + outputs + 1)
    z = rng.standard_normal((batch, outputs)).astype(dtype)
    da = with_layout(rng.standard_normal((batch, outputs)).astype(dtype), layout)
    dz_fast, db_fast = kernels.activation_bias_backward(da, z, activation=activation)
    dz_ref, db_ref = reference.activation_bias_backward(da, z, activation=activation)
    tol = rtol_of(dtype)
    assert_close(dz_fast, dz_ref, rtol=tol, atol=ATOL_ULPS * eps_of(dtype) * max(1.0, max_abs(dz_ref)),
                 what="dz")
    assert_close(db_fast, db_ref, rtol=tol, atol=tol * batch * max(1.0, max_abs(dz_ref)), what="d_bias")
