"""The article's demo, timed: fastmlp beside its peers, all measured in one run.

The workload is the demo of "Master Backpropagation" (shared/seed): a
[1, 64, 32, 1] network, ReLU hidden layers, linear output, MSE loss, 100 samples
of y = x² + noise, full batch, plain SGD at lr 0.01, 5000 epochs.

    python benchmarks/bench_train.py [--repeats 5] [--epochs 5000] [--peer-epochs N] [--threads N]

Rows:
  fastmlp.Network            float32, float64   net.fit(X, y, epochs, optimizer=fm.SGD(0.01))
  fastmlp.NeuralNetwork      float64            the article's API: nn.train(X, y, epochs, verbose=False)
  fastmlp.reference.Network  float32, float64   the NumPy twin, .fit(...), same initial weights as fastmlp.Network
  article NumPy class        float64            fastmlp.reference.NeuralNetwork (verbatim), seeded as the article
  PyTorch CPU                float32            nn.Sequential(Linear, ReLU, ...), MSELoss, optim.SGD (if torch imports)

Each row starts every repeat from the same initial weights; its final loss is
printed so that agreeing rows can be seen to compute the same thing. Repeats
run round-robin over the rows, so machine noise falls on all of them alike;
the times are medians. A ratio is fastmlp's speed ÷ the peer's speed (per epoch),
against the fastmlp row of the same dtype and API.

On machines where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (they slow a
current NumPy down), unset them in the benchmark command only:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import fastmlp as fm
from fastmlp import reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import blas_description, cpu_model  # noqa: E402

LAYER_SIZES = [1, 64, 32, 1]
LEARNING_RATE = 0.01
SEED = 42


@dataclass
class Row:
    name: str
    dtype: str
    epochs: int
    run: Callable[[], float]  # trains from the row's initial weights; returns the final loss
    baseline: str | None = None  # the fastmlp row this peer is compared with
    times: list[float] = field(default_factory=list)
    final_loss: float = float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def per_epoch(self) -> float:
        return self.median / self.epochs


def article_data():
    """The article's data, drawn exactly as the article draws it (seed 42)."""
    np.random.seed(SEED)
    X = np.linspace(-2, 2, 100).reshape(-1, 1)
    y = X**2 + np.random.normal(0, 0.1, X.shape)
    return X, y


def make_rows(X, y, epochs: int, peer_epochs: int, threads: int) -> tuple[list[Row], str]:
    rows: list[Row] = []

    # fastmlp.Network, float32 and float64, from the same seeded initial weights.
    initial = fm.Network(LAYER_SIZES, "relu", dtype="float64", seed=0)
    for dtype in ("float32", "float64"):
        X_t, y_t = X.astype(dtype), y.astype(dtype)

        def run_network(dtype=dtype, X_t=X_t, y_t=y_t):
            net = initial.astype(dtype)
            history = net.fit(X_t, y_t, epochs=epochs, optimizer=fm.SGD(lr=LEARNING_RATE))
            return history.history["loss"][-1]

        rows.append(Row("fastmlp.Network.fit", dtype, epochs, run_network))

    def run_neural_network():
        np.random.seed(SEED)
        article_data()  # advance the stream as the article does before its weights
        nn = fm.NeuralNetwork(layer_sizes=LAYER_SIZES, learning_rate=LEARNING_RATE, activation="relu")
        return nn.train(X, y, epochs=epochs, verbose=False)[-1]

    rows.append(Row("fastmlp.NeuralNetwork.train", "float64", epochs, run_neural_network))

    # The NumPy twin, on the same initial weights as fastmlp.Network.
    for dtype in ("float32", "float64"):
        X_t, y_t = X.astype(dtype), y.astype(dtype)

        def run_reference(dtype=dtype, X_t=X_t, y_t=y_t):
            net = reference.Network.from_network(initial, dtype=dtype)
            return net.fit(X_t, y_t, epochs=peer_epochs, lr=LEARNING_RATE)[-1]

        rows.append(Row("fastmlp.reference.Network.fit", dtype, peer_epochs, run_reference,
                        baseline=f"fastmlp.Network.fit {dtype}"))

    # The article's own class: seeded as the article, so its weights are NeuralNetwork's.
    def run_article():
        np.random.seed(SEED)
        article_data()
        nn = fm.reference.NeuralNetwork(layer_sizes=LAYER_SIZES, learning_rate=LEARNING_RATE, activation="relu")
        return nn.train(X, y, epochs=peer_epochs, verbose=False)[-1]

    rows.append(Row("article NumPy class", "float64", peer_epochs, run_article,
                    baseline="fastmlp.NeuralNetwork.train float64"))

    try:
        import torch
    except ImportError as error:
        torch_note = f"PyTorch: skipped (import torch failed: {error})"
    else:
        torch.set_num_threads(threads)
        torch_note = f"PyTorch: {torch.__version__}, {torch.get_num_threads()} threads"
        X_t, y_t = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
        start32 = initial.astype("float32")

        def run_torch():
            model = torch.nn.Sequential(
                torch.nn.Linear(1, 64), torch.nn.ReLU(),
                torch.nn.Linear(64, 32), torch.nn.ReLU(),
                torch.nn.Linear(32, 1),
            )
            with torch.no_grad():  # the same initial weights (W is (out, in) in both)
                for layer, W, b in zip(model[::2], start32.weights, start32.biases):
                    layer.weight.copy_(torch.from_numpy(np.array(W)))
                    layer.bias.copy_(torch.from_numpy(np.array(b)))
            criterion = torch.nn.MSELoss()
            optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
            losses = []
            for _ in range(epochs):
                optimizer.zero_grad()
                loss = criterion(model(X_t), y_t)
                losses.append(loss.item())
                loss.backward()
                optimizer.step()
            return losses[-1]

        rows.append(Row("PyTorch CPU (nn.Sequential, optim.SGD)", "float32", epochs, run_torch,
                        baseline="fastmlp.Network.fit float32"))
    return rows, torch_note


def format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row; the median is shown (default 5)")
    parser.add_argument("--epochs", type=int, default=5000, help="epochs for fastmlp and PyTorch (default 5000)")
    parser.add_argument("--peer-epochs", type=int, default=None,
                        help="epochs for the NumPy peers (reference, article class); default: --epochs")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastmlp and PyTorch (default: fastmlp.get_num_threads())")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="sleep between runs, so idle threads of the previous row (PyTorch's OpenMP, "
                             "OpenBLAS) stop spinning on the other core (default 0.1 s)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1 or (args.peer_epochs is not None and args.peer_epochs < 1):
        parser.error("--repeats, --epochs and --peer-epochs must be positive")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    if args.pause < 0:
        parser.error("--pause must be >= 0")
    peer_epochs = args.epochs if args.peer_epochs is None else args.peer_epochs
    threads = fm.get_num_threads() if args.threads is None else args.threads
    fm.set_num_threads(threads)

    X, y = article_data()
    rows, torch_note = make_rows(X, y, args.epochs, peer_epochs, threads)

    print("Training benchmark: the article's demo ([1, 64, 32, 1] ReLU, MSE, 100 samples, full batch, "
          f"SGD lr {LEARNING_RATE})")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores ({usable} usable), {platform.machine()}")
    print(f"versions: fastmlp {fm.__version__}, Python {platform.python_version()}, NumPy {np.__version__}")
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    print(f"threads:  fastmlp {fm.get_num_threads()}; NumPy's BLAS: {blas_description(threadpoolctl)}")
    print(f"          {torch_note}")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                      "OPENBLAS_L2_SIZE", "OMP_PROC_BIND", "OMP_PLACES") if k in os.environ}
    if env:
        print("env:      " + " ".join(f"{k}={v}" for k, v in env.items()))
    if "OPENBLAS_CORETYPE" in env or "OPENBLAS_L2_SIZE" in env:
        print("note:     OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and slow NumPy's BLAS down; for a fair "
              "comparison run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train.py")
    print(f"method:   median of {args.repeats} run{'s' if args.repeats != 1 else ''} each, round-robin over the rows, after one warm-up run; "
          f"{args.pause:g} s pause between runs")
    if peer_epochs != args.epochs:
        print(f"note:     the NumPy peers ran {peer_epochs} epochs, the others {args.epochs}; "
              "ratios compare time per epoch")
    print()

    for row in rows:  # warm-up: caches, thread pools, lazy imports
        row.run()
    for _ in range(args.repeats):
        for row in rows:
            time.sleep(args.pause)
            start = time.perf_counter()
            row.final_loss = row.run()
            row.times.append(time.perf_counter() - start)

    by_key = {f"{row.name} {row.dtype}": row for row in rows}
    header = ("implementation", "dtype", "epochs", "median time", "µs / epoch", "final loss",
              "fastmlp speed ÷ peer")
    table = []
    for row in rows:
        if row.baseline is None:
            ratio = "—"
        else:
            base = by_key[row.baseline]
            ratio = f"{row.per_epoch / base.per_epoch:.2f}× ({base.name} {base.dtype})"
        table.append((row.name, row.dtype, str(row.epochs), format_time(row.median),
                      f"{row.per_epoch * 1e6:.1f}", f"{row.final_loss:.6f}", ratio))
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in table:
        print(line(cells))
    print()
    print("Ratios above 1: fastmlp is faster. Rows on the same initial weights and the same loss scaling "
          "agree in their final loss\n(fastmlp.Network, its reference and PyTorch use MSE's gradient "
          "2(ŷ−y)/n; the article's class steps by (ŷ−y)/n, as NeuralNetwork does).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
