"""The twins of cpp/src/loss.cpp: the losses on raw outputs, their gradients,
softmax, and the count of right predictions.

Arithmetic: the gradients are computed elementwise in the dtype T of ``pred``
(float32 or float64; anything else counts as float64), the target cast to T;
their scalar factors (1/(B·O), 2/(B·O), 1/B) are Python floats cast to T once.
The loss *values* take the differences (p − t, and p − max p for the
cross-entropy) in T, then the per-element terms and the mean in float64.

:func:`mse_forward` and :func:`mse_backward` (the kernels' old MSE names) are the
"mse" loss over every element, for arrays of any shape.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import common_float_dtype as _float_dtype
from .activation import _sigmoid

# The engine's names in its enum's order; the reference's own copy (tests/test_names.py).
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy", "huber")


def _check_loss(name, delta):
    """The loss name, checked (ValueError naming the choices); Huber's δ must be > 0 and finite."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(LOSSES)}; got {name!r}")
    if name == "huber":
        delta = float(delta)
        if not (delta > 0 and math.isfinite(delta)):
            raise ValueError(f"loss: huber's delta must be positive and finite; got {delta!r}")
    return name


def _loss_arrays(name, pred, target, delta):
    _check_loss(name, delta)
    pred, target = np.asarray(pred), np.asarray(target)
    dtype = _float_dtype(pred, target)  # float32 only when both are, as the kernels
    pred = pred.astype(dtype, copy=False)
    target = target.astype(dtype, copy=False)
    if pred.ndim != 2:
        raise ValueError(f"loss: pred must be 2-D (batch, outputs); got shape {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(f"loss: target has shape {target.shape}, pred {pred.shape}")
    return pred, target, dtype


def _weights(weight, pred):
    """Row weights (B,) in pred's dtype, or None; finite and >= 0."""
    if weight is None:
        return None
    w = np.asarray(weight, dtype=pred.dtype)
    if w.ndim == 0:
        w = np.full(pred.shape[0], w)
    if w.shape != (pred.shape[0],):
        raise ValueError(f"weight: expected shape ({pred.shape[0]},), got {w.shape}")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("weight: sample weights must be finite and >= 0")
    return w


def count_correct(name, pred, target, weight=None):
    """How many predictions of raw outputs ``pred`` (B, O) are right against dense ``target``:
    rows whose argmax (the first maximum) equals the target's for ``"cross_entropy"``;
    elements with (p > 0) == (t > 0.5) for ``"binary_cross_entropy"``; 0 for the others.
    With ``weight`` (B,), each right prediction counts its row's weight (a float)."""
    pred, target, _ = _loss_arrays(name, pred, target, 1.0)
    w = _weights(weight, pred)
    if name == "cross_entropy" and pred.shape[1] == 0 and pred.shape[0] > 0:
        raise ValueError(f"pred: cross_entropy needs at least one column (one per class), got shape {pred.shape}")
    if name == "cross_entropy" and pred.shape[0]:
        right = (np.argmax(pred, axis=1) == np.argmax(target, axis=1)).astype(np.float64)
    elif name == "binary_cross_entropy":
        right = ((pred > 0) == (target > 0.5)).sum(axis=1, dtype=np.float64)
    else:
        right = np.zeros(pred.shape[0])
    if w is None:
        return int(right.sum())
    return float(np.dot(right, w.astype(np.float64)))


def softmax(z):
    """Row-wise softmax (over the last axis), stable: s_k = e^(z_k − m) / Σ_j e^(z_j − m), m = max_j z_j.

    Same dtype as ``z`` (float32 stays float32, anything else is float64).
    """
    z = np.asarray(z)
    dtype = _float_dtype(z)
    z = z.astype(dtype, copy=False)
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"softmax: needs at least one column; got shape {z.shape}")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype, copy=False)


def loss_forward(name, pred, target, delta=1.0, weight=None) -> float:
    """The mean loss of raw outputs ``pred`` (B, O) against a dense ``target`` (B, O); n = B·O.

    - ``"mse"``: L = (1/n) Σ (p − t)².
    - ``"cross_entropy"`` (softmax over each row of logits, as torch.nn.CrossEntropyLoss
      with probability targets): L = (1/B) Σ_rows −Σ_k t_k · log_softmax(p)_k, where
      log_softmax(p)_k = (p_k − m) − log Σ_j e^(p_j − m), m = max_j p_j (log-sum-exp).
    - ``"binary_cross_entropy"`` (from logits, as torch.nn.BCEWithLogitsLoss):
      L = (1/n) Σ max(p, 0) − p·t + log1p(e^(−|p|)).
    - ``"huber"`` (as torch.nn.HuberLoss), d = p − t:
      L = (1/n) Σ (½ d² if |d| ≤ δ else δ (|d| − δ/2)).

    With ``weight`` (B,), each row's terms count w_i times and B becomes W = Σ w_i
    (a weighted mean; 0.0 when W is 0).

    Returns a Python float; 0.0 when pred is empty.
    """
    pred, target, _ = _loss_arrays(name, pred, target, delta)
    w = _weights(weight, pred)
    if pred.size == 0:
        return 0.0
    if name == "mse":
        terms = (pred - target).astype(np.float64) ** 2
    elif name == "cross_entropy":
        shifted = (pred - pred.max(axis=1, keepdims=True)).astype(np.float64)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        terms = -(target.astype(np.float64) * log_softmax)
    elif name == "binary_cross_entropy":
        p, t = pred.astype(np.float64), target.astype(np.float64)
        terms = np.maximum(p, 0.0) - p * t + np.log1p(np.exp(-np.abs(p)))
    else:  # huber
        delta = float(delta)
        a = np.abs((pred - target).astype(np.float64))
        terms = np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))
    rows = terms.sum(axis=1)
    per_row = 1 if name == "cross_entropy" else pred.shape[1]
    if w is None:
        return float(rows.sum() / (pred.shape[0] * per_row))
    total = float(w.astype(np.float64).sum())
    return float(np.dot(rows, w.astype(np.float64)) / (total * per_row)) if total > 0 else 0.0


def loss_backward(name, pred, target, delta=1.0, weight=None):
    """dL/dpred of :func:`loss_forward`'s mean loss, same shape and dtype as ``pred``; n = B·O.

    - ``"mse"``: 2 (p − t) / n (equal to :func:`mse_backward`).
    - ``"cross_entropy"``: (softmax(p) · Σ_k t_k − t) / B, the row sums of t taken per row:
      the exact gradient for any t, equal to (softmax(p) − t) / B when rows of t sum to 1.
    - ``"binary_cross_entropy"``: (σ(p) − t) / n, σ the logistic sigmoid (stable form).
    - ``"huber"``: clip(p − t, −δ, δ) / n.

    With ``weight`` (B,), B becomes W = Σ w_i and row i's factor is w_i · factor,
    formed in float64 and rounded to T once (the kernel's order); all 0 when W is 0.
    """
    pred, target, dtype = _loss_arrays(name, pred, target, delta)
    w = _weights(weight, pred)
    T = dtype.type
    batch = float(pred.shape[0]) if w is None else float(w.astype(np.float64).sum())
    if pred.size == 0:
        return np.zeros(pred.shape, dtype=dtype)
    normalizer = batch if name == "cross_entropy" else batch * pred.shape[1]
    factor = (2.0 if name == "mse" else 1.0) / normalizer if normalizer > 0 else 0.0
    scale = T(factor) if w is None else (w.astype(np.float64) * factor).astype(dtype)[:, None]
    if name == "mse":
        grad = scale * (pred - target)
    elif name == "cross_entropy":
        grad = scale * (softmax(pred) * target.sum(axis=1, keepdims=True) - target)
    elif name == "binary_cross_entropy":
        grad = scale * (_sigmoid(pred) - target)
    else:  # huber
        d = T(float(delta))
        grad = scale * np.clip(pred - target, -d, d)
    return grad.astype(dtype, copy=False)



def _scaled_difference(pred, target, scale):
    """scale · (pred − target) in pred's dtype, scale a Python float cast to it once."""
    return pred.dtype.type(scale) * (pred - target)


def _as_rows(pred, target):
    """pred and target in their common float dtype, of one shape, as 2-D (batch, outputs):
    a 2-D pair as it is, any other shape as one row."""
    dtype = _float_dtype(pred, target)
    pred, target = np.asarray(pred, dtype=dtype), np.asarray(target, dtype=dtype)
    if pred.shape != target.shape:
        raise ValueError(f"target has shape {target.shape}, pred {pred.shape}")
    if pred.ndim != 2:
        pred, target = pred.reshape(1, -1), target.reshape(1, -1)
    return pred, target


def mse_forward(pred, target) -> float:
    """mean((pred − target)²) over all elements: the "mse" :func:`loss_forward` of any shape."""
    return loss_forward("mse", *_as_rows(pred, target))


def mse_backward(pred, target, scale=None):
    """scale · (pred − target), pred's shape; scale defaults to 2 / pred.size, which makes it
    the "mse" :func:`loss_backward`."""
    shape = np.shape(pred)
    pred, target = _as_rows(pred, target)
    scale = 2.0 / max(pred.size, 1) if scale is None else float(scale)
    return _scaled_difference(pred, target, scale).reshape(shape)
