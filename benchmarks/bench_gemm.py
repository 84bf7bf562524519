"""fastmlp's GEMM beside NumPy's BLAS: GFLOP/s, % of the machine's FMA peak, ratios.

    python benchmarks/bench_gemm.py [--quick] [--kernel avx512|avx2|portable] [--threads 1,2]
                                    [--repeats 5] [--block-seconds 0.15] [--public-api] [--no-peak]

Shapes (m×n×k, C(m,n) = op(A)(m,k) · op(B)(k,n)):
  squares 256, 512, 1024, 2048 (A·B), and the products of a dense layer with batch
  B = 128 and widths I → O of 256→256, 512→512, 1024→1024, in the three layouts a
  layer uses:
    forward       Z  = X · Wᵀ     m = B, n = O, k = I   (trans_b: W is (O, I))
    input grad    dX = dY · W     m = B, n = I, k = O
    weight grad   dW = dYᵀ · X    m = O, n = I, k = B   (trans_a: dY is (B, O))
  float32 and float64, on 1 and 2 threads (fm.set_num_threads for fastmlp,
  threadpoolctl for NumPy's BLAS).

NumPy runs np.matmul(op(A), op(B), out=C) on transposed views, so OpenBLAS gets the
same transposes without copies. fastmlp runs its binding fastmlp._core.gemm, the
kernel entry without the Python-side argument checks of fm.kernels.gemm (those cost
a few µs a call; --public-api times fm.kernels.gemm instead).

Method. The peak first: benchmarks/peak_probe.cpp is compiled (g++ -O2 -fopenmp with
-mavx512f, or -mavx2 -mfma, as the CPU has them; cached in the temp dir) and run on
1..T threads in its own process; the best of its trials is the peak (noise only
lowers it). float64's peak is taken as half of float32's. Then each (implementation,
dtype, threads, shape) is timed in its own block: warm-up calls, then calls until the
block has run --block-seconds (at least 3 calls); the block's time per call is one
sample. Blocks run round-robin, --repeats rounds, with a pause between blocks:
idle OpenBLAS and OpenMP threads spin for a while after each call, and a block that
starts while the other library's threads still spin runs many times slower. The
figures are medians over the rounds; the ratio is fastmlp's GFLOP/s ÷ NumPy's.

Run it with NumPy's BLAS unhindered:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

import fastmlp as fm
from fastmlp import _core

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_common import OtherLoad, blas_description, cpu_model, print_table  # noqa: E402

PROBE_SOURCE = os.path.join(HERE, "peak_probe.cpp")

SQUARES = (256, 512, 1024, 2048)
SQUARES_QUICK = (256, 1024)
LAYERS = ((128, 256, 256), (128, 512, 512), (128, 1024, 1024))  # (batch, inputs, outputs)
LAYERS_QUICK = ((128, 256, 256), (128, 1024, 1024))

# Targets of the Speed issue: fastmlp ÷ NumPy, and the 1-thread share of the peak.
TARGET_SQUARE_F32 = 1.0
TARGET_LAYER_F32 = 1.15
TARGET_F64 = 0.9
TARGET_PEAK_SHARE = 0.85


# ---- the peak probe -------------------------------------------------------------------------
def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def probe_flags() -> list[str]:
    flags = cpu_flags()
    if "avx512f" in flags:
        return ["-mavx512f"]
    if "avx2" in flags and "fma" in flags:
        return ["-mavx2", "-mfma"]
    return []


def build_probe() -> tuple[str | None, str]:
    """Compiles peak_probe.cpp once per source and flags; returns (binary or None, note)."""
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if compiler is None:
        return None, "no C++ compiler found (set CXX): peak unknown"
    flags = ["-O2", "-fopenmp", *probe_flags()]
    with open(PROBE_SOURCE, "rb") as f:
        digest = hashlib.sha1(f.read() + " ".join([compiler, *flags]).encode()).hexdigest()[:12]
    directory = os.path.join(tempfile.gettempdir(), f"fastmlp-peak-probe-{digest}")
    binary = os.path.join(directory, "peak_probe")
    command = " ".join([os.path.basename(compiler), *flags])
    if os.path.exists(binary):
        return binary, command
    os.makedirs(directory, exist_ok=True)
    partial = f"{binary}.{os.getpid()}"
    result = subprocess.run([compiler, *flags, PROBE_SOURCE, "-o", partial], capture_output=True, text=True)
    if result.returncode != 0:
        return None, f"{command} failed: {result.stderr.strip()[:300]}"
    os.replace(partial, binary)
    return binary, command


@dataclass
class Peak:
    threads: int
    isa: str
    median: float
    best: float


def measure_peak(max_threads: int) -> tuple[dict[int, Peak], str]:
    binary, note = build_probe()
    if binary is None:
        return {}, note
    result = subprocess.run([binary, str(max_threads), "0.3", "5"], capture_output=True, text=True, timeout=120)
    peaks = {}
    for line in result.stdout.splitlines():
        fields = dict(item.split("=", 1) for item in line.split())
        peaks[int(fields["threads"])] = Peak(int(fields["threads"]), fields["isa"],
                                             float(fields["median_gflops"]), float(fields["best_gflops"]))
    if not peaks:
        return {}, f"peak probe printed nothing ({result.stderr.strip()[:200]})"
    return peaks, note


# ---- the products -----------------------------------------------------------------------------
@dataclass
class Case:
    group: str  # "square" or "layer"
    layout: str
    m: int
    n: int
    k: int
    trans_a: bool = False
    trans_b: bool = False

    @property
    def label(self) -> str:
        return f"{self.m}×{self.n}×{self.k}"

    @property
    def flop(self) -> float:
        return 2.0 * self.m * self.n * self.k


def make_cases(quick: bool) -> list[Case]:
    cases = [Case("square", "A·B", s, s, s) for s in (SQUARES_QUICK if quick else SQUARES)]
    for batch, inputs, outputs in LAYERS_QUICK if quick else LAYERS:
        cases.append(Case("layer", f"fwd X·Wᵀ ({batch}, {inputs}→{outputs})", batch, outputs, inputs, trans_b=True))
        cases.append(Case("layer", f"dX dY·W ({batch}, {inputs}→{outputs})", batch, inputs, outputs))
        cases.append(Case("layer", f"dW dYᵀ·X ({batch}, {inputs}→{outputs})", outputs, inputs, batch, trans_a=True))
    return cases


def operands(case: Case, dtype, rng):
    a_shape = (case.k, case.m) if case.trans_a else (case.m, case.k)
    b_shape = (case.n, case.k) if case.trans_b else (case.k, case.n)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    return a, b, np.zeros((case.m, case.n), dtype=dtype)


def fastmlp_call(case: Case, a, b, c, public_api: bool):
    if public_api:
        return lambda: fm.kernels.gemm(a, b, c, trans_a=case.trans_a, trans_b=case.trans_b)
    return lambda: _core.gemm(a, b, c, 1.0, 0.0, case.trans_a, case.trans_b)


def numpy_call(case: Case, a, b, c):
    a_op = a.T if case.trans_a else a
    b_op = b.T if case.trans_b else b
    return lambda: np.matmul(a_op, b_op, out=c)


# ---- timing -----------------------------------------------------------------------------------
@dataclass
class Block:
    impl: str  # "fastmlp" or "numpy"
    dtype: str
    threads: int
    case: Case
    call: object
    seconds: list[float] = field(default_factory=list)  # per call, one per round
    others: list[float] = field(default_factory=list)  # other processes' share of the cores, per block

    @property
    def gflops(self) -> float:
        return self.case.flop / statistics.median(self.seconds) / 1e9


def set_threads(impl: str, threads: int, blas_limiter):
    if impl == "fastmlp":
        fm.set_num_threads(threads)
        return None
    return blas_limiter(limits=threads, user_api="blas") if blas_limiter else None


def run_block(block: Block, block_seconds: float, blas_limiter) -> None:
    limiter = set_threads(block.impl, block.threads, blas_limiter)
    try:
        call = block.call
        call()
        call()
        load = OtherLoad()
        calls, start = 0, time.perf_counter()
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter() - start
            if calls >= 3 and elapsed >= block_seconds:
                break
        block.seconds.append(elapsed / calls)
        share = load.share()
        if share is not None:
            block.others.append(share)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def validate(cases, dtypes, rng) -> list[str]:
    """Max relative difference fastmlp vs NumPy per dtype (one product of each case)."""
    lines = []
    for dtype in dtypes:
        worst, where = 0.0, ""
        for case in cases:
            a, b, c = operands(case, dtype, rng)
            expected = np.matmul(a.T if case.trans_a else a, b.T if case.trans_b else b)
            _core.gemm(a, b, c, 1.0, 0.0, case.trans_a, case.trans_b)
            diff = float(np.max(np.abs(c.astype(np.float64) - expected)) / max(np.max(np.abs(expected)), 1e-30))
            if diff > worst:
                worst, where = diff, f"{case.label} {case.layout}"
        tolerance = 1e-4 if dtype == "float32" else 1e-12
        verdict = "ok" if worst <= tolerance else f"EXCEEDS {tolerance:g}"
        lines.append(f"{dtype}: max |fastmlp − NumPy| / max |NumPy| = {worst:.2e} ({where}) {verdict}")
    return lines


# ---- reporting --------------------------------------------------------------------------------






def target_for(case: Case, dtype: str) -> float:
    if dtype == "float64":
        return TARGET_F64
    return TARGET_SQUARE_F32 if case.group == "square" else TARGET_LAYER_F32


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and shorter blocks (about a minute)")
    parser.add_argument("--kernel", default=None, help="force a fastmlp GEMM kernel (fm.kernels.available_gemm_kernels())")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--dtypes", default="float32,float64", help="default float32,float64")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all blocks; medians are shown (default 5)")
    parser.add_argument("--block-seconds", type=float, default=None,
                        help="time per block (default 0.15, 0.06 with --quick)")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="sleep between blocks, so idle threads stop spinning (default 0.1 s)")
    parser.add_argument("--public-api", action="store_true", help="time fm.kernels.gemm, not fastmlp._core.gemm")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak probe")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    if args.repeats < 1 or any(t < 1 for t in threads_list) or not set(dtypes) <= {"float32", "float64"}:
        parser.error("--repeats and --threads must be positive; --dtypes from float32, float64")
    block_seconds = args.block_seconds if args.block_seconds is not None else (0.06 if args.quick else 0.15)

    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    blas_limiter = threadpoolctl.threadpool_limits if threadpoolctl else None

    peaks, probe_note = ({}, "skipped (--no-peak)") if args.no_peak else measure_peak(max(threads_list))
    if args.kernel:
        fm.kernels.set_gemm_kernel(args.kernel)

    print("GEMM benchmark: fastmlp vs NumPy's BLAS")
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"versions: fastmlp {fm.__version__}, NumPy {np.__version__}, BLAS {blas_description(threadpoolctl)}")
    print(f"fastmlp:  GEMM kernel {fm.kernels.gemm_kernel()} (available: {', '.join(fm.kernels.available_gemm_kernels())})"
          f"{', forced by --kernel' if args.kernel else ''}; timed through "
          f"{'fm.kernels.gemm' if args.public_api else 'fastmlp._core.gemm'}")
    if peaks:
        for t, p in sorted(peaks.items()):
            print(f"peak:     {t} thread{'s' if t > 1 else ' '}: {p.best:.1f} GFLOP/s float32 "
                  f"(best of 5; median {p.median:.1f}; {p.isa} FMA chains; probe built with {probe_note}); "
                  f"float64 taken as {p.best / 2:.1f}")
    else:
        print(f"peak:     unknown — {probe_note}")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                      "OPENBLAS_L2_SIZE", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY",
                                      "FASTMLP_GEMM_KERNEL") if k in os.environ}
    if env:
        print("env:      " + " ".join(f"{k}={v}" for k, v in env.items()))
    if "OPENBLAS_CORETYPE" in env or "OPENBLAS_L2_SIZE" in env:
        print("note:     OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and slow NumPy's BLAS down; run with "
              "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE")
    if threadpoolctl is None:
        print("note:     without threadpoolctl NumPy's BLAS keeps its default thread count in every row")
    print(f"method:   median of {args.repeats} rounds; blocks of ≥ {block_seconds:g} s (≥ 3 calls) per "
          f"implementation, round-robin, {args.pause:g} s pause between blocks")

    rng = np.random.default_rng(0)
    cases = make_cases(args.quick)
    fm.set_num_threads(1)
    for line in validate(cases, dtypes, rng):
        print(f"check:    {line}")
    print()

    other_load = OtherLoad()
    blocks: list[Block] = []
    for threads in threads_list:
        for dtype in dtypes:
            for case in cases:
                a, b, c_fast = operands(case, dtype, rng)
                c_numpy = c_fast.copy()
                blocks.append(Block("fastmlp", dtype, threads, case, fastmlp_call(case, a, b, c_fast, args.public_api)))
                blocks.append(Block("numpy", dtype, threads, case, numpy_call(case, a, b, c_numpy)))
    for round_index in range(args.repeats):
        # Alternate which implementation goes first in a pair, so neither always follows the other.
        order = blocks if round_index % 2 == 0 else [x for i in range(0, len(blocks), 2) for x in (blocks[i + 1], blocks[i])]
        for block in order:
            run_block(block, block_seconds, blas_limiter)
            time.sleep(args.pause)

    header = ("dtype", "threads", "m×n×k", "layout", "fastmlp GFLOP/s", "% peak", "NumPy GFLOP/s", "% peak",
              "fastmlp ÷ NumPy", "target", "others")
    rows, misses = [], []
    share_rows = []
    for i in range(0, len(blocks), 2):
        fast, ref = blocks[i], blocks[i + 1]
        peak = peaks.get(fast.threads)
        peak_value = None if peak is None else (peak.best if fast.dtype == "float32" else peak.best / 2)
        share = (lambda g: f"{100 * g / peak_value:.0f} %") if peak_value else (lambda g: "—")
        ratio = fast.gflops / ref.gflops
        target = target_for(fast.case, fast.dtype)
        met = ratio >= target
        if not met:
            misses.append(f"{fast.dtype} {fast.threads}t {fast.case.label} {fast.case.layout}: {ratio:.2f}× (target {target:g}×)")
        if fast.dtype == "float32" and fast.threads == 1 and peak_value:
            share_rows.append((fast, fast.gflops / peak_value))
        rows.append((fast.dtype, str(fast.threads), fast.case.label, fast.case.layout, f"{fast.gflops:.1f}",
                     share(fast.gflops), f"{ref.gflops:.1f}", share(ref.gflops), f"{ratio:.2f}×",
                     f"≥ {target:g}× {'met' if met else 'MISSED'}",
                     f"{100 * statistics.median(fast.others + ref.others):.0f} %" if fast.others else "—"))
    print_table(header, rows)
    print("others: median share of the cores that other processes used during the row's blocks; "
          "above ~5 %, the row's 2-thread figures are suspect")
    print()
    print(f"load average after: {os.getloadavg()[0]:.2f}; other processes used {other_load.describe()} "
          "during the timed rounds (above ~5 %, 2-thread figures are suspect)")
    print(f"ratio targets (float32 ≥ {TARGET_SQUARE_F32:g}× squares, ≥ {TARGET_LAYER_F32:g}× layer shapes; "
          f"float64 ≥ {TARGET_F64:g}×): met in {len(rows) - len(misses)} of {len(rows)} rows")
    for miss in misses:
        print(f"  missed: {miss}")
    if share_rows:
        low = [(b, s) for b, s in share_rows if s < TARGET_PEAK_SHARE]
        print(f"1-thread float32 ≥ {100 * TARGET_PEAK_SHARE:.0f} % of peak: met in "
              f"{len(share_rows) - len(low)} of {len(share_rows)} shapes"
              + (f" (best {100 * max(s for _, s in share_rows):.0f} %)" if share_rows else ""))
        for b, s in low:
            print(f"  below: {b.case.label} {b.case.layout}: {100 * s:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
