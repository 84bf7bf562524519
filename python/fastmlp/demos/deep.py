"""``fastmlp demo deep``: why a deep network does not learn, and what makes it learn.

The article's part 5 in one run. Two networks of the same depth, 20 hidden layers of
32, learn the same task with the same optimizer from the same seed:

1. sigmoid, Xavier init: going back, each layer multiplies the gradient by W_lᵀ and by
   sigmoid' ≤ 1/4, so the first layer's gradient is ~10⁻¹³ of the last hidden
   layer's. The network learns only the mean of y (the output layer's bias) and its
   loss stays at y's variance; ``diagnose`` says "vanishing" for all but the last
   few layers.
2. relu + residual blocks + layer norm, He init: every hidden block of equal widths
   computes out = in + block(in), so the gradient reaches the first layers along the
   identity path undiminished, and layer norm gives every block's dense output unit
   scale (and the shorthand's final layer norm the output layer's input). It trains,
   and ``diagnose`` says "ok" for every layer, before training and after.

The task, y = x₀² + N(0, 0.1²) on 512 samples of x ~ N(0, I) in 8 dimensions, is the
article's x² with seven irrelevant inputs added. Not the article's single input: layer
norm of the first layer's output z = w·x (biases start at 0) is sign(x)·(w − w̄)/σ_w,
which keeps only the sign of x, so a one-input layer-norm network starts blind to |x|.
More inputs also make the samples differ more in every layer, which keeps down the
share of relu units that are off for every sample (diagnose's "dead", from 50 % of a
layer's units): in this residual stack it grows with depth to 30-45 % in the last
blocks before any training, because every block's input is dominated more and more by
the part all samples share (the residual stream sums non-negative relu outputs).

Both networks use Adam (lr 1e-3, batch 32), which scales each parameter's step by its
gradient's size: the most forgiving optimizer for a vanishing gradient, and the sigmoid
network still stalls, because its first layers' gradients (~10⁻¹⁴) are far below Adam's
ε (10⁻⁸). Each network trains in under a second on 2 cores.

Nothing here prints: :func:`run` trains and diagnoses both networks, :func:`figure`
draws them; ``fastmlp demo deep`` (cli.py) prints and saves the picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..diagnosis import Diagnosis
from ..network import Network
from ..optimizers import Adam

__all__ = ["DEPTH", "WIDTH", "DEFAULT_EPOCHS", "DeepRun", "DeepDemo", "make_data", "make_networks", "train", "run",
           "figure"]

DEPTH = 20  # hidden layers
WIDTH = 32
N_SAMPLES = 512
N_INPUTS = 8
NOISE = 0.1
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
DEFAULT_EPOCHS = 200


@dataclass(frozen=True)
class DeepRun:
    """One network's training: its loss per epoch and its diagnosis afterwards."""

    name: str
    network: Network
    losses: tuple[float, ...]
    diagnosis: Diagnosis
    seconds: float


@dataclass(frozen=True)
class DeepDemo:
    """Both runs, on the same data; ``y_variance`` is the loss of predicting y's mean."""

    runs: tuple[DeepRun, ...]
    y_variance: float
    epochs: int
    seed: int


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): N_SAMPLES rows of x ~ N(0, I) (N_INPUTS wide) and y = x₀² + N(0, 0.1²), float32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_SAMPLES, N_INPUTS))
    y = X[:, :1] ** 2 + rng.normal(0.0, NOISE, (N_SAMPLES, 1))
    return X.astype(np.float32), y.astype(np.float32)


def make_networks(seed: int) -> dict[str, Network]:
    """The two networks of the same depth: {name: untrained network}."""
    sizes = [N_INPUTS] + [WIDTH] * DEPTH + [1]
    return {
        "sigmoid": Network(sizes, activation="sigmoid", seed=seed),
        "relu + residual + layer norm": Network(sizes, activation="relu", residual=True, norm="layer", seed=seed),
    }


def train(name: str, net: Network, X: np.ndarray, y: np.ndarray, epochs: int) -> DeepRun:
    """Fits ``net`` with the demo's optimizer and batch size, then diagnoses it on (X, y)."""
    start = time.perf_counter()
    history = net.fit(X, y, epochs=epochs, batch_size=BATCH_SIZE, optimizer=Adam(lr=LEARNING_RATE))
    seconds = time.perf_counter() - start
    return DeepRun(name, net, tuple(history["loss"]), net.diagnose(X, y), seconds)


def run(epochs: int = DEFAULT_EPOCHS, seed: int = 42) -> DeepDemo:
    """Trains and diagnoses both networks on the same data; the same seed gives the same runs."""
    X, y = make_data(seed)
    runs = tuple(train(name, net, X, y, epochs) for name, net in make_networks(seed).items())
    return DeepDemo(runs, float(np.var(y.astype(np.float64))), epochs, seed)


def figure(demo: DeepDemo):
    """Gradient norm by layer (left) and the loss curves (right) of both runs, on an Agg
    canvas (no screen, no pyplot). Needs matplotlib (ImportError otherwise)."""
    import matplotlib  # noqa: F401  (lazy: the plot extra is optional)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    FigureCanvasAgg(fig)

    runs = demo.runs
    left = fig.add_subplot(1, 2, 1)
    for deep_run in runs:
        deep_run.diagnosis.plot(left, label=deep_run.name)
    left.set_title(f"Gradient norm by layer after training ({DEPTH} hidden layers)")
    left.grid(True, alpha=0.3)

    right = fig.add_subplot(1, 2, 2)
    for deep_run in runs:
        right.plot(np.arange(1, len(deep_run.losses) + 1), deep_run.losses, label=deep_run.name)
    right.axhline(demo.y_variance, color="gray", linestyle=":", label="variance of y (predicting its mean)")
    right.set_xlabel("Epoch")
    right.set_ylabel("Mean Squared Error Loss")
    right.set_title("Training loss, y = x₀² + noise")
    right.set_yscale("log")
    right.grid(True, alpha=0.3)
    right.legend()

    fig.tight_layout()
    return fig
