"""The float32 activations held to their documented error bounds (activation.hpp's table).

Float32 tanh, sigmoid, swish and GELU are approximations of our own that vectorize
(cpp/src/activation.cpp); float64 keeps libm and is the reference here (itself held to
fastmlp.reference's NumPy formulas below). Errors are in ulp of the float64 value rounded
to float32 (2^-149 in the subnormal range), over a dense sweep: every 1031st float32 bit
pattern up to 1e4 in magnitude (all binades, subnormals included), both signs, plus
evenly spaced points on [-20, 20] and [-130, 130]. Backward takes da = 1; sigmoid's and
tanh's derivatives are formulas in a = f(z), so they are compared on the same float32 a.
swish' and GELU' pass through zero (at z ≈ −1.278 and z ≈ −0.752), where no float
formula keeps relative accuracy: their bound is in ulp of the larger of |f'(z)| and
σ(z) (swish) or Φ(z) (GELU), the size of the terms that cancel there. The bounds are
the worst errors seen over this sweep and 24 million random floats, rounded up; both
the elementwise kernels and the fused bias + activation passes are held to them.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import kernels, reference

# The bounds in activation.hpp, in ulp: (forward, backward).
BOUNDS = {"sigmoid": (3, 2), "tanh": (7, 2), "swish": (4, 6), "gelu": (8, 7)}
SMOOTH = tuple(BOUNDS)


def _sweep() -> np.ndarray:
    top = int(np.array([1e4], np.float32).view(np.int32)[0])
    magnitudes = np.arange(0, top, 1031, dtype=np.int32).view(np.float32)
    z = np.concatenate([magnitudes, -magnitudes,
                        np.linspace(-20, 20, 400_001, dtype=np.float32),
                        np.linspace(-130, 130, 200_001, dtype=np.float32)])
    return np.concatenate([z, np.zeros(-z.size % 64, np.float32)])  # rows of 64 for the fused path


Z = _sweep()
Z64 = Z.astype(np.float64)


def _ulps(actual: np.ndarray, expected: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    size = np.abs(expected) if scale is None else np.maximum(np.abs(expected), scale)
    ulp = np.maximum(np.spacing(size.astype(np.float32)).astype(np.float64), 2.0 ** -149)
    return np.abs(actual.astype(np.float64) - expected) / ulp


def _assert_within(errors: np.ndarray, bound: float, what: str) -> None:
    worst = int(np.argmax(errors))
    assert errors[worst] <= bound, f"{what}: {errors[worst]:.2f} ulp at z = {Z[worst]!r} (bound {bound})"


def test_the_sweep_is_dense():
    assert Z.size >= 2_000_000
    assert np.any((Z > 0) & (Z < np.finfo(np.float32).tiny))  # subnormals


# The elementwise kernels (baseline x86-64 code) and the fused bias + activation passes
# a dense layer uses (compiled for AVX2 and AVX-512 too, where GCC may fuse a·b + c).
PATHS = ("elementwise", "fused")


def _forward(z: np.ndarray, activation: str, path: str) -> np.ndarray:
    if path == "elementwise":
        return kernels.activation_forward(z, activation)
    rows = z.reshape(-1, 64)
    return kernels.bias_activation_forward(rows, np.zeros(64, z.dtype), activation)[1].reshape(-1)


def _backward(da: np.ndarray, z: np.ndarray, a: np.ndarray, activation: str, path: str) -> np.ndarray:
    if path == "elementwise":
        return kernels.activation_backward(da, z, a, activation)
    return kernels.activation_bias_backward(*(x.reshape(-1, 64) for x in (da, z, a)), activation)[0].reshape(-1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("activation", SMOOTH)
def test_forward_within_bound(activation, path):
    actual = _forward(Z, activation, path)
    expected = kernels.activation_forward(Z64, activation)
    finite = np.isfinite(expected)  # float64 swish/GELU give NaN at z = -inf only
    assert finite.all()
    assert np.isfinite(actual).all(), f"{activation}: inf or NaN for a finite z"
    _assert_within(_ulps(actual, expected), BOUNDS[activation][0], f"{activation} forward ({path})")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("activation", SMOOTH)
def test_backward_within_bound(activation, path):
    a = _forward(Z, activation, path)
    actual = _backward(np.ones_like(Z), Z, a, activation, path)
    assert np.isfinite(actual).all(), f"{activation}': inf or NaN for a finite z"
    if activation in ("sigmoid", "tanh"):  # f' from a: the same float32 a on both sides
        expected = kernels.activation_backward(np.ones_like(Z64), Z64, a.astype(np.float64), activation)
        scale = None
    else:
        expected = kernels.activation_backward(np.ones_like(Z64), Z64, None, activation)
        if activation == "swish":
            scale = kernels.activation_forward(Z64, "sigmoid")
        else:  # Φ(z) = gelu(z)/z, 1/2 at 0
            nonzero = np.where(Z64 == 0, 1.0, Z64)
            scale = np.where(Z64 == 0, 0.5, kernels.activation_forward(Z64, "gelu") / nonzero)
    _assert_within(_ulps(actual, expected, scale), BOUNDS[activation][1], f"{activation} backward ({path})")


@pytest.mark.parametrize("activation", SMOOTH)
def test_float64_reference_is_the_numpy_formula(activation):
    z = np.random.default_rng(0).standard_normal(4000) * 6
    a = kernels.activation_forward(z, activation)
    # rtol 1e-12: the twin's GELU uses Python's math.erfc, ~1e-13 off libm's in the tail.
    np.testing.assert_allclose(a, reference.activation_forward(z, activation), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(kernels.activation_backward(np.ones_like(z), z, a, activation),
                               reference.activation_backward(np.ones_like(z), z, a, activation),
                               rtol=1e-12, atol=1e-14)


INF, NAN, HUGE = np.inf, np.nan, float(np.finfo(np.float32).max)
DENORMAL = float(np.finfo(np.float32).smallest_subnormal)
SPECIAL_Z = np.array([0.0, -0.0, INF, -INF, NAN, HUGE, -HUGE, DENORMAL, -DENORMAL, 1e-30, -1e-30], np.float32)
# f(z) and f'(z) at SPECIAL_Z: the limits, NaN for NaN.
SPECIAL = {
    "sigmoid": ([0.5, 0.5, 1, 0, NAN, 1, 0, 0.5, 0.5, 0.5, 0.5],
                [0.25, 0.25, 0, 0, NAN, 0, 0, 0.25, 0.25, 0.25, 0.25]),
    "tanh": ([0, -0.0, 1, -1, NAN, 1, -1, DENORMAL, -DENORMAL, 1e-30, -1e-30],
             [1, 1, 0, 0, NAN, 0, 0, 1, 1, 1, 1]),
    "swish": ([0, -0.0, INF, -0.0, NAN, HUGE, -0.0, 0.0, -0.0, 5e-31, -5e-31],
              [0.5, 0.5, 1, 0, NAN, 1, 0, 0.5, 0.5, 0.5, 0.5]),
    "gelu": ([0, -0.0, INF, -0.0, NAN, HUGE, -0.0, 0.0, -0.0, 5e-31, -5e-31],
             [0.5, 0.5, 1, 0, NAN, 1, 0, 0.5, 0.5, 0.5, 0.5]),
}


@pytest.mark.parametrize("activation", SMOOTH)
def test_special_values(activation):
    forward, backward = (np.array(v, np.float32) for v in SPECIAL[activation])
    a = kernels.activation_forward(SPECIAL_Z, activation)
    dz = kernels.activation_backward(np.ones_like(SPECIAL_Z), SPECIAL_Z, a, activation)
    np.testing.assert_allclose(a, forward, rtol=2e-7, atol=0, err_msg=f"{activation} forward")
    np.testing.assert_allclose(dz, backward, rtol=2e-7, atol=0, err_msg=f"{activation} backward")
    # Signed zeros where the limit is a zero of a given sign.
    zero = forward == 0
    assert np.array_equal(np.signbit(a[zero]), np.signbit(forward[zero])), f"{activation}: sign of zero"


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint32)


@pytest.mark.parametrize("activation", SMOOTH)
def test_strided_views_give_the_same_bits(activation):
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((257, 66)) * 5).astype(np.float32)
    a = kernels.activation_forward(values, activation)
    dz = kernels.activation_backward(values, values, a, activation)
    views = {"strided": np.repeat(values, 3, axis=1)[:, ::3], "transposed": values.T.copy().T,
             "negative": values[::-1][::-1]}
    for name, view in views.items():
        assert np.array_equal(_bits(kernels.activation_forward(view, activation)), _bits(a)), name
        assert np.array_equal(_bits(kernels.activation_backward(view, view, a, activation)), _bits(dz)), name


@pytest.mark.parametrize("activation", SMOOTH)
def test_one_and_two_threads_give_the_same_bits(activation, restore_num_threads):
    z = Z[: 1 << 18]  # long enough to be split between threads
    results = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        a = kernels.activation_forward(z, activation)
        results.append((_bits(a), _bits(kernels.activation_backward(z, z, a, activation))))
    assert all(np.array_equal(x, y) for x, y in zip(*results))
