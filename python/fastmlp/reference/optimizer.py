"""The twins of cpp/src/optimizer.cpp: gradient preprocessing (norm, clipping),
the update rules (SGD, Adam/AdamW, LAMB) and :class:`Optimizer`, a rule with its
state. The learning-rate schedules, which optimizer.cpp also holds, are in
:mod:`fastmlp.reference.schedule`.

The rules work in place over the flat parameter buffer ``params`` and state
buffers of its shape. The elementwise work is done in params' dtype T (float32
or float64); scalar coefficients (1 − β, bias corrections 1 − β^t with
β^t = pow(β, t), lr·wd, lr·trust) are Python floats cast to T once. Every rule
uses, in place of ``grads``,

    g = grad_scale · clamp(grads, −clip_value, clip_value)      (clamp only when clip_value is given)

and leaves ``grads`` itself unchanged.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .._validation import check_clip_value as _check_clip_value
from .._validation import common_float_dtype as _float_dtype
from .schedule import schedule_factor

# The engine's optimizer names in its enum's order; the reference's own copy (tests/test_names.py).
OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


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


def sum_into_each(arrays, start=0, stop=None) -> None:
    """In place: elements [start, stop) of every array become their sum across the
    arrays, added in list order ((a0 + a1) + a2) + ... in the arrays' dtype (the
    reduce of the gradients that the ranks of one machine keep in shared memory)."""
    stop = len(arrays[0]) if stop is None else stop
    total = arrays[0][start:stop].copy()
    for array in arrays[1:]:
        total += array[start:stop]
    for array in arrays:
        array[start:stop] = total


def clip_scale(norm, max_norm) -> float:
    """The factor torch.nn.utils.clip_grad_norm_ multiplies the gradients by:
    1 when max_norm is None, else min(1, max_norm / (norm + 1e-6))."""
    if max_norm is None:
        return 1.0
    return min(1.0, float(max_norm) / (float(norm) + 1e-6))


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

def sgd_update(params, grads, lr):
    """params −= lr · grads, in place; returns params: :func:`sgd_step` without momentum."""
    sgd_step(params, grads, None, lr=lr)
    return params


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
