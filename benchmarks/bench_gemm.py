"""fastmlp's GEMM beside NumPy's BLAS (OpenBLAS) and PyTorch's (MKL): GFLOP/s, % of the
machine's FMA peak, ratios.

    python benchmarks/bench_gemm.py [--set default|issue10] [--config NAME[,NAME...]] [--quick]
                                    [--kernel avx512|avx2|portable] [--threads 1,2] [--dtypes float32]
                                    [--repeats 5] [--block-seconds 0.15] [--public-api] [--no-peak]
                                    [--skip-torch]

Shapes (m×n×k, C(m,n) = op(A)(m,k) · op(B)(k,n)), in two sets:
  default  squares 256, 512, 1024, 2048 (A·B), and the products of a dense layer with batch
           B = 128 and widths I → O of 256→256, 512→512, 1024→1024, in the three layouts a
           layer uses:
             forward       Z  = X · Wᵀ     m = B, n = O, k = I   (trans_b: W is (O, I))
             input grad    dX = dY · W     m = B, n = I, k = O
             weight grad   dW = dYᵀ · X    m = O, n = I, k = B   (trans_a: dY is (B, O))
           float32 and float64, on 1 and 2 threads.
  issue10  issue 10's shapes, float32: squares 512, 1024, 2048 and mnist-mlp's X·Wᵀ 128×512×784,
           dYᵀ·X 512×784×128, dY·W 128×512×256 on 1 thread; wide's X·Wᵀ 256×4096×4096 on 2
           threads (--threads, when given, applies to every shape instead). Its targets are
           printed as met / missed lines: ≥ 1.0× OpenBLAS on each shape, geometric mean
           ≥ 1.05×, ≥ 0.95× MKL on each shape, ≥ 80 % of the peak on squares ≥ 1024.
Threads are set with fm.set_num_threads for fastmlp, threadpoolctl for NumPy's BLAS and
torch.set_num_threads for PyTorch.

NumPy runs np.matmul(op(A), op(B), out=C) on transposed views, so OpenBLAS gets the
same transposes without copies; PyTorch runs torch.matmul on the same arrays (torch.from_numpy,
transposed views, out=), which goes to MKL's sgemm/dgemm in PyTorch's x86 builds. fastmlp runs
its binding fastmlp._core.gemm, the kernel entry without the Python-side argument checks of
fm.kernels.gemm (those cost a few µs a call; --public-api times fm.kernels.gemm instead).
--config NAME forces fastmlp's GEMM configuration (fastmlp._core.set_gemm_config; "auto" is
the automatic choice); a comma list times each configuration as its own fastmlp row, in the
same round-robin, so configurations are compared in one run.

Method. The peak first: benchmarks/peak_probe.cpp is compiled (g++ -O2 -fopenmp with
-mavx512f, or -mavx2 -mfma, as the CPU has them; cached in the temp dir) and run on
1..T threads in its own process; the best of its trials is the peak (noise only
lowers it). float64's peak is taken as half of float32's. Then each (implementation,
dtype, threads, shape) is timed in its own block: warm-up calls, then calls until the
block has run --block-seconds (at least 3 calls); the block's time per call is one
sample. Blocks run round-robin, --repeats rounds, with a pause between blocks:
idle OpenBLAS and OpenMP threads spin for a while after each call, and a block that
starts while the other library's threads still spin runs many times slower. Each round
starts a shape's blocks at the next implementation, so none always follows another. The
figures are medians over the rounds; the ratios are fastmlp's GFLOP/s ÷ the peer's.

Run it with NumPy's BLAS unhindered:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import re
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
from bench_common import (OtherLoad, blas_description, cpu_model, gemm_config_description,  # noqa: E402
                          print_table)

PROBE_SOURCE = os.path.join(HERE, "peak_probe.cpp")

SQUARES = (256, 512, 1024, 2048)
SQUARES_QUICK = (256, 1024)
LAYERS = ((128, 256, 256), (128, 512, 512), (128, 1024, 1024))  # (batch, inputs, outputs)
LAYERS_QUICK = ((128, 256, 256), (128, 1024, 1024))

# Targets of the Speed issue (the default set): fastmlp ÷ NumPy, and the 1-thread share of the peak.
TARGET_SQUARE_F32 = 1.0
TARGET_LAYER_F32 = 1.15
TARGET_F64 = 0.9
TARGET_PEAK_SHARE = 0.85

# Issue 10's shapes and targets (float32): fastmlp ÷ OpenBLAS per shape and its geometric mean,
# fastmlp ÷ MKL per shape, and the share of the peak on squares of at least ISSUE10_PEAK_SQUARE.
ISSUE10_SQUARES = (512, 1024, 2048)
ISSUE10_SQUARES_QUICK = (512, 1024)
ISSUE10_TARGET_OPENBLAS = 1.0
ISSUE10_TARGET_GEOMEAN = 1.05
ISSUE10_TARGET_MKL = 0.95
ISSUE10_TARGET_PEAK_SHARE = 0.80
ISSUE10_PEAK_SQUARE = 1024
SETS = ("default", "issue10")


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
    group: str  # "square", "layer" or "wide"
    layout: str
    m: int
    n: int
    k: int
    trans_a: bool = False
    trans_b: bool = False
    threads: int | None = None  # the set's thread count for this shape; None: every --threads count

    @property
    def label(self) -> str:
        return f"{self.m}×{self.n}×{self.k}"

    @property
    def flop(self) -> float:
        return 2.0 * self.m * self.n * self.k


def layer_cases(batch: int, inputs: int, outputs: int, group: str = "layer", threads=None) -> list[Case]:
    """The three products of a dense layer (batch, inputs → outputs): forward, input and weight gradient."""
    where = f"({batch}, {inputs}→{outputs})"
    return [Case(group, f"fwd X·Wᵀ {where}", batch, outputs, inputs, trans_b=True, threads=threads),
            Case(group, f"dX dY·W {where}", batch, inputs, outputs, threads=threads),
            Case(group, f"dW dYᵀ·X {where}", outputs, inputs, batch, trans_a=True, threads=threads)]


def make_cases(set_name: str, quick: bool) -> list[Case]:
    if set_name == "issue10":
        squares = ISSUE10_SQUARES_QUICK if quick else ISSUE10_SQUARES
        cases = [Case("square", "A·B", s, s, s, threads=1) for s in squares]
        forward, _, weight_grad = layer_cases(128, 784, 512, threads=1)  # mnist-mlp's first layer
        input_grad = layer_cases(128, 512, 256, threads=1)[1]  # its second layer's dX
        wide_forward = layer_cases(256, 4096, 4096, group="wide", threads=2)[0]  # wide's middle layer
        return [*cases, forward, weight_grad, input_grad, wide_forward]
    cases = [Case("square", "A·B", s, s, s) for s in (SQUARES_QUICK if quick else SQUARES)]
    for batch, inputs, outputs in LAYERS_QUICK if quick else LAYERS:
        cases.extend(layer_cases(batch, inputs, outputs))
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


def torch_call(torch, case: Case, a, b, c):
    # Views of the same arrays: torch passes the transposes to the BLAS as flags, without copies.
    a_op = torch.from_numpy(a).T if case.trans_a else torch.from_numpy(a)
    b_op = torch.from_numpy(b).T if case.trans_b else torch.from_numpy(b)
    out = torch.from_numpy(c)
    return lambda: torch.matmul(a_op, b_op, out=out)


# ---- the peers --------------------------------------------------------------------------------
def numpy_blas_name(threadpoolctl) -> str:
    """The library under NumPy's matmul, for the column names: "OpenBLAS" in NumPy's wheels."""
    names = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}
    if threadpoolctl is None:
        return "NumPy"
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    # NumPy's own copy first (numpy.libs in the wheels); else a system BLAS NumPy was built against.
    pools.sort(key=lambda p: "numpy" not in (p.get("filepath") or ""))
    return names.get(pools[0].get("internal_api"), pools[0].get("internal_api")) if pools else "NumPy"


def load_torch(skip: bool):
    """(torch or None, its BLAS's column name, one line saying what torch.matmul runs on)."""
    if skip:
        return None, "MKL", "skipped (--skip-torch): the MKL columns show —"
    try:
        import torch
    except ImportError as error:
        return None, "MKL", f"not installed (import torch failed: {error}): the MKL columns show —"
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    blas = blas.group(1) if blas else "unknown"
    mkl = torch.backends.mkl.is_available()
    version = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    uses = (f"MKL {version.group(1) if version else '(version unknown)'}" if mkl
            else f"{blas} (no MKL in this build: the MKL columns time torch's own BLAS)")
    return torch, "MKL" if mkl else f"torch·{blas}", (
        f"{torch.__version__}, torch.matmul on {uses} (BLAS_INFO={blas}, CPU capability {capability}), "
        "threads by torch.set_num_threads")


# ---- fastmlp's GEMM configurations ---------------------------------------------------------------
def check_configs(names: list[str]) -> str | None:
    """Why --config cannot force these configurations, or None when it can."""
    if not hasattr(_core, "set_gemm_config"):
        return ("--config needs fastmlp._core.set_gemm_config, which this build of fastmlp lacks "
                "(it came with issue 10's per-CPU GEMM configurations); rebuild from a newer checkout")
    known = set(_core.gemm_configs()) | {"auto"} if hasattr(_core, "gemm_configs") else None
    for name in names:
        if known is not None and name not in known:
            return f"--config {name}: not a configuration this CPU runs (runnable: {', '.join(sorted(known))})"
        try:
            _core.set_gemm_config(name)
        except Exception as error:  # noqa: BLE001  (the binding's message names the problem)
            return f"--config {name}: {error}"
    _core.set_gemm_config("auto")
    return None


def use_config(name: str | None) -> None:
    if name is not None:
        _core.set_gemm_config(name)


# ---- timing -----------------------------------------------------------------------------------
@dataclass
class Block:
    impl: str  # "fastmlp", "numpy" or "torch"
    dtype: str
    threads: int
    case: Case
    call: object
    config: str | None = None  # fastmlp's forced GEMM configuration (--config); None: the build's choice
    seconds: list[float] = field(default_factory=list)  # per call, one per round
    others: list[float] = field(default_factory=list)  # other processes' share of the cores, per block

    @property
    def gflops(self) -> float:
        return self.case.flop / statistics.median(self.seconds) / 1e9


def set_threads(block: Block, blas_limiter, torch):
    if block.impl == "fastmlp":
        fm.set_num_threads(block.threads)
        use_config(block.config)
        return None
    if block.impl == "torch":
        torch.set_num_threads(block.threads)
        return None
    return blas_limiter(limits=block.threads, user_api="blas") if blas_limiter else None


def run_block(block: Block, block_seconds: float, blas_limiter, torch) -> None:
    limiter = set_threads(block, blas_limiter, torch)
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


def validate(cases, dtypes, rng, configs, torch, torch_name) -> list[str]:
    """Max relative difference to NumPy per dtype (one product of each case), for fastmlp in each
    configuration and for torch: all columns must compute the same product."""
    lines = []
    for dtype in dtypes:
        worst = {config: (0.0, "") for config in configs}
        worst_torch = (0.0, "")
        for case in cases:
            a, b, c = operands(case, dtype, rng)
            expected = np.matmul(a.T if case.trans_a else a, b.T if case.trans_b else b)
            scale = max(float(np.max(np.abs(expected))), 1e-30)
            where = f"{case.label} {case.layout}"
            for config in configs:
                use_config(config)
                _core.gemm(a, b, c, 1.0, 0.0, case.trans_a, case.trans_b)
                diff = float(np.max(np.abs(c.astype(np.float64) - expected))) / scale
                worst[config] = max(worst[config], (diff, where), key=lambda x: x[0])
            if torch is not None:
                torch_call(torch, case, a, b, c)()
                diff = float(np.max(np.abs(c.astype(np.float64) - expected))) / scale
                worst_torch = max(worst_torch, (diff, where), key=lambda x: x[0])
        tolerance = 1e-4 if dtype == "float32" else 1e-12
        named = [(fastmlp_name(config), result) for config, result in worst.items()]
        if torch is not None:
            named.append((f"{torch_name} (torch)", worst_torch))
        for name, (diff, where) in named:
            lines.append(f"{dtype}: max |{name} − NumPy| / max |NumPy| = {diff:.2e} ({where}) "
                         + ("ok" if diff <= tolerance else f"EXCEEDS {tolerance:g}"))
    return lines


def time_rounds(groups: list[list[Block]], repeats: int, block_seconds: float, pause: float, blas_limiter,
                torch) -> None:
    for round_index in range(repeats):
        for group in groups:
            # Rotate who goes first in a shape's blocks, so no implementation always follows another.
            shift = round_index % len(group)
            for block in group[shift:] + group[:shift]:
                run_block(block, block_seconds, blas_limiter, torch)
                time.sleep(pause)


# ---- reporting --------------------------------------------------------------------------------
def target_for(case: Case, dtype: str) -> float:
    if dtype == "float64":
        return TARGET_F64
    return TARGET_SQUARE_F32 if case.group == "square" else TARGET_LAYER_F32


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class Row:
    """One fastmlp block and the peers' blocks of the same shape, dtype and threads."""
    fast: Block
    numpy: Block
    torch: Block | None
    peak: float | None  # GFLOP/s of the row's dtype and threads

    @property
    def where(self) -> str:
        return f"{self.fast.case.label} {self.fast.case.layout}, {self.fast.threads}t"

    @property
    def to_numpy(self) -> float:
        return self.fast.gflops / self.numpy.gflops

    @property
    def to_torch(self) -> float | None:
        return None if self.torch is None else self.fast.gflops / self.torch.gflops

    def share(self, block: Block | None) -> str:
        return "—" if block is None or not self.peak else f"{100 * block.gflops / self.peak:.0f} %"


def fastmlp_name(config: str | None) -> str:
    return "fastmlp" if config is None else f"fastmlp ({config})"


def summary_lines(rows: list[Row], numpy_name: str, torch_name: str) -> list[str]:
    """Geometric mean and minimum of fastmlp ÷ each peer, per fastmlp configuration and dtype."""
    lines = []
    for config in dict.fromkeys(r.fast.config for r in rows):
        for dtype in dict.fromkeys(r.fast.dtype for r in rows):
            mine = [r for r in rows if r.fast.config == config and r.fast.dtype == dtype]
            parts = []
            for peer, ratio in ((numpy_name, lambda r: r.to_numpy), (torch_name, lambda r: r.to_torch)):
                if mine[0].torch is None and peer == torch_name:
                    parts.append(f"÷ {peer} —")
                    continue
                low = min(mine, key=ratio)
                parts.append(f"÷ {peer} geometric mean {geometric_mean([ratio(r) for r in mine]):.2f}×, "
                             f"min {ratio(low):.2f}× ({low.where})")
            lines.append(f"summary: {fastmlp_name(config)}, {dtype}, {len(mine)} shapes: " + "; ".join(parts))
    return lines


def met_word(met: bool) -> str:
    return "met" if met else "MISSED"


def verdict(met: bool) -> str:
    """The left column of issue 10's target lines."""
    return f"{met_word(met):6}"


def issue10_lines(rows: list[Row], numpy_name: str, torch_name: str, quick: bool) -> list[str]:
    """Issue 10's targets on the float32 rows, per fastmlp configuration: one met / MISSED line each."""
    lines = []
    for config in dict.fromkeys(r.fast.config for r in rows):
        mine = [r for r in rows if r.fast.config == config and r.fast.dtype == "float32"]
        if not mine:
            continue
        lines.append(f"issue 10 targets, {fastmlp_name(config)}, float32, {len(mine)} shapes:")
        low = min(mine, key=lambda r: r.to_numpy)
        missed = [r for r in mine if r.to_numpy < ISSUE10_TARGET_OPENBLAS]
        lines.append(f"  {verdict(not missed)} ≥ {ISSUE10_TARGET_OPENBLAS:g}× {numpy_name} on every shape: "
                     f"min {low.to_numpy:.2f}× ({low.where})"
                     + (f"; below on {len(missed)}: " + ", ".join(f"{r.where} {r.to_numpy:.2f}×" for r in missed)
                        if missed else ""))
        mean = geometric_mean([r.to_numpy for r in mine])
        lines.append(f"  {verdict(mean >= ISSUE10_TARGET_GEOMEAN)} geometric mean ≥ {ISSUE10_TARGET_GEOMEAN:g}× "
                     f"{numpy_name}: {mean:.2f}×")
        if mine[0].torch is None:
            lines.append(f"  n/a    ≥ {ISSUE10_TARGET_MKL:g}× {torch_name} on every shape: not measured "
                         "(PyTorch skipped or not installed)")
        else:
            low = min(mine, key=lambda r: r.to_torch)
            missed = [r for r in mine if r.to_torch < ISSUE10_TARGET_MKL]
            lines.append(f"  {verdict(not missed)} ≥ {ISSUE10_TARGET_MKL:g}× {torch_name} on every shape: "
                         f"min {low.to_torch:.2f}× ({low.where}), geometric mean "
                         f"{geometric_mean([r.to_torch for r in mine]):.2f}×"
                         + (f"; below on {len(missed)}: " + ", ".join(f"{r.where} {r.to_torch:.2f}×" for r in missed)
                            if missed else ""))
        squares = [r for r in mine if r.fast.case.group == "square" and r.fast.case.m >= ISSUE10_PEAK_SQUARE]
        target = f"≥ {100 * ISSUE10_TARGET_PEAK_SHARE:.0f} % of the peak on squares ≥ {ISSUE10_PEAK_SQUARE}"
        if not squares or not all(r.peak for r in squares):
            lines.append(f"  n/a    {target}: not measured (no such square, or the peak is unknown)")
        else:
            shares = [(r, r.fast.gflops / r.peak) for r in squares]
            lines.append(f"  {verdict(all(s >= ISSUE10_TARGET_PEAK_SHARE for _, s in shares))} {target}: "
                         + ", ".join(f"{r.fast.case.m}² {r.fast.threads}t {100 * s:.0f} %" for r, s in shares)
                         + (" (--quick leaves out 2048)" if quick else ""))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="default", choices=SETS,
                        help="shapes: default (the Speed issue's), issue10 (issue 10's, with its targets)")
    parser.add_argument("--config", default=None,
                        help="force fastmlp's GEMM configuration (fastmlp._core.gemm_configs(); auto: the "
                             "automatic choice); a comma list times each as its own fastmlp row")
    parser.add_argument("--quick", action="store_true",
                        help="fewer shapes and shorter blocks (default set: about a minute; issue10: no 2048²)")
    parser.add_argument("--kernel", default=None, help="force a fastmlp GEMM kernel (fm.kernels.available_gemm_kernels())")
    parser.add_argument("--threads", default=None,
                        help="thread counts, comma-separated (default 1,2; issue10: 1, the wide product 2)")
    parser.add_argument("--dtypes", default=None, help="default float32,float64 (issue10: float32)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all blocks; medians are shown (default 5)")
    parser.add_argument("--block-seconds", type=float, default=None,
                        help="time per block (default 0.15, 0.06 with --quick)")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="sleep between blocks, so idle threads stop spinning (default 0.1 s)")
    parser.add_argument("--public-api", action="store_true", help="time fm.kernels.gemm, not fastmlp._core.gemm")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak probe")
    parser.add_argument("--skip-torch", action="store_true", help="leave PyTorch (the MKL columns) out")
    args = parser.parse_args(argv)
    issue10 = args.set == "issue10"
    threads_list = None if args.threads is None and issue10 else [int(t) for t in (args.threads or "1,2").split(",")]
    dtypes = [d.strip() for d in (args.dtypes or ("float32" if issue10 else "float32,float64")).split(",")]
    if (args.repeats < 1 or any(t < 1 for t in threads_list or ())
            or not set(dtypes) <= {"float32", "float64"}):
        parser.error("--repeats and --threads must be positive; --dtypes from float32, float64")
    chosen_config = gemm_config_description(_core)  # before --config's checks switch configurations
    configs: list[str | None] = [None]
    if args.config is not None:
        configs = [name.strip() for name in args.config.split(",") if name.strip()]
        problem = check_configs(configs) if configs else "--config needs at least one configuration name"
        if problem:
            parser.error(problem)
    block_seconds = args.block_seconds if args.block_seconds is not None else (0.06 if args.quick else 0.15)

    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    blas_limiter = threadpoolctl.threadpool_limits if threadpoolctl else None
    torch, torch_name, torch_note = load_torch(args.skip_torch)
    numpy_name = numpy_blas_name(threadpoolctl)
    if numpy_name == torch_name:  # NumPy on MKL too: tell the columns apart
        numpy_name, torch_name = f"NumPy·{numpy_name}", f"torch·{torch_name}"

    cases = make_cases(args.set, args.quick)
    max_threads = max(threads_list or [c.threads for c in cases])
    peaks, probe_note = ({}, "skipped (--no-peak)") if args.no_peak else measure_peak(max_threads)
    if args.kernel:
        fm.kernels.set_gemm_kernel(args.kernel)

    print(f"GEMM benchmark ({args.set} set): fastmlp vs NumPy's BLAS ({numpy_name})"
          + ("" if torch is None else f" and PyTorch's ({torch_name})"))
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"versions: fastmlp {fm.__version__}, NumPy {np.__version__}, BLAS {blas_description(threadpoolctl)}")
    print(f"torch:    {torch_note}")
    print(f"fastmlp:  GEMM kernel {fm.kernels.gemm_kernel()} (available: {', '.join(fm.kernels.available_gemm_kernels())})"
          f"{', forced by --kernel' if args.kernel else ''}; timed through "
          f"{'fm.kernels.gemm' if args.public_api else 'fastmlp._core.gemm'}")
    print(f"config:   {chosen_config}")
    if hasattr(_core, "gemm_configs"):
        print(f"          runnable here: {', '.join(_core.gemm_configs())} (--config NAME forces one)")
    for config in configs:
        if config is not None:
            use_config(config)
            print(f"--config {config}: {gemm_config_description(_core)}")
    if peaks:
        for t, p in sorted(peaks.items()):
            print(f"peak:     {t} thread{'s' if t > 1 else ' '}: {p.best:.1f} GFLOP/s float32 "
                  f"(best of 5; median {p.median:.1f}; {p.isa} FMA chains; probe built with {probe_note}); "
                  f"float64 taken as {p.best / 2:.1f}")
    else:
        print(f"peak:     unknown — {probe_note}")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_ENABLE_INSTRUCTIONS",
                                      "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "FASTMLP_GEMM_KERNEL",
                                      "FASTMLP_GEMM_CONFIG") if k in os.environ}
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
    fm.set_num_threads(1)
    for line in validate(cases, dtypes, rng, configs, torch, torch_name):
        print(f"check:    {line}")
    print()

    other_load = OtherLoad()
    groups: list[list[Block]] = []
    for threads in threads_list or [None]:
        for dtype in dtypes:
            for case in cases:
                t = threads or case.threads
                a, b, c = operands(case, dtype, rng)
                group = [Block("fastmlp", dtype, t, case, fastmlp_call(case, a, b, c.copy(), args.public_api),
                               config) for config in configs]
                group.append(Block("numpy", dtype, t, case, numpy_call(case, a, b, c.copy())))
                if torch is not None:
                    group.append(Block("torch", dtype, t, case, torch_call(torch, case, a, b, c.copy())))
                groups.append(group)
    try:
        time_rounds(groups, args.repeats, block_seconds, args.pause, blas_limiter, torch)
    finally:
        if configs != [None]:
            _core.set_gemm_config("auto")

    rows: list[Row] = []
    for group in groups:
        numpy_block = next(b for b in group if b.impl == "numpy")
        torch_block = next((b for b in group if b.impl == "torch"), None)
        peak = peaks.get(numpy_block.threads)
        peak_value = None if peak is None else (peak.best if numpy_block.dtype == "float32" else peak.best / 2)
        rows.extend(Row(b, numpy_block, torch_block, peak_value) for b in group if b.impl == "fastmlp")

    header = ("dtype", "threads", "m×n×k", "layout", *(("config",) if configs != [None] else ()),
              "fastmlp GFLOP/s", "% peak", f"{numpy_name} GFLOP/s", "% peak", f"{torch_name} GFLOP/s", "% peak",
              f"fastmlp ÷ {numpy_name}", f"fastmlp ÷ {torch_name}", "target", "others")
    table, misses, share_rows = [], [], []
    for row in rows:
        fast, case = row.fast, row.fast.case
        if issue10:
            if fast.dtype != "float32":
                mark = "—"
            else:
                mark = (f"≥ {ISSUE10_TARGET_OPENBLAS:g}× {numpy_name} "
                        f"{met_word(row.to_numpy >= ISSUE10_TARGET_OPENBLAS)}")
                if row.torch is not None:
                    met_mkl = met_word(row.to_torch >= ISSUE10_TARGET_MKL)
                    mark += f"; ≥ {ISSUE10_TARGET_MKL:g}× {torch_name} {met_mkl}"
        else:
            target = target_for(case, fast.dtype)
            met = row.to_numpy >= target
            if not met:
                misses.append(f"{fast.dtype} {fast.threads}t {case.label} {case.layout}"
                              f"{'' if fast.config is None else f' ({fast.config})'}: {row.to_numpy:.2f}× "
                              f"(target {target:g}×)")
            if fast.dtype == "float32" and fast.threads == 1 and row.peak:
                share_rows.append((fast, fast.gflops / row.peak))
            mark = f"≥ {target:g}× {'met' if met else 'MISSED'}"
        others = fast.others + row.numpy.others + (row.torch.others if row.torch else [])
        table.append((fast.dtype, str(fast.threads), case.label, case.layout,
                      *((fast.config,) if configs != [None] else ()),
                      f"{fast.gflops:.1f}", row.share(fast), f"{row.numpy.gflops:.1f}", row.share(row.numpy),
                      "—" if row.torch is None else f"{row.torch.gflops:.1f}", row.share(row.torch),
                      f"{row.to_numpy:.2f}×", "—" if row.torch is None else f"{row.to_torch:.2f}×", mark,
                      f"{100 * statistics.median(others):.0f} %" if others else "—"))
    print_table(header, table)
    print("others: median share of the cores that other processes used during the row's blocks; "
          "above ~5 %, the row's 2-thread figures are suspect")
    print()
    print(f"load average after: {os.getloadavg()[0]:.2f}; other processes used {other_load.describe()} "
          "during the timed rounds (above ~5 %, 2-thread figures are suspect)")
    for line in summary_lines(rows, numpy_name, torch_name):
        print(line)
    if issue10:
        for line in issue10_lines(rows, numpy_name, torch_name, args.quick):
            print(line)
        return 0
    print(f"ratio targets (float32 ≥ {TARGET_SQUARE_F32:g}× squares, ≥ {TARGET_LAYER_F32:g}× layer shapes; "
          f"float64 ≥ {TARGET_F64:g}×; fastmlp ÷ {numpy_name}): met in {len(table) - len(misses)} of {len(table)} "
          "rows")
    for miss in misses:
        print(f"  missed: {miss}")
    if share_rows:
        low = [(b, s) for b, s in share_rows if s < TARGET_PEAK_SHARE]
        print(f"1-thread float32 ≥ {100 * TARGET_PEAK_SHARE:.0f} % of peak: met in "
              f"{len(share_rows) - len(low)} of {len(share_rows)} shapes"
              + (f" (best {100 * max(s for _, s in share_rows):.0f} %)" if share_rows else ""))
        for b, s in low:
            print(f"  below: {b.case.label} {b.case.layout}{'' if b.config is None else f' ({b.config})'}: "
                  f"{100 * s:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
