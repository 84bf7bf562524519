"""Training and inference speed on the Speed issue's configurations, fastmlp beside its peers.

    python benchmarks/bench_configs.py [--quick] [--threads 2] [--repeats 5] [--only NAME,...]

Configurations (float32 everywhere, MSE loss, plain SGD):
  seed-demo     [1, 64, 32, 1] relu, the article's 100 samples, full batch, 5000 epochs, lr 0.01
  mnist-mlp     [784, 512, 256, 10] relu, batch 128, lr 0.01 (synthetic: pixels in [0, 1),
                one-hot targets of random labels; MSE on one-hot targets for every
                implementation, since fastmlp has no cross-entropy yet)
  wide          [1024, 4096, 4096, 1024] relu, batch 256, lr 0.001 (synthetic normal data)
  deep-narrow   256 → 16 hidden layers of 256 tanh → 10, batch 64, lr 0.01 (one-hot targets)
  deep-residual 256 → 16 residual blocks of 256 (dense → layer norm → relu, plus the skip) → the final
                layer norm → 10 (fm.Network(..., residual=True, norm="layer")), batch 64, lr 0.01
                (one-hot targets); no scikit-learn row, and the summary's only target is PyTorch's
  tiny-batch    [64, 128, 128, 1] relu, batch 1 (online learning), lr 0.001
  predict       latency of predict on one sample of mnist-mlp (µs, median over all calls)

Implementations:
  fastmlp                    fm.Network(dtype="float32").fit(X, y, epochs, batch_size, fm.SGD(lr), shuffle=True)
  fastmlp.reference          the NumPy twin, reference.Network.fit(X, y, epochs, batch_size, lr) (no shuffling);
                             deep-residual: reference.LayerNetwork's forward and backward_output, the MSE twin
                             and params -= lr · grads, batches in order
  PyTorch                    nn.Sequential(Linear, act, ...), nn.MSELoss, optim.SGD; per-epoch randperm and
                             gathered batches; loss.item() once per block (skipped if torch does not import).
                             deep-residual: nn.Sequential(Residual(nn.Sequential(Linear, LayerNorm, ReLU)) × 16,
                             LayerNorm, Linear), Residual(block)(x) = x + block(x): built from fastmlp's layer
                             list (net.architecture), so it is the same network whatever the shorthand expands to
  scikit-learn               MLPRegressor(solver="sgd", momentum=0, alpha=0, learning_rate_init=lr,
                             batch_size, warm_start=True, no early stop); each block is one fit() of
                             max_iter epochs (skipped if sklearn is not installed). Its squared-error
                             loss is ½·mean over samples of the sum over outputs, so its steps differ
                             from MSE's by a constant factor; the arithmetic per step is the same.
All four start from fastmlp's initial weights (He-normal, seed 0). A configuration an
implementation cannot express (scikit-learn has no residual blocks or layer norm; a fastmlp
build before issue 11 has neither) is skipped with a note.

Method. Each implementation trains one model per configuration, continuing across
blocks. A block is one call that runs a fixed number of training steps (epochs of
full batch for seed-demo, mini-batches otherwise); the step count is the
configuration's nominal one, cut down for a slow implementation so that a block lasts
about --block-seconds (calibrated on a warm-up run). Blocks run round-robin over the
implementations, --repeats rounds, with a pause between blocks (idle OpenMP/OpenBLAS
threads spin for a while after each call, and would slow the next block down). The
figure is the median over the rounds of samples per second (steps per second for
tiny-batch, whose steps are single samples); ratios are fastmlp's speed ÷ the peer's.

Run it with NumPy's BLAS unhindered:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_configs.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import fastmlp as fm
from fastmlp import _core, reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import OtherLoad, blas_description, cpu_model, gemm_config_description, print_table  # noqa: E402

SEED = 0


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    activation: str
    batch: int | None  # None: full batch
    lr: float
    steps: int  # nominal steps per block
    steps_quick: int
    samples: int | None = None  # fixed dataset size (seed-demo); else steps × batch
    targets: tuple[tuple[str, float], ...] = ()  # (peer, fastmlp ÷ peer at least)
    residual: bool = False  # every hidden block of equal widths computes in + block(in)
    norm: str | None = None  # "layer": dense → layer norm → activation in each hidden block

    @property
    def network_options(self) -> dict:
        """fm.Network's keyword arguments beyond sizes and activation (none for the plain stacks,
        so those configurations still run on builds before issue 11)."""
        options = {}
        if self.residual:
            options["residual"] = True
        if self.norm is not None:
            options["norm"] = self.norm
        return options

    @property
    def unit(self) -> str:
        return "steps/s" if self.batch == 1 else "samples/s"


COMMON_TARGETS = (("fastmlp.reference", 1.25), ("scikit-learn", 1.0))
CONFIGS = (
    Config("seed-demo", (1, 64, 32, 1), "relu", None, 0.01, 5000, 500, samples=100,
           targets=(("PyTorch", 20.0), *COMMON_TARGETS)),
    Config("mnist-mlp", (784, 512, 256, 10), "relu", 128, 0.01, 200, 30,
           targets=(("PyTorch", 1.5), *COMMON_TARGETS)),
    Config("wide", (1024, 4096, 4096, 1024), "relu", 256, 0.001, 5, 1,
           targets=(("PyTorch", 1.3), *COMMON_TARGETS)),
    Config("deep-narrow", (256, *([256] * 16), 10), "tanh", 64, 0.01, 300, 40,
           targets=(("PyTorch", 2.0), *COMMON_TARGETS)),
    Config("deep-residual", (256, *([256] * 16), 10), "relu", 64, 0.01, 300, 40,
           targets=(("PyTorch", 1.5),), residual=True, norm="layer"),
    Config("tiny-batch", (64, 128, 128, 1), "relu", 1, 0.001, 20000, 2000,
           targets=(("PyTorch", 20.0), *COMMON_TARGETS)),
)
PREDICT_CONFIG = CONFIGS[1]  # mnist-mlp
PREDICT_TARGET_US = 25.0
PREDICT_TARGET_TORCH = 2.0
IMPLEMENTATIONS = ("fastmlp", "fastmlp.reference", "PyTorch", "scikit-learn")


# ---- data -----------------------------------------------------------------------------------
def make_data(config: Config, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (X, y) for `steps` steps of the configuration (or its fixed sample count)."""
    rng = np.random.default_rng(1)
    if config.name == "seed-demo":  # the article's data: y = x² + noise on [-2, 2]
        X = np.linspace(-2, 2, config.samples).reshape(-1, 1)
        y = X**2 + np.random.default_rng(42).normal(0, 0.1, X.shape)
        return X.astype(np.float32), y.astype(np.float32)
    n, inputs, outputs = steps * config.batch, config.sizes[0], config.sizes[-1]
    if config.name == "mnist-mlp":
        X = rng.random((n, inputs), dtype=np.float32)
    else:
        X = rng.standard_normal((n, inputs), dtype=np.float32)
    if outputs == 10:  # one-hot targets of random labels
        y = np.zeros((n, outputs), dtype=np.float32)
        y[np.arange(n), rng.integers(0, outputs, n)] = 1
    else:
        y = (0.5 * rng.standard_normal((n, outputs))).astype(np.float32)
    return X, y


# ---- implementations: each returns run(steps) -> loss, and predict(x) ---------------------------
@dataclass
class Runner:
    run: Callable[[int], float]
    predict: Callable[[np.ndarray], object]
    note: str = ""


def fastmlp_runner(config, net, X, y) -> Runner:
    optimizer = fm.SGD(lr=config.lr)

    def run(steps):
        if config.batch is None:
            history = net.fit(X, y, epochs=steps, optimizer=optimizer)
        else:
            n = steps * config.batch
            history = net.fit(X[:n], y[:n], epochs=1, batch_size=config.batch, optimizer=optimizer, shuffle=True)
        return history.history["loss"][-1]

    return Runner(run, net.predict)


def reference_runner(config, net, X, y) -> Runner:
    model = reference.Network.from_network(net, dtype="float32")

    def run(steps):
        if config.batch is None:
            return model.fit(X, y, epochs=steps, lr=config.lr)[-1]
        n = steps * config.batch
        return model.fit(X[:n], y[:n], epochs=1, batch_size=config.batch, lr=config.lr)[-1]

    return Runner(run, model.predict)


def torch_model(torch, config, net):
    """The nn.Sequential equivalent of fastmlp's network, layer for layer: from its layer list
    (``net.architecture``; a plain stack's is spelled out from the sizes on builds before issue 11).
    Linear for dense, LayerNorm (same eps; gain 1 and bias 0 as fastmlp's start) for layer norm,
    the activation, and Residual(nn.Sequential(...)) computing x + block(x) for a residual block."""
    activations = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "linear": torch.nn.Identity}

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
                raise ValueError(f"{config.name}: this benchmark has no PyTorch equivalent of a {kind} layer")
        return modules

    if hasattr(net, "architecture"):
        specs = net.architecture
    else:
        specs = []
        for i, (fan_in, fan_out) in enumerate(zip(config.sizes[:-1], config.sizes[1:])):
            specs.append({"type": "dense", "inputs": fan_in, "outputs": fan_out})
            if i < len(config.sizes) - 2:
                specs.append({"type": "activation", "name": config.activation})
    return torch.nn.Sequential(*build(specs))


def torch_runner(torch, config, net, X, y) -> Runner:
    model = torch_model(torch, config, net)
    with torch.no_grad():  # fastmlp's initial weights (W is (out, in) in both)
        for layer, W, b in zip([m for m in model.modules() if isinstance(m, torch.nn.Linear)], net.weights,
                               net.biases):
            layer.weight.copy_(torch.from_numpy(np.array(W)))
            layer.bias.copy_(torch.from_numpy(np.array(b)))
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def step(xb, yb):
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    def run(steps):
        if config.batch is None:
            for _ in range(steps):
                loss = step(X_t, y_t)
        else:
            order = torch.randperm(steps * config.batch)
            for i in range(steps):
                index = order[i * config.batch:(i + 1) * config.batch]
                loss = step(X_t[index], y_t[index])
        return loss.item()

    def predict(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return Runner(run, predict)


def layer_reference_runner(config, net, X, y) -> Runner:
    """The NumPy twin of a network with residual blocks or norms: reference.LayerNetwork's forward
    and backward, MSE's twin and a plain SGD step on the flat buffer, batches in order."""
    model = reference.LayerNetwork.from_network(net, dtype="float32")

    def run(steps):
        for i in range(steps):
            xb, yb = X[i * config.batch:(i + 1) * config.batch], y[i * config.batch:(i + 1) * config.batch]
            out = model.forward(xb)
            loss = reference.mse_forward(out, yb)
            model.backward_output(reference.mse_backward(out, yb))
            model.params -= np.float32(config.lr) * model.grads
        return loss

    return Runner(run, model.predict)


def sklearn_runner(MLPRegressor, config, net, X, y) -> Runner:
    batch = X.shape[0] if config.batch is None else config.batch
    model = MLPRegressor(hidden_layer_sizes=config.sizes[1:-1], activation=config.activation, solver="sgd",
                         learning_rate="constant", learning_rate_init=config.lr, momentum=0.0,
                         nesterovs_momentum=False, alpha=0.0, batch_size=batch, shuffle=True, max_iter=1,
                         warm_start=True, tol=0.0, n_iter_no_change=10**9, early_stopping=False, random_state=SEED)
    ravel = config.sizes[-1] == 1  # one output: sklearn wants y 1-D
    y_fit = y.ravel() if ravel else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[:batch], y_fit[:batch])  # allocates coefs_; then fastmlp's initial weights
    for coef, intercept, W, b in zip(model.coefs_, model.intercepts_, net.weights, net.biases):
        coef[...] = np.asarray(W).T
        intercept[...] = b

    def run(steps):
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

    return Runner(run, model.predict)


# ---- timing ---------------------------------------------------------------------------------
@dataclass
class Row:
    config: Config
    impl: str
    runner: Runner
    steps: int = 0
    seconds: list[float] = field(default_factory=list)  # per block
    loss: float = float("nan")
    latencies: list[float] = field(default_factory=list)  # predict rows: seconds per call

    @property
    def samples_per_step(self) -> int:
        return self.config.samples if self.config.batch is None else self.config.batch

    @property
    def rate(self) -> float:
        """Samples (or steps, at batch 1) per second: the median block."""
        return self.steps * self.samples_per_step / statistics.median(self.seconds)

    @property
    def us_per_step(self) -> float:
        return statistics.median(self.seconds) / self.steps * 1e6

    @property
    def latency_us(self) -> float:
        return statistics.median(self.latencies) * 1e6


class Threads:
    """Sets fastmlp's, PyTorch's and NumPy's BLAS threads (BLAS through threadpoolctl)."""

    def __init__(self, count: int, torch, threadpoolctl):
        self.count = count
        fm.set_num_threads(count)
        if torch is not None:
            torch.set_num_threads(count)
        self.limiter = threadpoolctl.threadpool_limits(limits=count, user_api="blas") if threadpoolctl else None


def calibrate(row: Row, nominal: int, block_seconds: float) -> None:
    """Warm-up runs; then the step count for a block of about block_seconds (at most nominal)."""
    probe = max(1, nominal // 20)
    row.runner.run(probe)  # first call: lazy initialisation, thread pools, caches
    if nominal == 1:
        row.steps = 1
        return
    per_step = float("inf")
    for _ in range(3):  # the fastest of three: a probe slowed by a neighbour would cut the block too short
        start = time.perf_counter()
        row.runner.run(probe)
        per_step = min(per_step, (time.perf_counter() - start) / probe)
    row.steps = int(min(nominal, max(1, block_seconds / per_step)))


def time_block(row: Row) -> None:
    start = time.perf_counter()
    row.loss = row.runner.run(row.steps)
    row.seconds.append(time.perf_counter() - start)


def time_predict_block(row: Row, x: np.ndarray, block_seconds: float) -> None:
    predict, clock = row.runner.predict, time.perf_counter
    for _ in range(20):
        predict(x)
    block_start = clock()
    while clock() - block_start < block_seconds or len(row.latencies) % 1000 != 0:
        start = clock()
        predict(x)
        row.latencies.append(clock() - start)


# ---- reporting ------------------------------------------------------------------------------






def format_rate(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e4 else f"{value:.0f}"


def load_peers(skip: set[str]):
    """(torch or None, MLPRegressor or None, threadpoolctl or None, notes)."""
    notes = []
    torch = MLPRegressor = threadpoolctl = None
    if "PyTorch" not in skip:
        try:
            import torch
        except ImportError as error:
            notes.append(f"PyTorch: skipped (import torch failed: {error})")
        else:
            notes.append(f"PyTorch: {torch.__version__}")
    if "scikit-learn" not in skip:
        try:
            import sklearn
            from sklearn.neural_network import MLPRegressor
        except ImportError as error:
            notes.append(f"scikit-learn: skipped ({error})")
        else:
            notes.append(f"scikit-learn: {sklearn.__version__}")
    try:
        import threadpoolctl
    except ImportError:
        notes.append("threadpoolctl: not installed, NumPy's BLAS keeps its default threads")
    return torch, MLPRegressor, threadpoolctl, notes


def build_rows(config: Config, nominal: int, torch, MLPRegressor, skip, notes: list[str]) -> list[Row]:
    """The configuration's rows, fastmlp's first; [] when this fastmlp build cannot express it.
    An implementation that cannot express it is left out and named in ``notes``."""
    X, y = make_data(config, nominal)
    try:
        net = fm.Network(config.sizes, config.activation, dtype="float32", seed=SEED, **config.network_options)
    except TypeError as error:  # a build before issue 11: no residual= / norm=
        notes.append(f"{config.name}: skipped, this fastmlp cannot build it ({error})")
        return []
    rows = [Row(config, "fastmlp", fastmlp_runner(config, net.copy(), X, y))]
    if "fastmlp.reference" not in skip:
        try:
            runner = layer_reference_runner if config.network_options else reference_runner
            rows.append(Row(config, "fastmlp.reference", runner(config, net, X, y)))
        except (TypeError, ValueError, NotImplementedError) as error:
            notes.append(f"{config.name}: fastmlp.reference left out ({error})")
    if torch is not None:
        rows.append(Row(config, "PyTorch", torch_runner(torch, config, net, X, y)))
    if MLPRegressor is not None:
        if config.network_options:
            notes.append(f"{config.name}: scikit-learn left out (MLPRegressor has no residual blocks or norms)")
        else:
            rows.append(Row(config, "scikit-learn", sklearn_runner(MLPRegressor, config, net, X, y)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds: about a minute in all")
    parser.add_argument("--threads", type=int, default=2, help="threads for every implementation (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds; medians are shown (default 5, 3 with --quick)")
    parser.add_argument("--block-seconds", type=float, default=None,
                        help="target length of a slow implementation's block (default 1.0 s, 0.25 s with --quick)")
    parser.add_argument("--pause", type=float, default=0.1, help="sleep between blocks (default 0.1 s)")
    parser.add_argument("--only", default=None,
                        help="comma-separated configurations (" + ", ".join(c.name for c in CONFIGS) + ", predict)")
    parser.add_argument("--skip", default="", help="comma-separated implementations to leave out: "
                        "fastmlp.reference, PyTorch, scikit-learn")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    block_seconds = args.block_seconds if args.block_seconds is not None else (0.25 if args.quick else 1.0)
    names = [c.name for c in CONFIGS] + ["predict"]
    only = names if args.only is None else [s.strip() for s in args.only.split(",")]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if repeats < 1 or args.threads < 1 or not set(only) <= set(names) or not skip <= set(IMPLEMENTATIONS[1:]):
        parser.error(f"--repeats/--threads must be positive, --only from {names}, --skip from {IMPLEMENTATIONS[1:]}")

    torch, MLPRegressor, threadpoolctl, notes = load_peers(skip)
    threads = Threads(args.threads, torch, threadpoolctl)  # noqa: F841  (holds the BLAS limit)
    wall_start = time.perf_counter()

    print("Configurations benchmark: a full training step (forward, MSE backward, SGD update), float32")
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"versions: fastmlp {fm.__version__} (GEMM kernel {fm.kernels.gemm_kernel()}), Python "
          f"{platform.python_version()}, NumPy {np.__version__}, BLAS {blas_description(threadpoolctl)}")
    print(f"GEMM:     {gemm_config_description(_core)}")
    for note in notes:
        print(f"          {note}")
    print(f"threads:  {args.threads} for fastmlp, NumPy's BLAS (the reference, scikit-learn) and PyTorch")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                      "OPENBLAS_L2_SIZE", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY",
                                      "FASTMLP_GEMM_KERNEL", "FASTMLP_GEMM_CONFIG")
           if k in os.environ}
    if env:
        print("env:      " + " ".join(f"{k}={v}" for k, v in env.items()))
    print(f"method:   median of {repeats} blocks per row, round-robin over the implementations, "
          f"{args.pause:g} s pause between blocks; a slow row's block is cut to ≈ {block_seconds:g} s")
    print()

    total_load, loads = OtherLoad(), {}
    train_rows: list[list[Row]] = []
    left_out: list[str] = []  # configurations or implementations that could not be built
    for config in CONFIGS:
        if config.name not in only:
            continue
        nominal = config.steps_quick if args.quick else config.steps
        rows = build_rows(config, nominal, torch, MLPRegressor, skip, left_out)
        if not rows:
            continue
        load = OtherLoad()
        for row in rows:
            calibrate(row, nominal, block_seconds)
            time.sleep(args.pause)
        for _ in range(repeats):
            for row in rows:
                time_block(row)
                time.sleep(args.pause)
        loads[config.name] = load.share()
        train_rows.append(rows)

    predict_rows: list[Row] = []
    if "predict" in only:
        config = PREDICT_CONFIG
        predict_rows = build_rows(config, 1, torch, MLPRegressor, skip, left_out)
        x = make_data(config, 1)[0][:1].copy()
        load = OtherLoad()
        for _ in range(repeats):
            for row in predict_rows:
                time_predict_block(row, x, min(block_seconds, 0.3))
                time.sleep(args.pause)
        loads["predict"] = load.share()

    # ---- the detailed table ----
    header = ("configuration", "implementation", "steps / block", "µs / step", "speed", "fastmlp ÷ this", "target",
              "last loss")
    table, verdicts = [], []
    for rows in train_rows:
        fast = rows[0]
        targets = dict(fast.config.targets)
        for row in rows:
            ratio = fast.rate / row.rate
            target = targets.get(row.impl)
            mark = "—" if target is None else f"≥ {target:g}× {'met' if ratio >= target else 'MISSED'}"
            if target is not None:
                verdicts.append((fast.config.name, row.impl, ratio, target))
            table.append((fast.config.name, row.impl, str(row.steps), f"{row.us_per_step:.1f}",
                          f"{format_rate(row.rate)} {fast.config.unit}", "—" if row is fast else f"{ratio:.2f}×",
                          mark if row is not fast else "—", f"{row.loss:.4g}"))
    if predict_rows:
        fast = predict_rows[0]
        for row in predict_rows:
            ratio = row.latency_us / fast.latency_us
            if row is fast:
                mark = f"≤ {PREDICT_TARGET_US:g} µs {'met' if fast.latency_us <= PREDICT_TARGET_US else 'MISSED'}"
            elif row.impl == "PyTorch":
                mark = f"≥ {PREDICT_TARGET_TORCH:g}× {'met' if ratio >= PREDICT_TARGET_TORCH else 'MISSED'}"
                verdicts.append(("predict", row.impl, ratio, PREDICT_TARGET_TORCH))
            else:
                mark = "—"
            table.append(("predict (1 sample, mnist-mlp)", row.impl, f"{len(row.latencies)} calls",
                          f"{row.latency_us:.1f}", f"{1e6 / row.latency_us / 1e3:.1f}k calls/s",
                          "—" if row is fast else f"{ratio:.2f}×", mark, "—"))
    if table:
        print_table(header, table)
        print()

    # ---- the summary: one line per configuration ----
    peers = [p for p in IMPLEMENTATIONS[1:] if any(r.impl == p for rows in train_rows for r in rows)
             or any(r.impl == p for r in predict_rows)]
    header = ("configuration", "fastmlp", *[f"÷ {p}" for p in peers])
    summary = []
    for rows in train_rows:
        fast = rows[0]
        by_impl = {r.impl: r for r in rows}
        targets = dict(fast.config.targets)
        cells = []
        for p in peers:
            if p not in by_impl:
                cells.append("skipped")
                continue
            ratio = fast.rate / by_impl[p].rate
            cells.append(f"{ratio:.2f}×" + (f" (≥ {targets[p]:g} {'✓' if ratio >= targets[p] else '✗'})"
                                             if p in targets else ""))
        summary.append((fast.config.name, f"{format_rate(fast.rate)} {fast.config.unit}", *cells))
    if predict_rows:
        fast = predict_rows[0]
        by_impl = {r.impl: r for r in predict_rows}
        cells = []
        for p in peers:
            if p not in by_impl:
                cells.append("skipped")
                continue
            ratio = by_impl[p].latency_us / fast.latency_us
            cells.append(f"{ratio:.2f}×" + (f" (≥ {PREDICT_TARGET_TORCH:g} {'✓' if ratio >= PREDICT_TARGET_TORCH else '✗'})"
                                             if p == "PyTorch" else ""))
        summary.append(("predict, 1 sample", f"{fast.latency_us:.1f} µs (≤ {PREDICT_TARGET_US:g} "
                        f"{'✓' if fast.latency_us <= PREDICT_TARGET_US else '✗'})", *cells))
    if summary:
        print_table(header, summary)
        print()
    for note in left_out:
        print(f"left out: {note}")
    missed = [v for v in verdicts if v[2] < v[3]]
    print(f"load average after: {os.getloadavg()[0]:.2f}; wall time {time.perf_counter() - wall_start:.0f} s; "
          f"other processes used {total_load.describe()} during the run")
    if any(v is not None for v in loads.values()):
        print("  by configuration: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in loads.items() if v is not None)
              + " (above ~5 %, 2-thread figures of that configuration are suspect)")
    print(f"targets (fastmlp ÷ peer, {args.threads} threads): met {len(verdicts) - len(missed)} of {len(verdicts)}"
          + (f"; predict latency ≤ {PREDICT_TARGET_US:g} µs: {'met' if predict_rows[0].latency_us <= PREDICT_TARGET_US else 'MISSED'}"
             if predict_rows else ""))
    for name, impl, ratio, target in missed:
        print(f"  missed: {name} vs {impl}: {ratio:.2f}× (target {target:g}×, {100 * (1 - ratio / target):.0f} % short)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
