"""The twins of cpp/src/activation.cpp: the elementwise activations, their
derivatives, and the fused bias + activation passes of a dense layer.

A bias add alone is the fused pass with the "linear" activation (the engine
has no separate bias kernel): :func:`bias_add_forward` and
:func:`bias_add_backward` are written that way.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import common_float_dtype as _float_dtype

# The names the engine knows, in its enum's order (cpp/src/activation.cpp); the
# reference keeps its own copy on purpose: tests/test_names.py holds the two equal.
ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "swish", "gelu")
LEAKY_RELU_SLOPE = 0.01
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid(z):
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype)


def _gelu_cdf(z):  # Φ(z) = erfc(−z/√2) / 2
    return (0.5 * np.asarray(_erfc(-z.astype(np.float64) / math.sqrt(2)), dtype=np.float64)).astype(z.dtype)


def _gelu_pdf(z):
    return (np.exp(-0.5 * z.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)).astype(z.dtype)


def activation_forward(z, activation="relu", out=None):
    z = np.asarray(z, dtype=_float_dtype(z))
    if activation == "linear":
        a = z.copy()
    elif activation == "relu":
        a = np.where(z > 0, z, 0).astype(z.dtype)
    elif activation == "leaky_relu":
        a = np.where(z > 0, z, z.dtype.type(LEAKY_RELU_SLOPE) * z)
    elif activation == "sigmoid":
        a = _sigmoid(z)
    elif activation == "tanh":
        a = np.tanh(z)
    elif activation == "swish":
        a = z * _sigmoid(z)
    elif activation == "gelu":
        a = z * _gelu_cdf(z)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    if out is not None:
        out[...] = a
        return out
    return a


def activation_backward(da, z, a=None, activation="relu", out=None):
    """dz = da ⊙ f'(z)."""
    dtype = _float_dtype(da, z)
    z = np.asarray(z, dtype=dtype)
    da = np.asarray(da, dtype=dtype)
    a = activation_forward(z, activation) if a is None else np.asarray(a, dtype=dtype)
    one = dtype.type(1)
    if activation == "linear":
        derivative = np.ones_like(z)
    elif activation == "relu":
        derivative = (z > 0).astype(dtype)
    elif activation == "leaky_relu":
        derivative = np.where(z > 0, one, dtype.type(LEAKY_RELU_SLOPE))
    elif activation == "sigmoid":
        derivative = a * (one - a)
    elif activation == "tanh":
        derivative = one - a * a
    elif activation == "swish":
        s = _sigmoid(z)
        derivative = s + z * s * (one - s)
    elif activation == "gelu":
        derivative = _gelu_cdf(z) + z * _gelu_pdf(z)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    dz = (da * derivative).astype(dtype)
    if out is not None:
        out[...] = dz
        return out
    return dz



def bias_activation_forward(z, bias, activation="relu"):
    """(z + bias, f(z + bias))."""
    dtype = _float_dtype(z, bias)
    z = np.asarray(z, dtype=dtype) + np.asarray(bias, dtype=dtype)
    return z, activation_forward(z, activation)


def activation_bias_backward(da, z, a=None, activation="relu"):
    """(dz, column sums of dz) with dz = da ⊙ f'(z)."""
    dz = activation_backward(da, z, a, activation)
    return dz, dz.sum(axis=0)


def bias_add_forward(z, bias):
    """z + bias: :func:`bias_activation_forward` with the linear activation."""
    return bias_activation_forward(z, bias, "linear")[0]


def bias_add_backward(dz):
    """The column sums of dz: :func:`activation_bias_backward` with the linear activation."""
    return activation_bias_backward(dz, dz, activation="linear")[1]
