"""What a worker process runs: one implementation of one configuration, timed in blocks.

A job is built once (its model from fastmlp's initial weights, its data), warmed up and
calibrated, then asked for blocks. A block is one sample of the benchmark: a call that trains
a number of steps (training), or calls repeated for about block_seconds (predict, GEMM). It
returns how much work it did (samples, calls or floating-point operations) and how long it
took; the coordinator turns blocks into medians and ratios."""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _configs
from ._configs import GemmShape, PredictConfig, TrainConfig


@dataclass
class Block:
    work: float  # samples (training), calls (predict) or GFLOP (GEMM)
    seconds: float  # the time the work took (predict: calls × the median call's latency)
    loss: float | None = None


class Job:
    """A timed task: ``prepare(block_seconds)`` warms up and calibrates; ``block()`` times one block."""

    unit = "samples/s"

    def prepare(self, block_seconds: float) -> None:
        raise NotImplementedError

    def block(self) -> Block:
        raise NotImplementedError

    def describe(self) -> dict:
        return {}


# ---- training -------------------------------------------------------------------------------------
def _network(config: TrainConfig):
    import fastmlp as fm

    return fm.Network(config.sizes, config.activation, dtype="float32", seed=_configs.SEED, **config.network_options)


def _fastmlp_trainer(config: TrainConfig, X, y) -> tuple[Callable[[int], float], Callable]:
    import fastmlp as fm

    net = _network(config)
    optimizer = fm.SGD(lr=config.lr)

    def run(steps: int) -> float:
        if config.batch is None:
            history = net.fit(X, y, epochs=steps, optimizer=optimizer)
        else:
            n = steps * config.batch
            history = net.fit(X[:n], y[:n], epochs=1, batch_size=config.batch, optimizer=optimizer, shuffle=True)
        return float(history.history["loss"][-1])

    return run, net.predict


def _reference_trainer(config: TrainConfig, X, y):
    from fastmlp import reference

    net = _network(config)
    if config.network_options:  # residual blocks or norms: the layer-by-layer twin, batches in order
        model = reference.LayerNetwork.from_network(net, dtype="float32")
        lr = np.float32(config.lr)

        def run(steps: int) -> float:
            for i in range(steps):
                rows = slice(i * config.batch, (i + 1) * config.batch)
                out = model.forward(X[rows])
                loss = reference.mse_forward(out, y[rows])
                model.backward_output(reference.mse_backward(out, y[rows]))
                model.params -= lr * model.grads
            return float(loss)

        return run, model.predict
    model = reference.Network.from_network(net, dtype="float32")

    def run(steps: int) -> float:
        if config.batch is None:
            return float(model.fit(X, y, epochs=steps, lr=config.lr)[-1])
        n = steps * config.batch
        return float(model.fit(X[:n], y[:n], epochs=1, batch_size=config.batch, lr=config.lr)[-1])

    return run, model.predict


def torch_model(torch, net):
    """The nn.Sequential equivalent of a fastmlp network, layer for layer, from its layer list
    (``net.architecture``), with fastmlp's initial weights: Linear for dense, LayerNorm (same
    eps) for layer norm, the activation, and Residual(block) computing x + block(x)."""
    activations = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "linear": torch.nn.Identity,
                   "sigmoid": torch.nn.Sigmoid}

    class Residual(torch.nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    def build(specs):
        modules = []
        for spec in specs:
            kind = spec["type"]
            if kind == "dense":
                modules.append(torch.nn.Linear(spec["inputs"], spec["outputs"]))
            elif kind == "layer_norm":
                modules.append(torch.nn.LayerNorm(spec["width"], eps=spec["eps"]))
            elif kind == "activation":
                modules.append(activations[spec["name"]]())
            elif kind == "residual":
                modules.append(Residual(torch.nn.Sequential(*build(spec["block"]))))
            else:
                raise ValueError(f"PyTorch has no equivalent here of fastmlp's {kind} layer")
        return modules

    model = torch.nn.Sequential(*build(net.architecture))
    with torch.no_grad():
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        for layer, W, b in zip(linears, net.weights, net.biases):  # W is (out, in) in both
            layer.weight.copy_(torch.from_numpy(np.array(W)))
            layer.bias.copy_(torch.from_numpy(np.array(b)))
    return model


def _torch_trainer(config: TrainConfig, X, y):
    import torch

    model = torch_model(torch, _network(config))
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def step(xb, yb):
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    def run(steps: int) -> float:
        if config.batch is None:
            for _ in range(steps):
                loss = step(X_t, y_t)
        else:
            order = torch.randperm(steps * config.batch)
            for i in range(steps):
                index = order[i * config.batch:(i + 1) * config.batch]
                loss = step(X_t[index], y_t[index])
        return float(loss.item())

    def predict(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return run, predict


def _sklearn_trainer(config: TrainConfig, X, y):
    from sklearn.neural_network import MLPRegressor

    if config.network_options:
        raise NotImplementedError("scikit-learn's MLPRegressor has no residual blocks or norms")
    net = _network(config)
    batch = X.shape[0] if config.batch is None else config.batch
    model = MLPRegressor(hidden_layer_sizes=config.sizes[1:-1], activation=config.activation, solver="sgd",
                         learning_rate="constant", learning_rate_init=config.lr, momentum=0.0,
                         nesterovs_momentum=False, alpha=0.0, batch_size=batch, shuffle=True, max_iter=1,
                         warm_start=True, tol=0.0, n_iter_no_change=10**9, early_stopping=False,
                         random_state=_configs.SEED)
    y_fit = y.ravel() if config.sizes[-1] == 1 else y  # one output: scikit-learn wants y 1-D
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[:batch], y_fit[:batch])  # allocates coefs_; then fastmlp's initial weights
    for coef, intercept, W, b in zip(model.coefs_, model.intercepts_, net.weights, net.biases):
        coef[...] = np.asarray(W).T
        intercept[...] = b

    def run(steps: int) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as intended
            if config.batch is None:
                model.set_params(max_iter=steps)
                model.fit(X, y_fit)
            else:
                n = steps * config.batch
                model.set_params(max_iter=1)
                model.fit(X[:n], y_fit[:n])
        return float(model.loss_)

    return run, model.predict


TRAINERS = {"fastmlp": _fastmlp_trainer, "reference": _reference_trainer, "torch": _torch_trainer,
            "sklearn": _sklearn_trainer}


def trainer(peer: str, config: TrainConfig, X: np.ndarray, y: np.ndarray) -> tuple[Callable[[int], float], Callable]:
    """(run, predict) of ``peer`` on the configuration, from fastmlp's initial weights: ``run(steps)``
    trains that many steps (epochs of the whole data set when config.batch is None) and returns
    the last loss; ``predict(x)`` is the model's prediction."""
    return TRAINERS[peer](config, X, y)


class TrainJob(Job):
    """Training steps: a block is ``steps`` steps, the configuration's count cut down so that a
    block lasts about block_seconds (calibrated on warm-up runs; --quick only shortens blocks)."""

    def __init__(self, config: TrainConfig, peer: str, quick: bool):
        self.config = config
        self.nominal = config.steps
        X, y = _configs.make_data(config, self.nominal)
        self.run, _ = trainer(peer, config, X, y)
        self.steps = 0
        self.unit = config.unit

    def prepare(self, block_seconds: float) -> None:
        probe = max(1, self.nominal // 20)
        start = time.perf_counter()
        self.run(probe)  # the first call: lazy initialisation, thread pools, caches
        first = (time.perf_counter() - start) / probe
        if self.nominal == 1 or first * probe >= block_seconds:
            self.steps = int(min(self.nominal, max(1, block_seconds / first)))
            return
        per_step = first
        for _ in range(3):  # the fastest of three: a probe slowed by a neighbour would cut a block short
            start = time.perf_counter()
            self.run(probe)
            per_step = min(per_step, (time.perf_counter() - start) / probe)
        self.steps = int(min(self.nominal, max(1, block_seconds / per_step)))

    def block(self) -> Block:
        start = time.perf_counter()
        loss = self.run(self.steps)
        return Block(self.steps * self.config.samples_per_step, time.perf_counter() - start, loss)

    def describe(self) -> dict:
        return {"steps": self.steps}


# ---- predict latency -----------------------------------------------------------------------------
class PredictJob(Job):
    """predict on one sample, called again and again for about block_seconds; a block's figure is
    the median call's latency (a call cut by another process does not move it)."""

    unit = "calls/s"

    def __init__(self, config: PredictConfig, peer: str, quick: bool):
        X, y = _configs.make_data(config.network, 1)
        _, self.predict = trainer(peer, config.network, X, y)
        self.x = X[:1].copy()
        self.block_seconds = 0.1
        self.calls = 0

    def prepare(self, block_seconds: float) -> None:
        self.block_seconds = min(block_seconds, 0.3)
        for _ in range(20):
            self.predict(self.x)

    def block(self) -> Block:
        predict, x, clock = self.predict, self.x, time.perf_counter
        latencies = []
        block_start = clock()
        while clock() - block_start < self.block_seconds or len(latencies) < 100:
            start = clock()
            predict(x)
            latencies.append(clock() - start)
        self.calls = len(latencies)
        return Block(len(latencies), len(latencies) * statistics.median(latencies))

    def describe(self) -> dict:
        return {"calls": self.calls}


# ---- GEMM -------------------------------------------------------------------------------------
def _gemm_call(peer: str, shape: GemmShape, a, b, c):
    if peer == "fastmlp":
        from fastmlp import _core

        return lambda: _core.gemm(a, b, c, 1.0, 0.0, shape.trans_a, shape.trans_b)
    if peer == "numpy":  # transposed views: the BLAS gets the transposes as flags, without copies
        a_op, b_op = (a.T if shape.trans_a else a), (b.T if shape.trans_b else b)
        return lambda: np.matmul(a_op, b_op, out=c)
    if peer == "torch":
        import torch

        a_t, b_t, out = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        a_op, b_op = (a_t.T if shape.trans_a else a_t), (b_t.T if shape.trans_b else b_t)
        return lambda: torch.matmul(a_op, b_op, out=out)
    raise NotImplementedError(f"{peer} has no GEMM here")


class GemmJob(Job):
    """One product, called until the block has run block_seconds (at least 3 calls): a block's
    figure is its time per call. Every implementation multiplies the same operands; the first
    product is checked against float64's, and a wrong one fails the job (its cell) untimed."""

    unit = "GFLOP/s"

    def __init__(self, shape: GemmShape, peer: str, quick: bool):
        self.shape = shape
        rng = np.random.default_rng(0)
        a = rng.standard_normal((shape.k, shape.m) if shape.trans_a else (shape.m, shape.k)).astype(shape.dtype)
        b = rng.standard_normal((shape.n, shape.k) if shape.trans_b else (shape.k, shape.n)).astype(shape.dtype)
        self.c = np.zeros((shape.m, shape.n), dtype=shape.dtype)
        self.operands = a, b
        self.call = _gemm_call(peer, shape, a, b, self.c)
        self.block_seconds = 0.15
        self.error = float("nan")

    # A product further than this from float64's (max |difference| / max |product|) is wrong,
    # not rounded: it fails its cell instead of being timed.
    TOLERANCE = {"float32": 1e-4, "float64": 1e-12}

    def prepare(self, block_seconds: float) -> None:
        self.block_seconds = block_seconds
        self.c.fill(np.nan)
        self.call()
        a, b = (x.astype(np.float64) for x in self.operands)
        expected = (a.T if self.shape.trans_a else a) @ (b.T if self.shape.trans_b else b)
        self.error = float(np.max(np.abs(self.c - expected)) / max(float(np.max(np.abs(expected))), 1e-300))
        tolerance = self.TOLERANCE[self.shape.dtype]
        if not self.error <= tolerance:  # NaN too: the product left entries unwritten
            raise ArithmeticError(f"wrong product: max |C − float64 C| / max |C| = {self.error:.3g} "
                                  f"(> {tolerance:g})")
        self.call()

    def block(self) -> Block:
        call, clock = self.call, time.perf_counter
        calls, start = 0, clock()
        while True:
            call()
            calls += 1
            elapsed = clock() - start
            if calls >= 3 and elapsed >= self.block_seconds:
                return Block(calls * self.shape.flop / 1e9, elapsed)

    def describe(self) -> dict:
        return {"relative_error": self.error}


def make_job(group: str, name: str, peer: str, quick: bool, shape: dict | None = None) -> Job:
    """The job for configuration ``name`` of ``group`` run by ``peer``; GEMM jobs get the shape's fields."""
    if group == "train":
        return TrainJob(_configs.train_config(name), peer, quick)
    if group == "predict":
        return PredictJob(_configs.PREDICT, peer, quick)
    if group == "gemm":
        return GemmJob(GemmShape(**shape), peer, quick)
    raise ValueError(f"no configuration group {group!r}")
