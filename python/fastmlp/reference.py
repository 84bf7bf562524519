"""NumPy twins of fastmlp's kernels and of the whole network: the oracle.

Every function here has the name and signature of its fast twin in
:mod:`fastmlp.kernels`, and :class:`Network` mirrors the C++ engine on the same
flat parameter layout (W_0, b_0, W_1, b_1, ...). Written for clarity, not
speed; the tests hold the C++ to these.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

import numpy as np

from ._article import NeuralNetwork  # the article's own class, verbatim: fastmlp.NeuralNetwork's twin
from ._validation import check_clip_value as _check_clip_value
from ._validation import common_float_dtype as _float_dtype

__all__ = [
    "gemm",
    "activation_forward",
    "activation_backward",
    "bias_add_forward",
    "bias_add_backward",
    "bias_activation_forward",
    "activation_bias_backward",
    "mse_forward",
    "mse_backward",
    "sgd_update",
    "Network",
    "NeuralNetwork",
    "LEAKY_RELU_SLOPE",
    "LOSSES",
    "INIT_SCHEMES",
    "OPTIMIZERS",
    "SCHEDULE_KINDS",
    "count_correct",
    "softmax",
    "loss_forward",
    "loss_backward",
    "grad_norm",
    "clip_scale",
    "sgd_step",
    "adam_step",
    "lamb_step",
    "schedule_factor",
    "Rng",
    "init_params",
    "resolve_init",
    "Optimizer",
]

LEAKY_RELU_SLOPE = 0.01
_erfc = np.frompyfunc(math.erfc, 1, 1)


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """C = alpha · op(a) · op(b) + beta · C (beta ignored when c is None; c updated in place)."""
    dtype = _float_dtype(a, b) if c is None else _float_dtype(a, b, c)
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if c is None:
        return (dtype.type(alpha) * product).astype(dtype)
    c[...] = dtype.type(alpha) * product + (dtype.type(beta) * c if beta != 0 else 0)
    return c


def _sigmoid(z):
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype)


def _gelu_cdf(z):  # Φ(z) = erfc(−z/√2) / 2
    return (0.5 * _erfc(-z.astype(np.float64) / math.sqrt(2)).astype(np.float64)).astype(z.dtype)


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


def bias_add_forward(z, bias):
    dtype = _float_dtype(z, bias)
    return np.asarray(z, dtype=dtype) + np.asarray(bias, dtype=dtype)


def bias_add_backward(dz):
    dz = np.asarray(dz, dtype=_float_dtype(dz))
    return dz.sum(axis=0)


def bias_activation_forward(z, bias, activation="relu"):
    """(z + bias, f(z + bias))."""
    z = bias_add_forward(z, bias)
    return z, activation_forward(z, activation)


def activation_bias_backward(da, z, a=None, activation="relu"):
    """(dz, column sums of dz) with dz = da ⊙ f'(z)."""
    dz = activation_backward(da, z, a, activation)
    return dz, bias_add_backward(dz)


def mse_forward(pred, target):
    dtype = _float_dtype(pred, target)
    diff = np.asarray(pred, dtype=dtype) - np.asarray(target, dtype=dtype)
    return float(np.mean(diff.astype(np.float64) ** 2)) if diff.size else 0.0


def mse_backward(pred, target, scale=None):
    dtype = _float_dtype(pred, target)
    pred = np.asarray(pred, dtype=dtype)
    scale = 2.0 / max(pred.size, 1) if scale is None else float(scale)
    return (dtype.type(scale) * (pred - np.asarray(target, dtype=dtype))).astype(dtype)


def sgd_update(params, grads, lr):
    params -= params.dtype.type(lr) * np.asarray(grads, dtype=params.dtype)
    return params


class Network:
    """The whole network in NumPy, on the engine's flat layout.

    ``activations`` has one name per layer, the output layer's last. ``loss`` is
    one of :data:`LOSSES` (``delta`` is Huber's δ), applied to the raw output ŷ
    of the last layer (logits for the cross-entropies); see :func:`loss_forward`.
    The default is MSE: L = mean((ŷ − y)²) over samples and outputs,
    dL/dŷ = 2 (ŷ − y) / (B · O).
    """

    def __init__(self, layer_sizes, activations, dtype="float32", params=None, seed=0, *, loss="mse", delta=1.0):
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.activations = tuple(activations)
        if len(self.activations) != len(self.layer_sizes) - 1:
            raise ValueError("activations: expected one name per layer")
        self.loss_name = _check_loss(loss, delta)
        self.delta = float(delta)
        self.dtype = np.dtype(dtype)
        self.offsets = []
        offset = 0
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            self.offsets.append((offset, offset + fan_in * fan_out))
            offset += fan_in * fan_out + fan_out
        if params is None:  # He-normal weights, zero biases (NumPy's generator, not the engine's)
            rng = np.random.default_rng(seed)
            params = np.zeros(offset)
            for (w_off, b_off), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
                params[w_off:b_off] = rng.standard_normal(fan_in * fan_out) * math.sqrt(2.0 / fan_in)
        self.params = np.array(params, dtype=self.dtype)
        if self.params.shape != (offset,):
            raise ValueError(f"params: expected {offset} values, got shape {self.params.shape}")
        self.grads = np.zeros_like(self.params)
        self.weights, self.biases, self.grad_weights, self.grad_biases = [], [], [], []
        for (w_off, b_off), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
            self.weights.append(self.params[w_off:b_off].reshape(fan_out, fan_in))
            self.biases.append(self.params[b_off : b_off + fan_out])
            self.grad_weights.append(self.grads[w_off:b_off].reshape(fan_out, fan_in))
            self.grad_biases.append(self.grads[b_off : b_off + fan_out])
        self.cache = None

    @classmethod
    def from_network(cls, net, dtype=None):
        """The NumPy twin of a fastmlp.Network, with a copy of its parameters (and its
        loss, and Huber's δ, where the network has them)."""
        loss = getattr(net, "loss", "mse")
        delta = getattr(net, "huber_delta", getattr(net, "delta", 1.0))
        return cls(net.layer_sizes, net.activations, dtype or net.dtype, params=net.params,
                   loss=loss if isinstance(loss, str) else "mse",
                   delta=delta if isinstance(delta, (int, float)) else 1.0)

    def forward(self, X):
        A = np.asarray(X, dtype=self.dtype)
        zs, activations = [], [A]
        for W, b, activation in zip(self.weights, self.biases, self.activations):
            Z = A @ W.T + b
            A = activation_forward(Z, activation)
            zs.append(Z)
            activations.append(A)
        self.cache = (zs, activations)
        return A

    predict = forward

    def backward(self, X, y, y_pred):
        """Fills ``grads`` (replacing it) and returns (grads_w, grads_b)."""
        zs, activations = self.cache
        y = np.asarray(y, dtype=self.dtype).reshape(y_pred.shape)
        dA = loss_backward(self.loss_name, y_pred, y, self.delta)
        for layer in range(len(self.weights) - 1, -1, -1):
            dZ = activation_backward(dA, zs[layer], activations[layer + 1], self.activations[layer])
            self.grad_weights[layer][...] = dZ.T @ activations[layer]
            self.grad_biases[layer][...] = dZ.sum(axis=0)
            if layer > 0:
                dA = dZ @ self.weights[layer]
        return self.grad_weights, self.grad_biases

    def step(self, lr):
        sgd_update(self.params, self.grads, lr)

    def segments(self):
        """[(offset, size), ...]: each parameter tensor of the flat buffer, layer by
        layer, (w_off, O·I) then (b_off, O). LAMB's trust ratios are per segment."""
        segments = []
        for (w_off, b_off), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
            segments.append((w_off, fan_out * fan_in))
            segments.append((b_off, fan_out))
        return segments

    def loss(self, X, y):
        """The network's loss (:func:`loss_forward`) on (X, y)."""
        y = np.asarray(y).reshape(-1, self.layer_sizes[-1])
        return loss_forward(self.loss_name, self.forward(X), y, self.delta)

    def fit(self, X, y, epochs=1, batch_size=None, lr=0.01, optimizer=None):
        """Training over batches in order (no shuffling).

        Each epoch's loss is the mean of its batches' losses weighted by their rows,
        each measured before that batch's update, as the engine does.

        With ``optimizer=None``: plain SGD, p ← p − lr · ∇L; returns the list of epoch
        losses. With an :class:`Optimizer` (``lr`` is then ignored): its ``step`` after
        each batch; returns ``{"loss": [...], "grad_norm": [...], "lr": [...]}``, per
        epoch the loss as above, the mean of the steps' gradient norms (before
        clipping) and the learning rate of the epoch's last step.
        """
        X = np.asarray(X, dtype=self.dtype)
        y = np.asarray(y, dtype=self.dtype).reshape(len(X), -1)
        n = len(X)
        batch_size = n if batch_size is None else min(batch_size, n)
        losses, norms, lrs = [], [], []
        for _ in range(epochs):
            total, epoch_norms, last_lr = 0.0, [], lr
            for start in range(0, n, batch_size):
                xb, yb = X[start : start + batch_size], y[start : start + batch_size]
                pred = self.forward(xb)
                total += loss_forward(self.loss_name, pred, yb, self.delta) * len(xb)
                self.backward(xb, yb, pred)
                if optimizer is None:
                    self.step(lr)
                else:
                    info = optimizer.step(self.params, self.grads, self.segments())
                    epoch_norms.append(info["grad_norm"])
                    last_lr = info["lr"]
            losses.append(total / n)
            norms.append(math.fsum(epoch_norms) / len(epoch_norms) if epoch_norms else 0.0)
            lrs.append(last_lr)
        if optimizer is None:
            return losses
        return {"loss": losses, "grad_norm": norms, "lr": lrs}


# ---- losses --------------------------------------------------------------------------------------
#
# Arithmetic: the gradients are computed elementwise in the dtype T of ``pred``
# (float32 or float64; anything else counts as float64), the target cast to T;
# their scalar factors (1/(B·O), 2/(B·O), 1/B) are Python floats cast to T once.
# The loss *values* take the differences (p − t, and p − max p for the
# cross-entropy) in T, then the per-element terms and the mean in float64, as
# mse_forward does.

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


def count_correct(name, pred, target) -> int:
    """How many predictions of raw outputs ``pred`` (B, O) are right against dense ``target``:
    rows whose argmax (the first maximum) equals the target's for ``"cross_entropy"``;
    elements with (p > 0) == (t > 0.5) for ``"binary_cross_entropy"``; 0 for the others."""
    pred, target, _ = _loss_arrays(name, pred, target, 1.0)
    if name == "cross_entropy":
        return int(np.sum(np.argmax(pred, axis=1) == np.argmax(target, axis=1)))
    if name == "binary_cross_entropy":
        return int(np.sum((pred > 0) == (target > 0.5)))
    return 0


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


def loss_forward(name, pred, target, delta=1.0) -> float:
    """The mean loss of raw outputs ``pred`` (B, O) against a dense ``target`` (B, O); n = B·O.

    - ``"mse"``: L = (1/n) Σ (p − t)².
    - ``"cross_entropy"`` (softmax over each row of logits, as torch.nn.CrossEntropyLoss
      with probability targets): L = (1/B) Σ_rows −Σ_k t_k · log_softmax(p)_k, where
      log_softmax(p)_k = (p_k − m) − log Σ_j e^(p_j − m), m = max_j p_j (log-sum-exp).
    - ``"binary_cross_entropy"`` (from logits, as torch.nn.BCEWithLogitsLoss):
      L = (1/n) Σ max(p, 0) − p·t + log1p(e^(−|p|)).
    - ``"huber"`` (as torch.nn.HuberLoss), d = p − t:
      L = (1/n) Σ (½ d² if |d| ≤ δ else δ (|d| − δ/2)).

    Returns a Python float; 0.0 when pred is empty.
    """
    pred, target, _ = _loss_arrays(name, pred, target, delta)
    batch = pred.shape[0]
    if pred.size == 0:
        return 0.0
    if name == "mse":
        diff = pred - target
        return float(np.mean(diff.astype(np.float64) ** 2))
    if name == "cross_entropy":
        shifted = (pred - pred.max(axis=1, keepdims=True)).astype(np.float64)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-(target.astype(np.float64) * log_softmax).sum() / batch)
    if name == "binary_cross_entropy":
        p, t = pred.astype(np.float64), target.astype(np.float64)
        return float(np.mean(np.maximum(p, 0.0) - p * t + np.log1p(np.exp(-np.abs(p)))))
    # huber
    delta = float(delta)
    a = np.abs((pred - target).astype(np.float64))
    return float(np.mean(np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))))


def loss_backward(name, pred, target, delta=1.0):
    """dL/dpred of :func:`loss_forward`'s mean loss, same shape and dtype as ``pred``; n = B·O.

    - ``"mse"``: 2 (p − t) / n (equal to :func:`mse_backward`).
    - ``"cross_entropy"``: (softmax(p) · Σ_k t_k − t) / B, the row sums of t taken per row:
      the exact gradient for any t, equal to (softmax(p) − t) / B when rows of t sum to 1.
    - ``"binary_cross_entropy"``: (σ(p) − t) / n, σ the logistic sigmoid (stable form).
    - ``"huber"``: clip(p − t, −δ, δ) / n.
    """
    pred, target, dtype = _loss_arrays(name, pred, target, delta)
    T = dtype.type
    batch, n = pred.shape[0], pred.size
    if n == 0:
        return np.zeros(pred.shape, dtype=dtype)
    if name == "mse":
        grad = T(2.0 / n) * (pred - target)
    elif name == "cross_entropy":
        grad = T(1.0 / batch) * (softmax(pred) * target.sum(axis=1, keepdims=True) - target)
    elif name == "binary_cross_entropy":
        grad = T(1.0 / n) * (_sigmoid(pred) - target)
    else:  # huber
        d = T(float(delta))
        grad = T(1.0 / n) * np.clip(pred - target, -d, d)
    return grad.astype(dtype, copy=False)


# ---- gradient preprocessing ----------------------------------------------------------------------


def grad_norm(grads, clip_value=None) -> float:
    """‖g‖₂ = √(Σ g_i²) over all values of ``grads``, summed in float64.

    With ``clip_value`` = c, each value is first clamped to [−c, c] (in the grads'
    dtype, c cast to it), as torch.nn.utils.clip_grad_value_ would leave it.
    """
    g = np.asarray(grads)
    dtype = _float_dtype(g)
    g = g.astype(dtype, copy=False).ravel()
    if clip_value is not None:
        c = dtype.type(_check_clip_value(clip_value))
        g = np.clip(g, -c, c)
    g = g.astype(np.float64)
    return math.sqrt(float(np.sum(g * g)))


def clip_scale(norm, max_norm) -> float:
    """The factor torch.nn.utils.clip_grad_norm_ multiplies the gradients by:
    1 when max_norm is None, else min(1, max_norm / (norm + 1e-6))."""
    if max_norm is None:
        return 1.0
    return min(1.0, float(max_norm) / (float(norm) + 1e-6))


# ---- optimizers ------------------------------------------------------------------------------------
#
# In place over the flat parameter buffer ``params`` and state buffers of its shape.
# The elementwise work is done in params' dtype T (float32 or float64); scalar
# coefficients (1 − β, bias corrections 1 − β^t with β^t = pow(β, t), lr·wd, lr·trust)
# are Python floats cast to T once. Every optimizer uses, in place of ``grads``,
#     g = grad_scale · clamp(grads, −clip_value, clip_value)      (clamp only when clip_value is given)
# and leaves ``grads`` itself unchanged.

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


def _check_params(params) -> np.dtype:
    if not isinstance(params, np.ndarray) or params.dtype not in (np.float32, np.float64):
        raise TypeError("params: expected a float32 or float64 NumPy array (updated in place)")
    if not params.flags.writeable:
        raise ValueError("params: the array is read-only")
    return params.dtype


def _check_state(buffer, params, what):
    if not isinstance(buffer, np.ndarray) or buffer.dtype.kind != "f":
        raise TypeError(f"{what}: expected a floating-point NumPy array (updated in place)")
    if buffer.shape != params.shape:
        raise ValueError(f"{what}: shape {buffer.shape}, params {params.shape}")
    if not buffer.flags.writeable:
        raise ValueError(f"{what}: the array is read-only")


def _check_step(step) -> int:
    step = operator.index(step)
    if step < 1:
        raise ValueError(f"step: the 1-based update count must be >= 1; got {step}")
    return step


def _effective_grads(grads, params, grad_scale, clip_value):
    """g = grad_scale · clamp(grads, −c, c) in params' dtype, a new array."""
    dtype = params.dtype
    g = np.array(grads, dtype=dtype)  # a copy: grads stays untouched
    if g.shape != params.shape:
        raise ValueError(f"grads: shape {g.shape}, params {params.shape}")
    if clip_value is not None:
        c = dtype.type(_check_clip_value(clip_value))
        np.clip(g, -c, c, out=g)
    return dtype.type(float(grad_scale)) * g


def sgd_step(params, grads, velocity, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
             step=1, grad_scale=1.0, clip_value=None):
    """One update of torch.optim.SGD's rule, in place (returns None); t = ``step`` (1-based)::

        g ← g + wd · p                                     (when wd ≠ 0)
        when μ ≠ 0:  v ← g                                 (t = 1)
                     v ← μ · v + (1 − dampening) · g       (t > 1)
                     g ← g + μ · v   (nesterov)   or   g ← v
        p ← p − lr · g

    ``velocity`` (v) may be None when μ = momentum = 0.
    """
    dtype = _check_params(params)
    T = dtype.type
    step = _check_step(step)
    g = _effective_grads(grads, params, grad_scale, clip_value)
    if weight_decay != 0:
        g = g + T(float(weight_decay)) * params
    if momentum != 0:
        if velocity is None:
            raise ValueError("sgd_step: momentum needs a velocity buffer")
        _check_state(velocity, params, "velocity")
        if step == 1:
            buf = g.copy()
        else:
            buf = T(float(momentum)) * velocity.astype(dtype, copy=False) + T(1.0 - float(dampening)) * g
        velocity[...] = buf
        g = g + T(float(momentum)) * buf if nesterov else buf
    params -= T(float(lr)) * g


def _adam_moments(g, m, v, params, beta1, beta2, step):
    """m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) g² (in place); returns (m̂, v̂)
    = (m / (1 − β1^t), v / (1 − β2^t))."""
    dtype = params.dtype
    T = dtype.type
    beta1, beta2 = float(beta1), float(beta2)
    m_new = T(beta1) * m.astype(dtype, copy=False) + T(1.0 - beta1) * g
    v_new = T(beta2) * v.astype(dtype, copy=False) + T(1.0 - beta2) * (g * g)
    m[...] = m_new
    v[...] = v_new
    return m_new / T(1.0 - beta1**step), v_new / T(1.0 - beta2**step)


def adam_step(params, grads, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step,
              decoupled=False, grad_scale=1.0, clip_value=None):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) update, in place
    (returns None), as torch.optim.Adam / AdamW document; t = ``step`` (1-based)::

        Adam:   g ← g + wd · p                    AdamW:  p ← p − (lr·wd) · p
        m ← β1 m + (1 − β1) g                      v ← β2 v + (1 − β2) g²
        m̂ = m / (1 − β1^t)                         v̂ = v / (1 − β2^t)
        p ← p − lr · m̂ / (√v̂ + eps)                (evaluated left to right: (lr·m̂) / (√v̂ + eps))
    """
    dtype = _check_params(params)
    T = dtype.type
    step = _check_step(step)
    _check_state(m, params, "m")
    _check_state(v, params, "v")
    g = _effective_grads(grads, params, grad_scale, clip_value)
    p = params.copy()
    if weight_decay != 0:
        if decoupled:
            p = p - T(float(lr) * float(weight_decay)) * p
        else:
            g = g + T(float(weight_decay)) * p
    m_hat, v_hat = _adam_moments(g, m, v, params, beta1, beta2, step)
    params[...] = p - T(float(lr)) * m_hat / (np.sqrt(v_hat) + T(float(eps)))


def _check_segments(segments, n):
    """[(offset, size), ...] as ints, each inside [0, n), none overlapping another."""
    checked = []
    for segment in segments:
        offset, size = (operator.index(x) for x in segment)
        if offset < 0 or size < 0 or offset + size > n:
            raise ValueError(f"segments: ({offset}, {size}) is outside the buffer of {n} values")
        checked.append((offset, size))
    end = 0
    for offset, size in sorted(s for s in checked if s[1] > 0):
        if offset < end:
            raise ValueError("segments: overlapping segments")
        end = offset + size
    return checked


def lamb_step(params, grads, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0, step, segments,
              grad_scale=1.0, clip_value=None):
    """One LAMB update (You et al. 2019, Algorithm 2, with bias correction), in place
    (returns None); t = ``step`` (1-based)::

        m, v, m̂, v̂ as in :func:`adam_step` (no L2 term in g)
        r = m̂ / (√v̂ + eps)
        u = r + wd · p
        per segment s:   trust_s = ‖p_s‖ / ‖u_s‖   (1 when either norm is 0)
                         p_s ← p_s − (lr · trust_s) · u_s

    ``segments`` is a sequence of (offset, size) into the flattened (C order) buffer,
    one per parameter tensor (a layer's weights, a layer's biases); they must not
    overlap. The norms are taken in float64, of p before the update. Values outside
    every segment are updated with trust 1.
    """
    dtype = _check_params(params)
    T = dtype.type
    step = _check_step(step)
    _check_state(m, params, "m")
    _check_state(v, params, "v")
    segments = _check_segments(segments, params.size)
    g = _effective_grads(grads, params, grad_scale, clip_value)
    m_hat, v_hat = _adam_moments(g, m, v, params, beta1, beta2, step)
    r = m_hat / (np.sqrt(v_hat) + T(float(eps)))
    u = r + T(float(weight_decay)) * params if weight_decay != 0 else r
    p, u = params.reshape(-1), u.reshape(-1)  # C order, as the segments count
    new = p - T(float(lr)) * u  # trust 1 outside every segment
    for offset, size in segments:
        p_seg, u_seg = p[offset : offset + size], u[offset : offset + size]
        p_norm = math.sqrt(float(np.sum(p_seg.astype(np.float64) ** 2)))
        u_norm = math.sqrt(float(np.sum(u_seg.astype(np.float64) ** 2)))
        trust = p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0
        new[offset : offset + size] = p_seg - T(float(lr) * trust) * u_seg
    params[...] = new.reshape(params.shape)


# ---- learning-rate schedules ---------------------------------------------------------------------

SCHEDULE_KINDS = ("constant", "step", "exponential", "cosine")
_SCHEDULE_KEYS = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("total_steps", "min_factor"),
}


def _non_negative_int(value, what) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{what} must be >= 0; got {value}")
    return value


def _schedule_gamma(spec) -> float:
    if "gamma" not in spec:
        raise ValueError(f"schedule {spec['kind']!r} needs 'gamma'")
    gamma = float(spec["gamma"])
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"schedule: gamma must be positive and finite; got {gamma!r}")
    return gamma


def schedule_factor(spec, step) -> float:
    """The factor of the base learning rate at update t = ``step`` (0-based: 0 for the first update).

    ``spec`` is None (constant) or a dict with "kind" in :data:`SCHEDULE_KINDS` and an
    optional "warmup_steps" W (int ≥ 0, default 0). If t < W, the factor is (t + 1) / W.
    Otherwise, with s = t − W:

    - "constant": 1
    - "step" (keys "step_size" ≥ 1, "gamma"): gamma ** (s // step_size)
    - "exponential" ("gamma"): gamma ** s
    - "cosine" ("total_steps" T ≥ 1, "min_factor" f in [0, 1], default 0):
      f + (1 − f) · ½ · (1 + cos(π · min(s, T) / T))

    Keys other than these raise ValueError, as do an unknown kind and out-of-range values.
    """
    if spec is None:
        spec = {"kind": "constant"}
    if not isinstance(spec, Mapping):
        raise TypeError(f"schedule: expected a dict or None; got {type(spec).__name__}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule: kind must be one of {', '.join(SCHEDULE_KINDS)}; got {kind!r}")
    unknown = set(spec) - {"kind", "warmup_steps", *_SCHEDULE_KEYS[kind]}
    if unknown:
        raise ValueError(f"schedule {kind!r}: unknown keys {sorted(unknown)}")
    t = _non_negative_int(step, "step")
    warmup = _non_negative_int(spec.get("warmup_steps", 0), "warmup_steps")
    if t < warmup:
        return (t + 1) / warmup
    s = t - warmup
    if kind == "constant":
        return 1.0
    if kind == "step":
        if "step_size" not in spec:
            raise ValueError("schedule 'step' needs 'step_size'")
        step_size = operator.index(spec["step_size"])
        if step_size < 1:
            raise ValueError(f"schedule: step_size must be >= 1; got {step_size}")
        exponent = s // step_size
    elif kind == "exponential":
        exponent = s
    else:  # cosine
        if "total_steps" not in spec:
            raise ValueError("schedule 'cosine' needs 'total_steps'")
        total = operator.index(spec["total_steps"])
        if total < 1:
            raise ValueError(f"schedule: total_steps must be >= 1; got {total}")
        floor = float(spec.get("min_factor", 0.0))
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"schedule: min_factor must be in [0, 1]; got {floor!r}")
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    gamma = _schedule_gamma(spec)
    try:
        return gamma**exponent
    except OverflowError:  # gamma > 1 after very many steps
        return math.inf


# ---- the random generator and the initialisers ---------------------------------------------------

_MASK64 = (1 << 64) - 1


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & _MASK64


class Rng:
    """cpp/include/fastmlp/random.hpp's generator, value for value: xoshiro256**
    (Blackman & Vigna) seeded through splitmix64, on Python ints masked to 64 bits.

    The seed is taken modulo 2⁶⁴, as the C++ conversion to uint64 does.
    """

    def __init__(self, seed=0):
        self.reseed(seed)

    def reseed(self, seed):
        x = operator.index(seed) & _MASK64
        state = []
        for _ in range(4):  # splitmix64
            x = (x + 0x9E3779B97F4A7C15) & _MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            state.append(z ^ (z >> 31))
        self._state = state
        self._spare = 0.0
        self._has_spare = False

    def next(self) -> int:
        """The next 64-bit value: rotl(s1 · 5, 7) · 9, then the xoshiro256 state step."""
        s = self._state
        result = (_rotl((s[1] * 5) & _MASK64, 7) * 9) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def uniform(self) -> float:
        """Uniform in [0, 1): the top 53 bits of next() times 2⁻⁵³."""
        return float(self.next() >> 11) * 2.0**-53

    def below(self, bound) -> int:
        """Uniform integer in [0, bound), 1 ≤ bound < 2⁶⁴, without modulo bias (Lemire 2019):
        the high word of next() · bound, redrawn while the low word is below (2⁶⁴ − bound) mod bound."""
        bound = operator.index(bound)
        if not 1 <= bound <= _MASK64:
            raise ValueError(f"below: bound must be in [1, 2**64); got {bound}")
        product = self.next() * bound
        if product & _MASK64 < bound:
            threshold = ((1 << 64) - bound) % bound
            while product & _MASK64 < threshold:
                product = self.next() * bound
        return product >> 64

    def normal(self) -> float:
        """Standard normal, Box–Muller: u1 = uniform() redrawn while 0, u2 = uniform(),
        r = √(−2 ln u1), θ = 2π u2; returns r cos θ and keeps r sin θ for the next call."""
        if self._has_spare:
            self._has_spare = False
            return self._spare
        u1 = self.uniform()
        while u1 <= 0.0:
            u1 = self.uniform()
        u2 = self.uniform()
        radius = math.sqrt(-2.0 * math.log(u1))
        angle = 6.283185307179586477 * u2
        self._spare = radius * math.sin(angle)
        self._has_spare = True
        return radius * math.cos(angle)


INIT_SCHEMES = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "lecun_normal", "lecun_uniform")
_INIT_ALIASES = {
    "he": "he_normal",
    "xavier": "xavier_normal",
    "glorot": "xavier_normal",
    "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform",
    "lecun": "lecun_normal",
}
_ACTIVATION_NAMES = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "swish", "gelu")


def resolve_init(init, activation) -> str:
    """The full initialiser name (one of :data:`INIT_SCHEMES`) for a layer.

    "auto" → "xavier_normal" for tanh and sigmoid layers, "he_normal" for every other
    activation; "he" → "he_normal"; "xavier", "glorot" → "xavier_normal";
    "glorot_normal" / "glorot_uniform" → "xavier_normal" / "xavier_uniform";
    "lecun" → "lecun_normal"; the six full names pass through. Anything else,
    or "auto" with an unknown activation, raises ValueError.
    """
    if init == "auto":
        if not isinstance(activation, str) or activation not in _ACTIVATION_NAMES:
            raise ValueError(f"activation: expected one of {', '.join(_ACTIVATION_NAMES)}; got {activation!r}")
        return "xavier_normal" if activation in ("tanh", "sigmoid") else "he_normal"
    if isinstance(init, str):
        if init in INIT_SCHEMES:
            return init
        if init in _INIT_ALIASES:
            return _INIT_ALIASES[init]
    choices = ", ".join(("auto", *INIT_SCHEMES, *_INIT_ALIASES))
    raise ValueError(f"init: expected one of {choices}; got {init!r}")


def init_params(layer_sizes, schemes, seed, dtype="float32"):
    """The flat buffer W_0 (O_0×I_0, row-major), b_0 (O_0), W_1, b_1, ... as the engine fills it.

    One :class:`Rng` (``seed``) for the whole network; layer by layer, the weights in
    row-major order, then the biases, all zero. ``schemes`` has one name of
    :data:`INIT_SCHEMES` per layer (a single name applies to every layer); with
    fan_in = I_l, fan_out = O_l and u = uniform():

    - "he_normal": normal() · √(2 / fan_in)        "he_uniform": (2u − 1) · √(6 / fan_in)
    - "xavier_normal": normal() · √(2 / (fan_in + fan_out))
    - "xavier_uniform": (2u − 1) · √(6 / (fan_in + fan_out))
    - "lecun_normal": normal() · √(1 / fan_in)     "lecun_uniform": (2u − 1) · √(3 / fan_in)

    The square root is taken once per layer; the values are computed in float64 and
    the buffer is then cast to ``dtype`` (float32 or float64).
    """
    sizes = [operator.index(s) for s in layer_sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"layer_sizes: expected at least two sizes, each >= 1; got {sizes}")
    layers = len(sizes) - 1
    schemes = [schemes] * layers if isinstance(schemes, str) else list(schemes)
    if len(schemes) != layers:
        raise ValueError(f"schemes: expected one name per layer ({layers}); got {len(schemes)}")
    for scheme in schemes:
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"schemes: expected names from {', '.join(INIT_SCHEMES)}; got {scheme!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64; got {dtype}")
    rng = Rng(seed)
    values = np.zeros(sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:])), dtype=np.float64)
    offset = 0
    for fan_in, fan_out, scheme in zip(sizes[:-1], sizes[1:], schemes):
        family, distribution = scheme.split("_")
        if family == "he":
            numerator, denominator = (2.0 if distribution == "normal" else 6.0), fan_in
        elif family == "xavier":
            numerator, denominator = (2.0 if distribution == "normal" else 6.0), fan_in + fan_out
        else:  # lecun
            numerator, denominator = (1.0 if distribution == "normal" else 3.0), fan_in
        scale = math.sqrt(numerator / float(denominator))
        count = fan_in * fan_out
        if distribution == "normal":
            weights = [rng.normal() * scale for _ in range(count)]
        else:
            weights = [(2.0 * rng.uniform() - 1.0) * scale for _ in range(count)]
        values[offset : offset + count] = weights
        offset += count + fan_out  # the biases stay zero
    return values.astype(dtype)


# ---- the optimizer with its state ----------------------------------------------------------------


class Optimizer:
    """An update rule with its state, over a flat parameter buffer: the twin of the
    engine's optimizers.

    ``kind`` is one of :data:`OPTIMIZERS`: "sgd" (:func:`sgd_step`), "adam" and "adamw"
    (:func:`adam_step`, L2 and decoupled weight decay), "lamb" (:func:`lamb_step`).
    ``eps`` defaults to 1e-8 for adam/adamw and 1e-6 for lamb. ``schedule`` is a spec
    for :func:`schedule_factor` (None: constant). ``clip_norm`` (max global norm) and
    ``clip_value`` (per-value clamp) preprocess the gradients.

    The state (velocity, or m and v) is created at zero, with the parameters' shape
    and dtype, on the first :meth:`step`; ``t`` counts the updates made.
    """

    def __init__(self, kind, lr, *, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 beta1=0.9, beta2=0.999, eps=None, schedule=None, clip_norm=None, clip_value=None):
        if not isinstance(kind, str) or kind not in OPTIMIZERS:
            raise ValueError(f"optimizer: kind must be one of {', '.join(OPTIMIZERS)}; got {kind!r}")
        self.kind = kind
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = (1e-6 if kind == "lamb" else 1e-8) if eps is None else float(eps)
        schedule_factor(schedule, 0)  # checks the spec now rather than at the first step
        self.schedule = schedule
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.clip_value = None if clip_value is None else _check_clip_value(clip_value)
        self.reset()

    def reset(self):
        """Forgets the state and the update count."""
        self.t = 0
        self.velocity = self.m = self.v = None

    def _state_for(self, params):
        names = ("velocity",) if self.kind == "sgd" else ("m", "v")
        for name in names:
            buffer = getattr(self, name)
            if buffer is None:
                setattr(self, name, np.zeros(params.shape, dtype=params.dtype))
            elif buffer.shape != params.shape:
                raise ValueError(f"optimizer: state {name} has shape {buffer.shape}, params {params.shape}")

    def step(self, params, grads, segments=None):
        """One update of ``params`` in place; returns {"grad_norm": ‖g‖ before clip_norm
        (after clip_value), "lr": the learning rate used}.

        norm = grad_norm(grads, clip_value); grad_scale = clip_scale(norm, clip_norm);
        lr_t = lr · schedule_factor(schedule, t) with t the updates made so far; then the
        kind's update with step = t + 1. ``segments`` (see :func:`lamb_step`) is needed by lamb.
        """
        _check_params(params)
        self._state_for(params)
        norm = grad_norm(grads, self.clip_value)
        scale = clip_scale(norm, self.clip_norm)
        lr = self.lr * schedule_factor(self.schedule, self.t)
        common = dict(lr=lr, weight_decay=self.weight_decay, step=self.t + 1, grad_scale=scale,
                      clip_value=self.clip_value)
        if self.kind == "sgd":
            sgd_step(params, grads, self.velocity, momentum=self.momentum, dampening=self.dampening,
                     nesterov=self.nesterov, **common)
        elif self.kind in ("adam", "adamw"):
            adam_step(params, grads, self.m, self.v, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                      decoupled=self.kind == "adamw", **common)
        else:
            if segments is None:
                raise ValueError("optimizer: lamb needs the parameter segments")
            lamb_step(params, grads, self.m, self.v, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                      segments=segments, **common)
        self.t += 1
        return {"grad_norm": norm, "lr": lr}

    def __repr__(self) -> str:
        return f"Optimizer({self.kind!r}, lr={self.lr!r}, t={self.t})"
