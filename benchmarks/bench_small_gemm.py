"""The per-call cost of small products from Python: fm.kernels.gemm beside np.matmul.

    python benchmarks/bench_small_gemm.py [--rounds 5] [--block-seconds 0.04] [--pause 0.02]

At these sizes the time is the call, not the arithmetic (1 × 128 × 128 is 16 k
multiply-adds, a few hundred nanoseconds of FMA), so the figures are µs per call.
Rows: shapes M × N × K of 1×1×1, 1×128×128, 8×64×64 and 16×128×128, float32 and
float64, B given as (K, N) or as (N, K) read transposed (trans_b; NumPy gets b.T, a
view, so neither copies), and two forms of the call:
    new C     fm.kernels.gemm(a, b)        np.matmul(a, b)
    into C    fm.kernels.gemm(a, b, c)     np.matmul(a, b, out=c)
fastmlp runs on its default thread count; NumPy's BLAS on its own default.

Method: each (row, library) is one block of calls timed with time.perf_counter_ns
over at least --block-seconds; its time per call is one sample. Blocks run
round-robin over --rounds rounds with --pause between blocks (idle BLAS threads
spin after a call; see README.md); the figures are medians over the rounds, and the
ratio is fastmlp's time ÷ NumPy's (below 1: fastmlp is quicker). Defaults run in
about 25 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import fastmlp as fm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import cpu_model  # noqa: E402

SHAPES = ((1, 1, 1), (1, 128, 128), (8, 64, 64), (16, 128, 128))  # (M, N, K)
DTYPES = (np.float32, np.float64)


def calls_per_block(call, seconds: float) -> int:
    """Enough calls that a block lasts about ``seconds`` (timed on a short trial)."""
    for _ in range(50):  # warm-up
        call()
    start = time.perf_counter_ns()
    for _ in range(200):
        call()
    per_call = (time.perf_counter_ns() - start) / 200
    return max(200, int(seconds * 1e9 / max(per_call, 1.0)))


def time_block(call, count: int) -> float:
    """µs per call over one block of ``count`` calls."""
    start = time.perf_counter_ns()
    for _ in range(count):
        call()
    return (time.perf_counter_ns() - start) / count / 1000.0


def rows():
    """(label, fastmlp call, NumPy call) for every shape, dtype, layout and form."""
    rng = np.random.default_rng(0)
    for m, n, k in SHAPES:
        for dtype in DTYPES:
            for trans_b in (False, True):
                a = rng.standard_normal((m, k)).astype(dtype)
                b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
                b_op = b.T if trans_b else b
                c_fm, c_np = np.zeros((m, n), dtype), np.zeros((m, n), dtype)
                layout = "a·bᵀ" if trans_b else "a·b "
                name = f"{m}×{n}×{k}"
                label = f"{name:<11} {np.dtype(dtype).name:<8} {layout}"
                yield (f"{label} new C",
                       lambda a=a, b=b, t=trans_b: fm.kernels.gemm(a, b, trans_b=t),
                       lambda a=a, b=b_op: np.matmul(a, b))
                yield (f"{label} into C",
                       lambda a=a, b=b, c=c_fm, t=trans_b: fm.kernels.gemm(a, b, c, trans_b=t),
                       lambda a=a, b=b_op, c=c_np: np.matmul(a, b, out=c))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=0.04)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between blocks")
    args = parser.parse_args(argv)

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; "
          f"fastmlp {fm.__version__} (GEMM kernel {fm.kernels.gemm_kernel()}, "
          f"{fm.get_num_threads()} threads), NumPy {np.__version__}, Python {platform.python_version()}")
    print(f"{args.rounds} rounds, blocks of ≥ {args.block_seconds} s; µs per call, medians")

    cases = [(label, fm_call, np_call, calls_per_block(fm_call, args.block_seconds),
              calls_per_block(np_call, args.block_seconds)) for label, fm_call, np_call in rows()]
    samples = {label: ([], []) for label, *_ in cases}
    for _ in range(args.rounds):
        for label, fm_call, np_call, fm_count, np_count in cases:
            for call, count, into in ((fm_call, fm_count, samples[label][0]),
                                      (np_call, np_count, samples[label][1])):
                time.sleep(args.pause)
                into.append(time_block(call, count))

    print(f"{'shape M×N×K':<11} {'dtype':<8} {'op':<4} {'C':<6} {'fastmlp':>8} {'NumPy':>8} {'ratio':>6}")
    ratios = []
    for label, _, _, _, _ in cases:
        fm_us, np_us = (statistics.median(s) for s in samples[label])
        ratios.append(fm_us / np_us)
        print(f"{label:<33} {fm_us:8.2f} {np_us:8.2f} {fm_us / np_us:6.2f}")
    geomean = float(np.exp(np.mean(np.log(ratios))))
    print(f"fastmlp ÷ NumPy time: geometric mean {geomean:.2f}, max {max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
