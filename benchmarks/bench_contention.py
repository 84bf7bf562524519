"""Training beside a busy process: does 2-thread training keep its 1-thread speed?

    python benchmarks/bench_contention.py [--quick] [--repeats 5] [--steps 100] [--skip-torch]

The workload is fastmlp bench's mnist-mlp ([784, 512, 256, 10] relu, batch 128,
SGD lr 0.01, float32, MSE on one-hot targets). On a 2-core machine, one CPU-bound
process (`while True: pass` in a Python subprocess) takes one core; the other core is
still free, so a library that shares well keeps its quiet 1-thread speed when it asks
for 2 threads (1.0× is the ideal). A library whose threads wait at barriers for a
thread that has no core collapses far below it.

Rows, for fastmlp and (when it imports) PyTorch:
    quiet  1 thread    quiet  2 threads    busy  1 thread    busy  2 threads
The headline is busy 2 threads ÷ quiet 1 thread (target for fastmlp: ≥ 0.75×).

Method. Each round measures every row once: first the quiet blocks, then the busy
process is started, given 0.5 s to settle, the busy blocks run, and it is killed
(try/finally, with a timeout; on Linux it also dies with this process). A block is a
fixed number of training steps in one call (fit for fastmlp, a loop for PyTorch), with
a pause between blocks so that idle threads have stopped spinning. Figures are
medians over --repeats rounds, in samples/s.

Run it with NumPy's BLAS unhindered:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_contention.py
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

import fastmlp as fm
from fastmlp.bench import MNIST, make_data, trainer  # the mnist-mlp configuration, its runners

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import OtherLoad, cpu_model, print_table  # noqa: E402

TARGET = 0.75
BUSY_CODE = "while True: pass"


def _die_with_parent() -> None:  # runs in the child before exec: SIGKILL when this process ends
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class BusyLoop:
    """One CPU-bound process for the duration of a `with` block."""

    def __enter__(self):
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.process = subprocess.Popen([sys.executable, "-c", BUSY_CODE], preexec_fn=preexec)
        time.sleep(0.5)
        if self.process.poll() is not None:
            raise RuntimeError(f"the busy loop exited at once (code {self.process.returncode})")
        return self

    def __exit__(self, *exc):
        self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"warning: busy loop (pid {self.process.pid}) did not exit after SIGKILL", file=sys.stderr)
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (well under a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5, 3 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per block (default 100, 30 with --quick)")
    parser.add_argument("--pause", type=float, default=0.1, help="sleep between blocks (default 0.1 s)")
    parser.add_argument("--skip-torch", action="store_true", help="leave PyTorch out")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    steps = args.steps if args.steps is not None else (30 if args.quick else 100)
    if repeats < 1 or steps < 1:
        parser.error("--repeats and --steps must be positive")

    torch = None
    torch_note = "PyTorch: left out (--skip-torch)"
    if not args.skip_torch:
        try:
            import torch
        except ImportError as error:
            torch_note = f"PyTorch: skipped (import torch failed: {error})"
        else:
            torch_note = f"PyTorch: {torch.__version__}"
    try:
        import threadpoolctl

        blas_limit = threadpoolctl.threadpool_limits(limits=1, user_api="blas")  # noqa: F841  (NumPy unused here)
    except ImportError:
        pass

    config = MNIST
    X, y = make_data(config, steps)
    runners = {"fastmlp": trainer("fastmlp", config, X, y)[0]}  # run(steps), from fastmlp's initial weights
    if torch is not None:
        runners["PyTorch"] = trainer("torch", config, X, y)[0]

    def set_threads(impl: str, threads: int) -> None:
        if impl == "fastmlp":
            fm.set_num_threads(threads)
        else:
            torch.set_num_threads(threads)

    print(f"Contention benchmark: {config.name} {list(config.sizes)} {config.activation}, batch {config.batch}, "
          f"SGD lr {config.lr}, float32, beside one `{BUSY_CODE}` process")
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"versions: fastmlp {fm.__version__} (GEMM kernel {fm.kernels.gemm_kernel()}), NumPy {np.__version__}; "
          f"{torch_note}")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY",
                                      "GOMP_SPINCOUNT") if k in os.environ}
    if env:
        print("env:      " + " ".join(f"{k}={v}" for k, v in env.items()))
    print(f"method:   {steps} steps per block; median of {repeats} rounds; each round runs the quiet blocks, "
          f"then starts the busy process and runs the busy blocks; {args.pause:g} s pause between blocks")
    print()

    keys = [(impl, load, threads) for impl in runners for load in ("quiet", "busy") for threads in (1, 2)]
    times: dict[tuple, list[float]] = {key: [] for key in keys}
    for impl, runner in runners.items():  # warm-up at both thread counts
        for threads in (1, 2):
            set_threads(impl, threads)
            runner(max(1, steps // 5))
    time.sleep(args.pause)

    def run_blocks(load: str) -> None:
        for impl, runner in runners.items():
            for threads in (1, 2):
                set_threads(impl, threads)
                start = time.perf_counter()
                runner(steps)
                times[(impl, load, threads)].append(time.perf_counter() - start)
                time.sleep(args.pause)

    other_load = OtherLoad()  # the busy loop is this script's child: its time counts as ours
    for _ in range(repeats):
        run_blocks("quiet")
        with BusyLoop():
            run_blocks("busy")
        time.sleep(args.pause)

    samples = steps * config.batch
    rate = {key: samples / statistics.median(t) for key, t in times.items()}
    header = ("implementation", "quiet 1 thread", "quiet 2 threads", "busy 1 thread", "busy 2 threads",
              "busy 2t ÷ quiet 1t", "busy 2t ÷ quiet 2t")
    rows = []
    verdicts = []
    for impl in runners:
        ratio = rate[(impl, "busy", 2)] / rate[(impl, "quiet", 1)]
        ratio_cell = f"{ratio:.2f}×"
        if impl == "fastmlp":
            ratio_cell += f" (≥ {TARGET:g} {'met' if ratio >= TARGET else 'MISSED'})"
            verdicts.append(ratio)
        rows.append((impl, *(f"{rate[(impl, load, t)] / 1e3:.1f}k" for load in ("quiet", "busy") for t in (1, 2)),
                     ratio_cell, f"{rate[(impl, 'busy', 2)] / rate[(impl, 'quiet', 2)]:.2f}×"))
    print("samples/s (median):")
    print_table(header, rows)
    print()
    spread = {key: (min(t), max(t)) for key, t in times.items()}
    for impl in runners:
        busy2 = spread[(impl, "busy", 2)]
        print(f"{impl}: busy 2-thread blocks ranged {samples / busy2[1] / 1e3:.1f}k–{samples / busy2[0] / 1e3:.1f}k samples/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}; other processes (besides the busy loop) used "
          f"{other_load.describe()} during the rounds")
    if verdicts:
        print(f"target: fastmlp busy 2 threads ≥ {TARGET:g}× its quiet 1 thread: "
              f"{'met' if verdicts[0] >= TARGET else 'MISSED'} ({verdicts[0]:.2f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
