"""The layers between dense ones (layer norm, batch norm, dropout, the residual add):
fastmlp's kernels beside their NumPy twins and PyTorch, µs per call.

    python benchmarks/bench_layers.py [--rounds 5] [--block-seconds 0.05]

Rows: each kernel's forward, and forward + backward, float32, on a (64, 256) batch (the
deep benchmark's shape) and a (256, 1024) one (the checkpoint benchmark's), at 1 and 2
threads. fastmlp calls fm.kernels (which allocate their outputs, as torch's functional
calls do); torch runs torch.nn.functional (forward + backward through autograd, one
backward call) with torch.set_num_threads matching; the NumPy twin is
fastmlp.reference.layers. Dropout's row includes drawing the mask.

Method: each row is a block of calls over at least --block-seconds; its time per call
is one sample; rows run round-robin over --rounds rounds; the figures are medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

import fastmlp as fm
from fastmlp import kernels
from fastmlp.reference import layers as twin

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import OtherLoad, cpu_model, print_table, time_block  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch columns say so
    torch = None

SHAPES = ((64, 256), (256, 1024))
THREADS = (1, 2)
P = 0.1


def _cases(shape):
    """{row name: {"fastmlp": f, "numpy": f, "torch": f or None}}."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gain = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    mean, var = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
    generator = fm.reference.Rng(0)
    mask = kernels.dropout_mask(shape, P, 0)

    def ln_both():
        y, xhat, rstd = kernels.layer_norm(x, gain, bias)
        return kernels.layer_norm_backward(dy, xhat, rstd, gain)

    def ln_both_twin():
        y, xhat, rstd = twin.layer_norm(x, gain, bias)
        return twin.layer_norm_backward(dy, xhat, rstd, gain)

    def bn_both():
        y, xhat, rstd = kernels.batch_norm(x, gain, bias, mean, var)
        return kernels.batch_norm_backward(dy, xhat, rstd, gain)

    def bn_both_twin():
        y, xhat, rstd = twin.batch_norm(x, gain, bias, mean.copy(), var.copy())
        return twin.batch_norm_backward(dy, xhat, rstd, gain)

    cases = {
        "layer norm forward": {"fastmlp": lambda: kernels.layer_norm(x, gain, bias),
                               "numpy": lambda: twin.layer_norm(x, gain, bias)},
        "layer norm forward + backward": {"fastmlp": ln_both, "numpy": ln_both_twin},
        "batch norm forward (training)": {"fastmlp": lambda: kernels.batch_norm(x, gain, bias, mean, var),
                                          "numpy": lambda: twin.batch_norm(x, gain, bias, mean.copy(), var.copy())},
        "batch norm forward + backward": {"fastmlp": bn_both, "numpy": bn_both_twin},
        "batch norm eval": {"fastmlp": lambda: kernels.batch_norm(x, gain, bias, mean, var, training=False),
                            "numpy": lambda: twin.batch_norm(x, gain, bias, mean, var, training=False)},
        "dropout (mask + apply)": {"fastmlp": lambda: kernels.dropout(x, kernels.dropout_mask(shape, P, generator), P),
                                   "numpy": lambda: twin.dropout(x, twin.dropout_mask(shape, P, 0), P)},
        "dropout backward": {"fastmlp": lambda: kernels.dropout_backward(dy, mask, P),
                             "numpy": lambda: twin.dropout_backward(dy, mask, P)},
        "residual add": {"fastmlp": lambda: kernels.residual_add(x, dy), "numpy": lambda: twin.residual_add(x, dy)},
    }
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        tdy = torch.from_numpy(dy)
        tg = torch.from_numpy(gain).requires_grad_(True)
        tb = torch.from_numpy(bias).requires_grad_(True)
        tm, tv = torch.from_numpy(mean.copy()), torch.from_numpy(var.copy())
        tmask = torch.from_numpy(mask.astype(np.float32))

        def backward(y):
            y.backward(tdy)
            tx.grad = tg.grad = tb.grad = None

        with torch.no_grad():
            cases["layer norm forward"]["torch"] = lambda: F.layer_norm(tx, (shape[1],), tg, tb)
            cases["batch norm forward (training)"]["torch"] = lambda: F.batch_norm(tx, tm, tv, tg, tb, training=True)
            cases["batch norm eval"]["torch"] = lambda: F.batch_norm(tx, tm, tv, tg, tb, training=False)
            cases["residual add"]["torch"] = lambda: tx + tdy
        cases["layer norm forward + backward"]["torch"] = lambda: backward(F.layer_norm(tx, (shape[1],), tg, tb))
        cases["batch norm forward + backward"]["torch"] = lambda: backward(
            F.batch_norm(tx, tm, tv, tg, tb, training=True))
        cases["dropout (mask + apply)"]["torch"] = lambda: F.dropout(tx.detach(), P, training=True)
        cases["dropout backward"]["torch"] = lambda: tdy * tmask * (1 / (1 - P))
    return cases


def _no_grad(f):
    if torch is None:
        return f

    def run():
        with torch.no_grad():
            return f()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=0.05)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores")
    print(f"fastmlp {fm.__version__} from {fm.__file__}")
    print(f"torch {torch.__version__}" if torch is not None else "torch: not installed (its column is empty)")
    print(f"float32; {args.rounds} rounds, medians; µs per call; p = {P} for dropout")
    load = OtherLoad()
    samples: dict[tuple, list[float]] = {}
    saved = fm.get_num_threads()
    try:
        for _ in range(args.rounds):
            for shape in SHAPES:
                cases = _cases(shape)
                for threads in THREADS:
                    fm.set_num_threads(threads)
                    if torch is not None:
                        torch.set_num_threads(threads)
                    for name, calls in cases.items():
                        for library, f in calls.items():
                            if library == "torch" and "backward" not in name:
                                f = _no_grad(f)
                            if library == "numpy" and threads != THREADS[0]:
                                continue  # NumPy's twin runs on one thread either way
                            samples.setdefault((shape, threads, name, library), []).append(
                                time_block(f, args.block_seconds))
    finally:
        fm.set_num_threads(saved)

    header = ["shape", "threads", "kernel", "fastmlp µs", "NumPy twin µs", "NumPy ÷ fastmlp", "torch µs",
              "torch ÷ fastmlp"]
    rows = []
    for shape in SHAPES:
        for threads in THREADS:
            for name in _cases(shape):
                ours = statistics.median(samples[(shape, threads, name, "fastmlp")])
                numpy_time = statistics.median(samples[(shape, THREADS[0], name, "numpy")])
                torch_samples = samples.get((shape, threads, name, "torch"))
                torch_time = statistics.median(torch_samples) if torch_samples else None
                rows.append([f"{shape[0]}×{shape[1]}", str(threads), name, f"{ours:.1f}", f"{numpy_time:.1f}",
                             f"{numpy_time / ours:.1f}", "—" if torch_time is None else f"{torch_time:.1f}",
                             "—" if torch_time is None else f"{torch_time / ours:.2f}"])
    print_table(header, rows)
    print(f"other processes used {load.describe()} while this ran")


if __name__ == "__main__":
    main()
