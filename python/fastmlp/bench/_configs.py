"""The standard configurations that ``fastmlp bench`` times, and their data.

Training configurations run a full step (forward, MSE backward, plain SGD update) in float32
from fastmlp's initial weights (He-normal, seed 0) in every implementation, so that each one
does the same arithmetic; "predict" is the latency of one sample through mnist-mlp; the GEMM
shapes are C = op(A)·op(B) products, squares and the three products of a dense layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 0  # fastmlp's initial weights


@dataclass(frozen=True)
class TrainConfig:
    """A training configuration: the network, the batch (None: the whole data set each step),
    the learning rate, and the steps of a block (cut short for a slow implementation)."""

    name: str
    description: str
    sizes: tuple[int, ...]
    activation: str
    batch: int | None
    lr: float
    steps: int  # a block's steps at most (a slow implementation's block is cut to about block_seconds)
    samples: int | None = None  # a fixed data set (the demo's 100 points); else steps × batch rows
    residual: bool = False
    norm: str | None = None
    targets: tuple[tuple[str, float], ...] = ()  # the project's goals: (peer, fastmlp ÷ peer at least)

    group = "train"

    @property
    def network_options(self) -> dict:
        options: dict = {}
        if self.residual:
            options["residual"] = True
        if self.norm is not None:
            options["norm"] = self.norm
        return options

    @property
    def unit(self) -> str:
        return "steps/s" if self.batch == 1 else "samples/s"

    @property
    def samples_per_step(self) -> int:
        return self.samples if self.batch is None else self.batch


@dataclass(frozen=True)
class PredictConfig:
    """The latency of ``predict`` on one sample of a training configuration's network."""

    name: str
    description: str
    network: TrainConfig
    target_us: float = 25.0
    targets: tuple[tuple[str, float], ...] = ()

    group = "predict"


@dataclass(frozen=True)
class GemmShape:
    """One product C(m, n) = op(A)(m, k) · op(B)(k, n) in one dtype."""

    name: str
    layout: str
    m: int
    n: int
    k: int
    trans_a: bool = False
    trans_b: bool = False
    dtype: str = "float32"
    threads: int | None = None  # a shape set's own thread count; None: every --threads count
    target_peak: float | None = None  # the project's goals: share of the FMA peak at least (1 thread),
    targets: tuple[tuple[str, float], ...] = ()  # and fastmlp ÷ a peer at least

    group = "gemm"

    @property
    def description(self) -> str:
        return f"{self.layout}, {self.m}×{self.n}×{self.k} {self.dtype}"

    @property
    def flop(self) -> float:
        return 2.0 * self.m * self.n * self.k


_COMMON = (("reference", 1.25), ("sklearn", 1.0))
DEMO = TrainConfig("seed-demo", "the article's demo: [1, 64, 32, 1] relu, 100 samples, full batch",
                   (1, 64, 32, 1), "relu", None, 0.01, 5000, samples=100, targets=(("torch", 20.0), *_COMMON))
MNIST = TrainConfig("mnist-mlp", "[784, 512, 256, 10] relu, batch 128", (784, 512, 256, 10), "relu", 128, 0.01,
                    200, targets=(("torch", 1.5), *_COMMON))
TRAIN_CONFIGS = (
    DEMO,
    MNIST,
    TrainConfig("wide", "[1024, 4096, 4096, 1024] relu, batch 256", (1024, 4096, 4096, 1024), "relu", 256, 0.001,
                5, targets=(("torch", 1.3), *_COMMON)),
    TrainConfig("deep-narrow", "256 → 16 × 256 tanh → 10, batch 64", (256, *([256] * 16), 10), "tanh", 64, 0.01,
                300, targets=(("torch", 2.0), *_COMMON)),
    TrainConfig("deep-residual", "256 → 16 residual blocks (dense, layer norm, relu) → 10, batch 64",
                (256, *([256] * 16), 10), "relu", 64, 0.01, 300, residual=True, norm="layer",
                targets=(("torch", 1.5),)),
    TrainConfig("tiny-batch", "[64, 128, 128, 1] relu, batch 1 (online learning)", (64, 128, 128, 1), "relu", 1,
                0.001, 20000, targets=(("torch", 20.0), *_COMMON)),
)
PREDICT = PredictConfig("predict", "one sample through mnist-mlp (latency)", MNIST, targets=(("torch", 2.0),))
ALIASES = {"demo": "seed-demo"}


def layer_products(batch: int, inputs: int, outputs: int, dtype: str = "float32", threads: int | None = None,
                   name: str = "layer", targets: tuple = ()) -> list[GemmShape]:
    """The three products of a dense layer (batch, inputs → outputs): the forward X·Wᵀ (W is
    (outputs, inputs)), the input gradient dY·W and the weight gradient dYᵀ·X."""
    where = f"({batch}, {inputs}→{outputs})"
    return [GemmShape(f"{name} fwd", f"fwd X·Wᵀ {where}", batch, outputs, inputs, trans_b=True, dtype=dtype,
                      threads=threads, targets=targets),
            GemmShape(f"{name} dX", f"dX dY·W {where}", batch, inputs, outputs, dtype=dtype, threads=threads,
                      targets=targets),
            GemmShape(f"{name} dW", f"dW dYᵀ·X {where}", outputs, inputs, batch, trans_a=True, dtype=dtype,
                      threads=threads, targets=targets)]


def square(size: int, dtype: str = "float32", threads: int | None = None, target_peak: float | None = None,
           targets: tuple = ()) -> GemmShape:
    return GemmShape(f"square {size}", "A·B", size, size, size, dtype=dtype, threads=threads, target_peak=target_peak,
                     targets=targets)


def gemm_shapes(shape_set: str, quick: bool, dtypes: tuple[str, ...]) -> list[GemmShape]:
    """The GEMM shapes of a set, in every dtype asked for.

    standard  squares 512, 1024, 2048 and mnist-mlp's first layer (128, 784 → 512); --quick:
              the square 1024 and that layer's forward product
    default   the Speed issue's: squares 256, 512, 1024, 2048 and the three products of batch-128
              layers of widths 256, 512 and 1024 (--quick: squares 256 and 1024, widths 256, 1024)
    issue10   float32: squares 512, 1024, 2048, mnist-mlp's X·Wᵀ, dYᵀ·X and its second layer's
              dY·W on 1 thread, wide's X·Wᵀ 256×4096×4096 on 2 threads (--quick: no 2048)"""
    shapes: list[GemmShape] = []
    if shape_set == "standard":
        for dtype in dtypes:
            if quick:
                shapes += [square(1024, dtype), layer_products(128, 784, 512, dtype, name="mnist-mlp")[0]]
            else:
                shapes += [square(s, dtype) for s in (512, 1024, 2048)]
                shapes += layer_products(128, 784, 512, dtype, name="mnist-mlp")
    elif shape_set == "default":  # targets: fastmlp ÷ NumPy's BLAS, and 85 % of the peak at 1 thread
        for dtype in dtypes:
            f64 = dtype == "float64"
            shapes += [square(s, dtype, target_peak=0.85, targets=(("numpy", 0.9 if f64 else 1.0),))
                       for s in ((256, 1024) if quick else (256, 512, 1024, 2048))]
            for width in (256, 1024) if quick else (256, 512, 1024):
                shapes += layer_products(128, width, width, dtype, name=f"layer {width}",
                                         targets=(("numpy", 0.9 if f64 else 1.15),))
    elif shape_set == "issue10":  # targets: ≥ 1× OpenBLAS, ≥ 0.95× MKL, 80 % of the peak on squares ≥ 1024
        targets = (("numpy", 1.0), ("torch", 0.95))
        shapes += [square(s, threads=1, target_peak=0.80 if s >= 1024 else None, targets=targets)
                   for s in ((512, 1024) if quick else (512, 1024, 2048))]
        forward, _, weight_grad = layer_products(128, 784, 512, threads=1, name="mnist-mlp 1", targets=targets)
        shapes += [forward, weight_grad,
                   layer_products(128, 512, 256, threads=1, name="mnist-mlp 2", targets=targets)[1],
                   layer_products(256, 4096, 4096, threads=2, name="wide", targets=targets)[0]]
    else:
        raise ValueError(f"GEMM shape set: expected standard, default or issue10, got {shape_set!r}")
    return shapes


CONFIG_NAMES = (*(c.name for c in TRAIN_CONFIGS), PREDICT.name, "gemm")


def train_config(name: str) -> TrainConfig:
    name = ALIASES.get(name, name)
    for config in TRAIN_CONFIGS:
        if config.name == name:
            return config
    raise ValueError(f"no training configuration {name!r}")


def make_data(config: TrainConfig, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (X, y) for ``steps`` steps of the configuration (or its fixed data set): the
    article's y = x² + noise for the demo, pixels in [0, 1) for mnist-mlp, normal inputs
    elsewhere; one-hot targets of random labels for 10 outputs, else normal targets."""
    rng = np.random.default_rng(1)
    if config.samples is not None:  # the article's data: y = x² + noise on [-2, 2]
        X = np.linspace(-2, 2, config.samples).reshape(-1, 1)
        y = X**2 + np.random.default_rng(42).normal(0, 0.1, X.shape)
        return X.astype(np.float32), y.astype(np.float32)
    n, inputs, outputs = steps * config.batch, config.sizes[0], config.sizes[-1]
    if config.name == "mnist-mlp":
        X = rng.random((n, inputs), dtype=np.float32)
    else:
        X = rng.standard_normal((n, inputs), dtype=np.float32)
    if outputs == 10:
        y = np.zeros((n, outputs), dtype=np.float32)
        y[np.arange(n), rng.integers(0, outputs, n)] = 1
    else:
        y = (0.5 * rng.standard_normal((n, outputs))).astype(np.float32)
    return X, y
