"""The float32 activations, forward and backward, on a 1024 × 1024 array: µs per call.

    python benchmarks/bench_activations.py [--rounds 5] [--block-seconds 0.05] [--pause 0.02]
        [--baseline-python PATH]

Rows: sigmoid, swish, gelu and tanh; forward (fm.kernels.activation_forward(z, name,
out=a)) and backward (fm.kernels.activation_backward(da, z, a, name, out=dz)); fastmlp on
1 and 2 threads. Beside them, the NumPy twin (fastmlp.reference, float32; its GELU goes
through Python's math.erfc element by element, so it is slow by design).

--baseline-python PATH: the same fastmlp rows timed in another interpreter, one with an
older fastmlp build installed (e.g. a virtual environment of main before a change). It
runs this script as a worker (--worker) that times its rows when asked, so the two
builds alternate block by block, round by round, under the same load; the table then
shows the old time and the speed ratio new ÷ old (old time ÷ new time: above 1, the new
build is quicker).

Method: each (row, build) is one block of calls timed with time.perf_counter_ns over at
least --block-seconds; its time per call is one sample. Blocks run round-robin over
--rounds rounds with --pause between blocks; the figures are medians over the rounds.
Defaults run in about 20 s with a baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import fastmlp as fm
from fastmlp import reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import OtherLoad, cpu_model, print_table, time_block  # noqa: E402

ACTIVATIONS = ("sigmoid", "swish", "gelu", "tanh")
DIRECTIONS = ("forward", "backward")
THREADS = (1, 2)
SHAPE = (1024, 1024)


def _arrays():
    rng = np.random.default_rng(0)
    z = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    da = rng.standard_normal(SHAPE).astype(np.float32)
    return z, da


def _call(library: str, activation: str, direction: str, z, da, a, out):
    if library == "numpy":
        if direction == "forward":
            return lambda: reference.activation_forward(z, activation)
        return lambda: reference.activation_backward(da, z, a, activation)
    if direction == "forward":
        return lambda: fm.kernels.activation_forward(z, activation, out=out)
    return lambda: fm.kernels.activation_backward(da, z, a, activation, out=out)


def time_fastmlp_rows(block_seconds: float, pause: float) -> dict[str, float]:
    """One block per (activation, direction, threads): {"gelu/forward/2": µs, ...}."""
    z, da = _arrays()
    out = np.empty_like(z)
    saved = fm.get_num_threads()
    times = {}
    try:
        for threads in THREADS:
            fm.set_num_threads(threads)
            for activation in ACTIVATIONS:
                a = fm.kernels.activation_forward(z, activation)
                for direction in DIRECTIONS:
                    f = _call("fastmlp", activation, direction, z, da, a, out)
                    times[f"{activation}/{direction}/{threads}"] = time_block(f, block_seconds)
                    time.sleep(pause)
    finally:
        fm.set_num_threads(saved)
    return times


def time_numpy_rows(block_seconds: float, pause: float) -> dict[str, float]:
    z, da = _arrays()
    times = {}
    for activation in ACTIVATIONS:
        a = reference.activation_forward(z, activation)
        for direction in DIRECTIONS:
            times[f"{activation}/{direction}"] = time_block(_call("numpy", activation, direction, z, da, a, None),
                                                        block_seconds)
            time.sleep(pause)
    return times


def worker() -> None:
    """--worker: time the fastmlp rows once per line read from stdin; answer in JSON."""
    print(json.dumps({"fastmlp": fm.__file__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(time_fastmlp_rows(request["block_seconds"], request["pause"])), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=0.05)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between blocks")
    parser.add_argument("--baseline-python", metavar="PATH",
                        help="an interpreter with an older fastmlp: its rows are timed alternately")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()

    baseline = None
    if args.baseline_python:
        baseline = subprocess.Popen([args.baseline_python, os.path.abspath(__file__), "--worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    cwd=os.path.dirname(os.path.abspath(__file__)))
        baseline_module = json.loads(baseline.stdout.readline())["fastmlp"]

    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores")
    print(f"fastmlp {fm.__version__} from {fm.__file__}")
    if baseline:
        print(f"baseline: {args.baseline_python}, fastmlp from {baseline_module}")
    print(f"float32 {SHAPE[0]} × {SHAPE[1]}; {args.rounds} rounds, medians; µs per call")

    load = OtherLoad()
    new, old, numpy_times = [], [], []
    for _ in range(args.rounds):
        new.append(time_fastmlp_rows(args.block_seconds, args.pause))
        if baseline:
            baseline.stdin.write(json.dumps({"block_seconds": args.block_seconds, "pause": args.pause}) + "\n")
            baseline.stdin.flush()
            old.append(json.loads(baseline.stdout.readline()))
            time.sleep(args.pause)
        numpy_times.append(time_numpy_rows(args.block_seconds, args.pause))
    if baseline:
        baseline.stdin.close()
        baseline.wait()

    def median(samples, key):
        return statistics.median(s[key] for s in samples)

    header = ["activation", "direction", "threads", "fastmlp µs"]
    if baseline:
        header += ["baseline µs", "speed new ÷ old"]
    header += ["NumPy twin µs", "NumPy ÷ fastmlp"]
    rows = []
    for activation in ACTIVATIONS:
        for direction in DIRECTIONS:
            for threads in THREADS:
                key = f"{activation}/{direction}/{threads}"
                t_new = median(new, key)
                row = [activation, direction, str(threads), f"{t_new:.0f}"]
                if baseline:
                    t_old = median(old, key)
                    row += [f"{t_old:.0f}", f"{t_old / t_new:.2f}"]
                t_numpy = median(numpy_times, f"{activation}/{direction}")
                row += [f"{t_numpy:.0f}", f"{t_numpy / t_new:.1f}"]
                rows.append(row)
    print_table(header, rows)
    print(f"other processes used {load.describe()} while this ran")


if __name__ == "__main__":
    main()
