"""gradient_check: the article's "perturb each weight" method, as a debugging tool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from ._targets import prepare_targets
from ._validation import check_int, check_positive_float, check_samples

__all__ = ["gradient_check", "GradientCheckResult"]


@dataclass(frozen=True)
class GradientCheckResult:
    """Outcome of :func:`gradient_check`.

    max_rel_error is max over the checked parameters of
    |analytic − numeric| / max(|analytic|, |numeric|, floor).
    """

    max_rel_error: float
    worst_index: int  # index into net.params
    worst_parameter: str  # e.g. "weights[1][3, 0]" or "biases[0][2]"
    analytic: float
    numeric: float
    n_checked: int

    def __bool__(self) -> bool:  # so `assert gradient_check(...)` reads naturally
        return self.max_rel_error <= 1e-6


def _parameter_name(net, flat_index: int) -> str:
    """Where index ``flat_index`` of ``net.params`` lives: "weights[l][i, j]",
    "biases[l][i]", "norm_gains[k][i]" or "norm_biases[k][i]" (each a view into
    ``params``; its offset is where its memory starts)."""
    base, size = net.params.ctypes.data, net.params.itemsize
    for name in ("weights", "biases", "norm_gains", "norm_biases"):
        for k, view in enumerate(getattr(net, name)):
            start = (view.ctypes.data - base) // size
            if start <= flat_index < start + view.size:
                where = np.unravel_index(flat_index - start, view.shape)
                return f"{name}[{k}][{', '.join(str(int(i)) for i in where)}]"
    raise IndexError(flat_index)


def _has_dropout(layers) -> bool:
    return any(layer["type"] == "dropout" or (layer["type"] == "residual" and _has_dropout(layer["block"]))
               for layer in layers)


def gradient_check(net, X, y, *, eps: float = 1e-4, max_params: int = 2000, floor: float = 1e-8,
                   seed: int = 0) -> GradientCheckResult:
    """Compares backpropagation's gradient with central finite differences, in float64.

    The network is copied to float64 (``net`` itself is not changed). Each
    checked parameter p is moved by ±eps and ±2·eps and the loss evaluated at
    each point; the fourth-order central difference

        numeric = (−L(p + 2ε) + 8 L(p + ε) − 8 L(p − ε) + L(p − 2ε)) / (12 ε)

    has a truncation error of order ε⁴, so ε can be large enough (1e-4) that
    rounding in the loss stays near 1e-12. Networks with more than
    ``max_params`` parameters are checked on a seeded random sample of them.

    The loss is the training-mode loss that ``backward`` differentiates: batch
    norm with the batch's statistics, and dropout with the same masks at every
    point (the generator is set back before each forward pass).

    ReLU-family networks have kinks: a pre-activation within 2·ε of zero
    (for instance z = 0 exactly, from zero biases and a dead layer below) makes
    the numeric derivative meaningless there. Check such networks with
    non-zero biases and few samples.
    """
    eps = check_positive_float(eps, "eps")
    floor = check_positive_float(floor, "floor")
    max_params = check_int(max_params, "max_params", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    clone = net.astype("float64")
    X = check_samples(X, "X", clone.n_inputs, np.dtype(np.float64))
    y = prepare_targets(y, "y", X.shape[0], clone.n_outputs, clone.loss, clone.dtype)

    # Dropout's masks come from the network's generator; a copy carries its state, so
    # every pass from a fresh copy of `start` draws the same masks.
    start = clone.copy() if _has_dropout(clone.architecture) else None

    def fresh():
        """The network to run a pass on: clone itself, or a fresh copy of `start` with clone's parameters."""
        if start is None:
            return clone
        probe = start.copy()
        probe.params[...] = clone.params
        return probe

    first = fresh()
    first.backward(X, y, first.forward(X))
    analytic = first.grads.copy()

    n = clone.n_params
    if n <= max_params:
        indices = np.arange(n)
    else:
        indices = np.sort(np.random.default_rng(seed).choice(n, size=max_params, replace=False))

    params = clone.params

    def loss() -> float:
        return kernels.loss_forward(clone.loss, fresh().forward(X), y, clone.huber_delta)

    def loss_at(i: int, shift: float) -> float:
        saved = params[i]
        params[i] = saved + shift
        value = loss()
        params[i] = saved
        return value

    numeric = np.empty(len(indices))
    for k, i in enumerate(indices):
        # Differences first: an exactly flat loss gives exactly 0.
        near = loss_at(i, eps) - loss_at(i, -eps)
        far = loss_at(i, 2 * eps) - loss_at(i, -2 * eps)
        numeric[k] = (8 * near - far) / (12 * eps)

    a = analytic[indices]
    errors = np.abs(a - numeric) / np.maximum(np.maximum(np.abs(a), np.abs(numeric)), floor)
    worst = int(np.argmax(errors))
    return GradientCheckResult(
        max_rel_error=float(errors[worst]),
        worst_index=int(indices[worst]),
        worst_parameter=_parameter_name(clone, int(indices[worst])),
        analytic=float(a[worst]),
        numeric=float(numeric[worst]),
        n_checked=len(indices),
    )
