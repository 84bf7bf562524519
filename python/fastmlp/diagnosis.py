"""Why a network does not learn: a per-layer report from one forward/backward pass.

The article's part 5 explains the failures (vanishing and exploding gradients, dead
ReLUs, saturated sigmoids); :meth:`fastmlp.Network.diagnose` measures them. For each
dense layer ℓ (0 is the first hidden layer, the last is the output layer) it reports:

- ``weight_norm`` ‖W_ℓ‖ and ``grad_norm`` ‖∂L/∂W_ℓ‖ (Frobenius norms), and their
  ratio ``grad_ratio`` = ‖∂L/∂W_ℓ‖ / ‖W_ℓ‖: how far one step of unit learning rate
  would move the layer, relative to its size;
- ``activation_mean`` and ``activation_std`` of the layer's output over the batch;
- ``dead``: for the relu family, the fraction of the layer's units whose
  pre-activation is ≤ 0 for every sample of the batch (they pass no gradient);
- ``saturated``: for sigmoid and tanh, the fraction of (sample, unit) entries where
  the activation's derivative is below 1 % of its largest value (sigmoid: a(1 − a)
  < 0.0025; tanh: 1 − a² < 0.01);
- ``verdict``, the first of these that holds (thresholds in :data:`THRESHOLDS`):
    "exploding"  a gradient that is not finite; or grad_ratio above 100 (one step
                 at lr 0.01 would move the layer by more than its own size), or
                 more than 1000 times the output layer's;
    "dead"       half or more of its units dead (the cause: their gradient is 0);
    "saturated"  half or more of its entries saturated (likewise);
    "vanishing"  grad_ratio less than 1/1000 of the output layer's: the layer
                 learns a thousand times slower than the last one;
    "ok"         none of these.
  The output layer is the yardstick for the relative tests, which it never fails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import reference

__all__ = ["Diagnosis", "LayerReport", "THRESHOLDS", "diagnose"]

THRESHOLDS = {
    "exploding_absolute": 100.0,  # grad_ratio above this
    "exploding_ratio": 1e3,  # grad_ratio above this times the output layer's
    "vanishing_ratio": 1e-3,  # grad_ratio below this times the output layer's
    "dead_fraction": 0.5,
    "saturated_fraction": 0.5,
    "saturated_derivative": 0.01,  # of the derivative's largest value
}
RELU_FAMILY = ("relu", "leaky_relu")
SATURATING = ("sigmoid", "tanh")


@dataclass(frozen=True)
class LayerReport:
    """One dense layer's line of a :class:`Diagnosis`."""

    layer: int
    shape: tuple[int, int]  # (inputs, outputs)
    activation: str
    weight_norm: float
    grad_norm: float
    grad_ratio: float
    activation_mean: float
    activation_std: float
    dead: float | None  # fraction of units; None unless relu family
    saturated: float | None  # fraction of entries; None unless sigmoid or tanh
    verdict: str


@dataclass(frozen=True)
class Diagnosis:
    """Per-layer report of one forward/backward pass; prints as a table."""

    layers: tuple[LayerReport, ...]
    loss: str
    n_samples: int
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))

    @property
    def verdicts(self) -> list[str]:
        return [report.verdict for report in self.layers]

    def to_dict(self) -> dict:
        """Plain data: {"layers": [...], "loss", "n_samples", "thresholds"}."""
        return {
            "layers": [asdict(report) for report in self.layers],
            "loss": self.loss,
            "n_samples": self.n_samples,
            "thresholds": dict(self.thresholds),
        }

    def __str__(self) -> str:
        header = ("layer", "shape", "activation", "|W|", "|dW|", "|dW|/|W|", "mean a", "std a",
                  "dead", "saturated", "verdict")

        def percent(x):
            return "—" if x is None else f"{100 * x:.0f} %"

        rows = [
            (str(r.layer), f"{r.shape[0]}→{r.shape[1]}", r.activation, f"{r.weight_norm:.3g}",
             f"{r.grad_norm:.3g}", f"{r.grad_ratio:.3g}", f"{r.activation_mean:.3g}",
             f"{r.activation_std:.3g}", percent(r.dead), percent(r.saturated), r.verdict)
            for r in self.layers
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Diagnosis({len(self.layers)} layers: {', '.join(self.verdicts)})"

    def plot(self, ax=None, label: str | None = None):
        """Gradient norm by layer (log scale) on a matplotlib Axes (a new figure's
        when None); returns the Axes. Needs the plot extra (matplotlib)."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError('Diagnosis.plot needs matplotlib: pip install "fastmlp[plot]"') from None
        if ax is None:
            ax = Figure(figsize=(6, 4)).add_subplot()
        layers = [r.layer for r in self.layers]
        norms = [r.grad_norm if r.grad_norm > 0 else float("nan") for r in self.layers]
        ax.semilogy(layers, norms, marker="o", label=label)
        ax.set_xlabel("layer (0: first hidden)")
        ax.set_ylabel("‖∂L/∂W‖")
        ax.set_title("gradient norm by layer")
        if label is not None:
            ax.legend()
        return ax


_LARGEST_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0}


def _saturated_fraction(activation: str, z: np.ndarray, a: np.ndarray) -> float | None:
    if activation not in SATURATING or a.size == 0:
        return None
    # f'(z), from the activation's NumPy twin (da = 1), in float64
    derivative = reference.activation_backward(np.ones(a.shape), z.astype(np.float64), a.astype(np.float64),
                                               activation)
    return float(np.mean(derivative < THRESHOLDS["saturated_derivative"] * _LARGEST_DERIVATIVE[activation]))


def _dead_fraction(activation: str, z: np.ndarray) -> float | None:
    if activation not in RELU_FAMILY or z.shape[1] == 0:
        return None
    return float(np.mean(np.all(z <= 0, axis=0)))


def _verdict(grad_norm: float, ratio: float, output_ratio: float, is_output: bool,
             dead: float | None, saturated: float | None) -> str:
    relative = not is_output and math.isfinite(output_ratio) and output_ratio > 0
    if not math.isfinite(grad_norm) or ratio > THRESHOLDS["exploding_absolute"]:
        return "exploding"
    if relative and ratio > THRESHOLDS["exploding_ratio"] * output_ratio:
        return "exploding"
    if dead is not None and dead >= THRESHOLDS["dead_fraction"]:
        return "dead"
    if saturated is not None and saturated >= THRESHOLDS["saturated_fraction"]:
        return "saturated"
    if relative and ratio < THRESHOLDS["vanishing_ratio"] * output_ratio:
        return "vanishing"
    return "ok"


def _norm(x: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.linalg.norm(x.astype(np.float64)))


def diagnose(net, X, y) -> Diagnosis:
    """See :meth:`fastmlp.Network.diagnose`."""
    y_pred = net.forward(X)
    grads_w, _ = net.backward(X, y, y_pred)
    n_layers = len(net.layer_sizes) - 1
    caches = [net.layer_cache(layer) for layer in range(n_layers)]
    weight_norms = [_norm(w) for w in net.weights]
    grad_norms = [_norm(g) for g in grads_w]
    ratios = [g / w if w > 0 else (math.inf if g > 0 else 0.0) for g, w in zip(grad_norms, weight_norms)]
    with np.errstate(all="ignore"):  # a non-finite network is reported, not warned about
        reports = [_layer_report(net, layer, z, a, activation, weight_norms, grad_norms, ratios)
                   for layer, ((z, a), activation) in enumerate(zip(caches, net.activations))]
    return Diagnosis(layers=tuple(reports), loss=net.loss, n_samples=int(np.shape(y_pred)[0]))


def _layer_report(net, layer, z, a, activation, weight_norms, grad_norms, ratios) -> LayerReport:
    n_layers = len(ratios)
    dead, saturated = _dead_fraction(activation, z), _saturated_fraction(activation, z, a)
    a64 = a.astype(np.float64)
    return LayerReport(
        layer=layer,
        shape=(net.layer_sizes[layer], net.layer_sizes[layer + 1]),
        activation=activation,
        weight_norm=weight_norms[layer],
        grad_norm=grad_norms[layer],
        grad_ratio=ratios[layer],
        activation_mean=float(a64.mean()) if a64.size else 0.0,
        activation_std=float(a64.std()) if a64.size else 0.0,
        dead=dead,
        saturated=saturated,
        verdict=_verdict(grad_norms[layer], ratios[layer], ratios[-1], layer == n_layers - 1,
                         dead, saturated),
    )
