"""Gradient checkpointing: the activation memory it saves and the time it costs per step.

    python benchmarks/bench_checkpoint.py [--quick] [--threads 2] [--steps 6] [--rounds 2]
                                          [--variants none,sqrt,4,8]

The issue's network: 1024 inputs → 32 hidden layers of 1024 (relu) → 10 outputs, float32,
MSE on random data, plain SGD (lr 1e-4), batch 256; about 34 M parameters, so the weights
and their gradients take 2 × 135 MB and the activations a training step keeps take
32 × 2 × 256 × 1024 × 4 B ≈ 64 MiB without checkpointing (each hidden layer's
pre-activation and activation).

Variants: ``none`` (fit without checkpoint), ``sqrt`` (``checkpoint="sqrt"``, ≈ √32 ≈ 6) and
integers k (``checkpoint=k``: the activations of every k-th block are kept and the others
recomputed in backward). Each variant runs in its own fresh subprocess, so each has its own
peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), read before and after the fit: the
growth is what the training step added (its activation workspace, the output gradient and
the GEMM's packing buffers) on top of the network and the data. The child also reports
``net.activation_memory(256, checkpoint)``, the bytes of activation workspace the engine says
a step keeps, and the time of each step: one ``fit`` of ``--steps`` + 1 epochs of one batch
each, timed between epochs by an ``on_epoch_end`` callback; the first (allocation, warm-up)
is dropped and the median of the others is reported, in wall time (the goal's measure) and
in the process's CPU time (all its threads; it counts the work, and moves less than the wall
time when another process takes a core).

Variants run round-robin, ``--rounds`` rounds (a new subprocess each time); a variant's
figures are the medians over its rounds (time: over all its steps). Ratios are against
``none``. The goal (issue 11): at least half of the activation memory saved for at most
35 % more time per step. Recomputing the forward of all but every k-th block costs about
one more forward pass, a third of a step's GEMM work, so the time goal leaves little room.

Run it on a quiet machine (the script says how much CPU other processes took), with NumPy's
BLAS unhindered:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_checkpoint.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SIZES = (1024, *([1024] * 32), 10)
BATCH = 256
LR = 1e-4
SEED = 0
GOAL_MEMORY_SAVED = 0.5  # at least this share of the activation memory saved
GOAL_TIME_RATIO = 1.35  # for at most this many times the time per step
CHILD_TIMEOUT_S = 300


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def parse_variant(text: str):
    """"none" → None, "sqrt" → "sqrt", "8" → 8 (fit's checkpoint argument)."""
    if text == "none":
        return None
    if text == "sqrt":
        return "sqrt"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected none, sqrt or a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected none, sqrt or a positive integer, got {text!r}")
    return value


# ---- the child: one variant, one fresh process ---------------------------------------------------
def run_child(variant: str, steps: int, threads: int) -> dict:
    import numpy as np

    import fastmlp as fm

    checkpoint = parse_variant(variant)
    fm.set_num_threads(threads)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.standard_normal((BATCH, SIZES[-1]), dtype=np.float32)
    net = fm.Network(SIZES, activation="relu", dtype="float32", seed=SEED)
    try:
        activation_memory = int(net.activation_memory(BATCH, checkpoint))
    except AttributeError as error:
        return {"error": f"this fastmlp has no Network.activation_memory (before issue 11): {error}"}
    rss_before = _max_rss_bytes()
    stamps: list[tuple[float, float]] = []  # (wall, this process's CPU time) at each epoch's end

    def stamp(epoch, logs):
        stamps.append((time.perf_counter(), time.process_time()))

    stamp(None, None)
    try:
        history = net.fit(X, y, epochs=steps + 1, batch_size=BATCH, optimizer=fm.SGD(lr=LR), shuffle=False,
                          checkpoint=checkpoint, on_epoch_end=stamp)
    except TypeError as error:
        return {"error": f"this fastmlp's fit takes no checkpoint (before issue 11): {error}"}
    times = [b[0] - a[0] for a, b in zip(stamps[:-1], stamps[1:])]
    cpu_times = [b[1] - a[1] for a, b in zip(stamps[:-1], stamps[1:])]
    return {
        "variant": variant,
        "activation_memory": activation_memory,
        "rss_before": rss_before,
        "rss_peak": _max_rss_bytes(),
        "step_seconds": times[1:],  # the first step allocates and warms up
        "step_cpu_seconds": cpu_times[1:],
        "loss": history["loss"][-1],
        "threads": fm.get_num_threads(),
    }


# ---- the parent ---------------------------------------------------------------------------------
def spawn(variant: str, steps: int, threads: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--steps", str(steps),
               "--threads", str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"variant {variant}: no answer within {CHILD_TIMEOUT_S} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"variant {variant}: exit status {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: variants none and sqrt, 2 timed steps, 1 round")
    parser.add_argument("--threads", type=int, default=2, help="fastmlp's threads (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 6; 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="subprocesses per variant (default 2; 1 with --quick)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated: none, sqrt, k (default none,sqrt,4,8; none,sqrt with --quick)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (2 if args.quick else 6)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    if steps < 1 or rounds < 1 or args.threads < 1:
        parser.error("--steps, --rounds and --threads must be positive")

    if args.child is not None:
        print(json.dumps(run_child(args.child, steps, args.threads)))
        return 0

    variants = (args.variants or ("none,sqrt" if args.quick else "none,sqrt,4,8")).split(",")
    variants = [v.strip() for v in variants]
    for v in variants:
        try:
            parse_variant(v)
        except argparse.ArgumentTypeError as error:
            parser.error(f"--variants: {error}")
    if variants[0] != "none":
        variants = ["none"] + [v for v in variants if v != "none"]  # the baseline of the ratios

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_common import OtherLoad, cpu_model

    import fastmlp as fm

    n_params = sum(a * b + b for a, b in zip(SIZES[:-1], SIZES[1:]))
    print("Gradient checkpointing: activation memory and time per training step, float32")
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"versions: fastmlp {fm.__version__} (GEMM kernel {fm.kernels.gemm_kernel()}), "
          f"Python {platform.python_version()}")
    print(f"network:  {SIZES[0]} → {len(SIZES) - 2} hidden layers of {SIZES[1]} relu → {SIZES[-1]}, "
          f"{n_params / 1e6:.1f} M parameters ({mib(4 * n_params)} each for weights and gradients); "
          f"batch {BATCH}, MSE, SGD lr {LR:g}")
    print(f"method:   each variant in a fresh subprocess, {rounds} round{'s' if rounds > 1 else ''} round-robin; "
          f"{steps} timed steps per run after one warm-up step (median); {args.threads} threads")
    print()

    load = OtherLoad()
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            result = spawn(v, steps, args.threads)
            if "error" in result:
                print(f"error: {result['error']}")
                return 1
            results[v].append(result)

    def summary(v):
        runs = results[v]
        return {
            "activation_memory": statistics.median(r["activation_memory"] for r in runs),
            "rss_peak": statistics.median(r["rss_peak"] for r in runs),
            "rss_growth": statistics.median(r["rss_peak"] - r["rss_before"] for r in runs),
            "step": statistics.median(t for r in runs for t in r["step_seconds"]),
            "cpu": statistics.median(t for r in runs for t in r["step_cpu_seconds"]),
            "loss": runs[-1]["loss"],
        }

    figures = {v: summary(v) for v in variants}
    base = figures["none"]
    header = ("checkpoint", "activation memory", "saved", "peak RSS", "RSS growth in fit", "saved",
              "ms / step", "time ÷ none", "CPU ms / step", "CPU ÷ none", "last loss",
              f"goal (≥ {GOAL_MEMORY_SAVED:.0%} saved, ≤ {GOAL_TIME_RATIO:g}× time)")
    rows, verdicts = [], []
    for v in variants:
        f = figures[v]
        saved = 1 - f["activation_memory"] / base["activation_memory"] if base["activation_memory"] else 0.0
        rss_saved = 1 - f["rss_growth"] / base["rss_growth"] if base["rss_growth"] > 0 else 0.0
        ratio = f["step"] / base["step"]
        cpu_ratio = f["cpu"] / base["cpu"]
        if v == "none":
            mark = "—"
        else:
            met = saved >= GOAL_MEMORY_SAVED and ratio <= GOAL_TIME_RATIO
            verdicts.append((v, met, saved, ratio, cpu_ratio))
            mark = "met" if met else "MISSED"
        rows.append((v, mib(f["activation_memory"]), "—" if v == "none" else f"{saved:.0%}", mib(f["rss_peak"]),
                     mib(f["rss_growth"]), "—" if v == "none" else f"{rss_saved:.0%}", f"{f['step'] * 1e3:.0f}",
                     "—" if v == "none" else f"{ratio:.2f}×", f"{f['cpu'] * 1e3:.0f}",
                     "—" if v == "none" else f"{cpu_ratio:.2f}×", f"{f['loss']:.6g}", mark))
    from bench_common import print_table

    print_table(header, rows)
    print()
    losses = {figures[v]["loss"] for v in variants}
    print("last losses " + ("identical across variants (checkpointing is bit-identical)" if len(losses) == 1
                            else "DIFFER across variants: checkpointing should be bit-identical"))
    print(f"load average after: {os.getloadavg()[0]:.2f}; other processes used {load.describe()} during the run "
          "(above ~5 %, the times are suspect)")
    print(f"goal: at least {GOAL_MEMORY_SAVED:.0%} of the activation memory saved for at most "
          f"{100 * (GOAL_TIME_RATIO - 1):.0f} % more time per step: "
          + "; ".join(f"{v} {'met' if met else 'MISSED'} ({saved:.0%} saved, {ratio:.2f}× the time, "
                      f"{cpu_ratio:.2f}× the CPU time)" for v, met, saved, ratio, cpu_ratio in verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
