"""Optimizers: descriptions of an update rule that the C++ engine applies to the
flat parameter buffer in ONE fused loop (its state, when it has one, lives in
flat buffers of the same layout, inside the network).

g stands for the gradient after clipping: ``clip_value`` clamps every value to
±clip_value, then ``clip_norm`` scales the whole gradient by
min(1, clip_norm / (norm + 1e-6)), torch.nn.utils.clip_grad_norm_'s rule (so
down to that global L2 norm when it is longer). lr is the learning rate after the ``schedule``
(fastmlp.schedules). t counts updates from 1.

The optimizer's state is part of the network: a second ``fit`` (or
``partial_fit``) with the same kind of optimizer continues it, a different kind
starts afresh, and ``Network.reset_optimizer()`` clears it.
"""

from __future__ import annotations

from . import _core
from ._validation import check_positive_float, check_real
from .schedules import Schedule

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LAMB"]

_INF = float("inf")


class Optimizer:
    """Base class of the update rules: lr, schedule and clipping."""

    _kind = ""

    def __init__(self, lr: float, schedule: Schedule | None, clip_norm: float | None, clip_value: float | None):
        self.lr = check_positive_float(lr, "lr")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule: expected a schedule such as fm.Cosine(1000) or None, got {schedule!r}")
        self.schedule = schedule
        self.clip_norm = None if clip_norm is None else check_positive_float(clip_norm, "clip_norm")
        self.clip_value = None if clip_value is None else check_positive_float(clip_value, "clip_value")

    def _hyper(self) -> dict:
        return {}

    def _config(self) -> _core.OptimizerConfig:
        """What the engine reads: the rule and its numbers (0 clip: none)."""
        return _core.OptimizerConfig(kind=self._kind, lr=self.lr, clip_norm=self.clip_norm or 0.0,
                                     clip_value=self.clip_value or 0.0, **self._hyper())

    def _schedule_config(self) -> _core.ScheduleConfig | None:
        """What the engine reads of the schedule (None: constant)."""
        return None if self.schedule is None else self.schedule._config()

    def _apply(self, core):
        return core.optimizer_step(self._config(), self._schedule_config())

    def __repr__(self) -> str:
        parts = [f"lr={self.lr!r}"] + [f"{k}={v!r}" for k, v in self._hyper().items()]
        for name in ("schedule", "clip_norm", "clip_value"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _betas(betas) -> tuple[float, float]:
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas: expected a pair (beta1, beta2) such as (0.9, 0.999), got {betas!r}") from None
    return (check_real(beta1, "betas[0]", 0.0, 1.0, high_open=True),
            check_real(beta2, "betas[1]", 0.0, 1.0, high_open=True))


class SGD(Optimizer):
    """Gradient descent with optional momentum, Nesterov momentum and weight decay
    (torch.optim.SGD's rule)::

        g ← g + weight_decay · w
        v ← g  (t = 1),   v ← momentum · v + (1 − dampening) · g  (t > 1)   [momentum > 0]
        g ← g + momentum · v  (nesterov)  or  g ← v                            [momentum > 0]
        w ← w − lr · g

    With the defaults it is the article's rule, w ← w − lr · ∂L/∂w.
    """

    _kind = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, *, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, schedule: Schedule | None = None,
                 clip_norm: float | None = None, clip_value: float | None = None):
        super().__init__(lr, schedule, clip_norm, clip_value)
        self.momentum = check_real(momentum, "momentum", 0.0, _INF, high_open=True)
        self.dampening = check_real(dampening, "dampening", 0.0, 1.0)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0, _INF, high_open=True)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        if nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError("nesterov: needs momentum > 0 and dampening 0")
        self.nesterov = nesterov

    def _hyper(self) -> dict:
        return {"momentum": self.momentum, "dampening": self.dampening, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015; torch.optim.Adam's rule), weight decay as an L2 term::

        g ← g + weight_decay · w
        m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
        m̂ = m / (1 − β1^t),      v̂ = v / (1 − β2^t)
        w ← w − lr · m̂ / (√v̂ + eps)
    """

    _kind = "adam"

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, *,
                 schedule: Schedule | None = None, clip_norm: float | None = None,
                 clip_value: float | None = None):
        super().__init__(lr, schedule, clip_norm, clip_value)
        self.betas = _betas(betas)
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0, _INF, high_open=True)

    def _hyper(self) -> dict:
        return {"beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW's rule): Adam with the
    weight decay decoupled from the gradient::

        w ← w − lr · weight_decay · w
        m, v, m̂, v̂ as Adam (no L2 term in g)
        w ← w − lr · m̂ / (√v̂ + eps)
    """

    _kind = "adamw"

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2, *,
                 schedule: Schedule | None = None, clip_norm: float | None = None,
                 clip_value: float | None = None):
        super().__init__(lr, betas, eps, weight_decay, schedule=schedule, clip_norm=clip_norm,
                         clip_value=clip_value)


class LAMB(Adam):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning",
    Algorithm 2): Adam's direction with decoupled weight decay, scaled per
    parameter tensor (each layer's weights, each layer's biases) by a trust ratio::

        m, v, m̂, v̂ as Adam
        u = m̂ / (√v̂ + eps) + weight_decay · w
        w ← w − lr · (‖w‖ / ‖u‖) · u      (the ratio is 1 when either norm is 0)
    """

    _kind = "lamb"

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0, *,
                 schedule: Schedule | None = None, clip_norm: float | None = None,
                 clip_value: float | None = None):
        super().__init__(lr, betas, eps, weight_decay, schedule=schedule, clip_norm=clip_norm,
                         clip_value=clip_value)
