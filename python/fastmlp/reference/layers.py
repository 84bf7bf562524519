"""The twins of cpp/src/layers.cpp: layer norm, batch norm, dropout and the residual add.

The same names and signatures as in :mod:`fastmlp.kernels`. Statistics and
normalisations are computed in float64 and the results rounded to the inputs'
dtype once (the kernels sum in double too, but do the elementwise steps in the
dtype, so float32 results differ by a few ulp). :func:`dropout_mask` draws the
kernel's mask bit for bit from the same generator state.

Formulas (cpp/include/fastmlp/layers.hpp), for x (B, W), gain and bias (W,):

- layer norm, per row r: μ_r, σ²_r = mean and biased variance of the row,
  rstd_r = 1/√(σ²_r + eps), xhat = (x − μ_r) rstd_r, y = gain ⊙ xhat + bias;
  backward with g = dy ⊙ gain: dx = rstd_r (g − mean_j g − xhat mean_j (g ⊙ xhat)),
  d_gain = Σ_r dy ⊙ xhat, d_bias = Σ_r dy;
- batch norm, the same per column over the rows; in training the running
  statistics move as torch.nn.BatchNorm1d's (momentum m, unbiased variance);
  eval: y = gain ⊙ (x − running_mean)/√(running_var + eps) + bias;
- dropout (inverted): y = x ⊙ mask / (1 − p); residual add: y = x + skip.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import common_float_dtype as _float_dtype
from .random import Rng

__all__ = [
    "dropout_mask_hashed",
    "layer_norm",
    "layer_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "dropout_keep_threshold",
    "dropout_mask",
    "dropout",
    "dropout_backward",
    "residual_add",
]


def _as(dtype, *arrays):
    return [np.asarray(a, dtype=dtype) for a in arrays]


def _normalize(x, gain, bias, eps, axis):
    """xhat, rstd and y of a normalisation over ``axis`` (1: rows, layer norm; 0: columns, batch
    norm), in float64; also the mean and biased variance."""
    mean = x.mean(axis=axis, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    rstd = 1.0 / np.sqrt(variance + eps)
    xhat = (x - mean) * rstd
    return xhat, rstd, gain * xhat + bias, mean, variance


def _normalize_backward(dy, xhat, rstd, gain, axis):
    """dx, d_gain, d_bias of a normalisation over ``axis``, in float64."""
    g = dy * gain
    dx = rstd * (g - g.mean(axis=axis, keepdims=True) - xhat * (g * xhat).mean(axis=axis, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def layer_norm(x, gain, bias, eps=1e-5):
    """(y, xhat, rstd) of layer norm over each row of x (B, W); rstd is (B,)."""
    dtype = _float_dtype(x, gain, bias)
    x, gain, bias = _as(np.float64, x, gain, bias)
    xhat, rstd, y, _, _ = _normalize(x, gain, bias, eps, axis=1)
    return y.astype(dtype), xhat.astype(dtype), rstd[:, 0].astype(dtype)


def layer_norm_backward(dy, xhat, rstd, gain):
    """(dx, d_gain, d_bias) of layer norm, from its saved xhat (B, W) and rstd (B,)."""
    dtype = _float_dtype(dy, xhat, rstd, gain)
    dy, xhat, rstd, gain = _as(np.float64, dy, xhat, rstd, gain)
    return tuple(a.astype(dtype) for a in _normalize_backward(dy, xhat, rstd[:, None], gain, axis=1))


def batch_norm(x, gain, bias, running_mean=None, running_var=None, *, training=True, eps=1e-5, momentum=0.1):
    """Training: (y, xhat, rstd) from the batch's statistics (rstd is (W,)), and the running
    statistics (ndarrays, both or neither) moved in place as torch.nn.BatchNorm1d does.
    Eval (training=False): y from the running statistics."""
    dtype = _float_dtype(*[a for a in (x, gain, bias, running_mean, running_var) if a is not None])
    x, gain, bias = _as(np.float64, x, gain, bias)
    if not training:
        mean, var = _as(np.float64, running_mean, running_var)
        return (gain * (x - mean) / np.sqrt(var + eps) + bias).astype(dtype)
    rows = x.shape[0]
    if rows < 2:
        raise ValueError(f"batch norm in training needs at least 2 samples per batch, got {rows}")
    xhat, rstd, y, mean, variance = _normalize(x, gain, bias, eps, axis=0)
    if running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean.astype(np.float64) + momentum * mean[0]
        unbiased = variance[0] * rows / (rows - 1)
        running_var[...] = (1 - momentum) * running_var.astype(np.float64) + momentum * unbiased
    return y.astype(dtype), xhat.astype(dtype), rstd[0].astype(dtype)


def batch_norm_backward(dy, xhat, rstd, gain):
    """(dx, d_gain, d_bias) of batch norm in training, from its saved xhat (B, W) and rstd (W,)."""
    dtype = _float_dtype(dy, xhat, rstd, gain)
    dy, xhat, rstd, gain = _as(np.float64, dy, xhat, rstd, gain)
    return tuple(a.astype(dtype) for a in _normalize_backward(dy, xhat, rstd, gain, axis=0))


def dropout_keep_threshold(p) -> int:
    """⌊(1 − p) · 2³²⌋: a draw's 32-bit half below it keeps its element (computed as the
    C++ computes it, in double)."""
    if not 0 <= p < 1:
        raise ValueError(f"p: the dropout probability must be in [0, 1), got {p!r}")
    return math.floor((1.0 - float(p)) * 4294967296.0)


def dropout_mask(n_or_shape, p, rng):
    """The engine's dropout mask (uint8, 1 = kept) of shape ``n_or_shape``: ⌈n/2⌉ draws of
    ``rng`` (a seed, a state ((w0, w1, w2, w3), has_spare, spare), or an :class:`Rng`, which
    is advanced), element 2i from the low 32 bits of draw i and 2i + 1 from its high 32
    bits, kept when below :func:`dropout_keep_threshold`; p = 0 draws nothing."""
    shape = (int(n_or_shape),) if isinstance(n_or_shape, numbers.Integral) else tuple(n_or_shape)
    mask = np.empty(shape, dtype=np.uint8)  # refuses a negative or impossible shape before drawing
    n = mask.size
    threshold = dropout_keep_threshold(p)
    if not isinstance(rng, Rng):
        if isinstance(rng, numbers.Integral):
            rng = Rng(rng)
        else:
            words, has_spare, spare = rng
            rng = Rng()
            rng.set_state(words, has_spare, spare)
    if p == 0:
        mask[...] = 1
        return mask
    draws = np.array([rng.next() for _ in range((n + 1) // 2)], dtype=np.uint64)
    halves = np.empty(2 * draws.size, dtype=np.uint64)
    halves[0::2] = draws & np.uint64(0xFFFFFFFF)
    halves[1::2] = draws >> np.uint64(32)
    mask.reshape(-1)[...] = halves[:n] < threshold
    return mask


def _splitmix64(x):
    """SplitMix64's finalizer over uint64 arrays (wrapping), as cpp/cuda/layers.cu's."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def dropout_mask_hashed(n, p, seed, counter):
    """The CUDA backend's dropout mask (uint8, 1 = kept) of n elements (cpp/cuda/layers.cu):
    no generator but a counter-based hash, key = s(s(seed) ^ counter) with s SplitMix64's
    finalizer, element i kept when the high 32 bits of s(key ^ i) are below
    :func:`dropout_keep_threshold` (the device keys it by the network's seed, the layer and
    the update count). p = 0 keeps every element."""
    threshold = dropout_keep_threshold(p)
    mask = np.empty(int(n), dtype=np.uint8)  # refuses a negative n
    key = _splitmix64(_splitmix64(np.uint64(int(seed) % 2**64)) ^ np.uint64(int(counter) % 2**64))
    draws = _splitmix64(key ^ np.arange(mask.size, dtype=np.uint64))
    mask[...] = (draws >> np.uint64(32)) < np.uint64(threshold)
    return mask


def dropout(x, mask, p):
    """y = x ⊙ mask / (1 − p): kept elements times the dtype's 1/(1 − p), dropped ones 0."""
    dtype = _float_dtype(x)
    x = np.asarray(x, dtype=dtype)
    scale = dtype.type(1.0 / (1.0 - p))
    return np.where(np.asarray(mask) != 0, x * scale, dtype.type(0))


def dropout_backward(dy, mask, p):
    """dx = dy ⊙ mask / (1 − p)."""
    return dropout(dy, mask, p)


def residual_add(x, skip):
    """y = x + skip."""
    dtype = _float_dtype(x, skip)
    x, skip = _as(dtype, x, skip)
    return x + skip
