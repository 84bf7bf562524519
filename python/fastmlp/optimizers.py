"""Optimizers: descriptions of an update rule that the C++ engine applies to
the flat parameter buffer in one fused loop."""

from __future__ import annotations

from ._validation import check_positive_float

__all__ = ["SGD", "Optimizer"]


class Optimizer:
    """Base class of the update rules."""

    def _apply(self, core) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class SGD(Optimizer):
    """Plain gradient descent, the article's update rule::

        w ← w − lr · ∂L/∂w

    Parameters
    ----------
    lr : float
        The learning rate η, positive and finite.
    """

    def __init__(self, lr: float = 0.01):
        self.lr = check_positive_float(lr, "lr")

    def _apply(self, core) -> None:
        core.sgd_step(self.lr)

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr!r})"
