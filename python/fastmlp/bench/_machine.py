"""The machine a benchmark runs on: its CPU, its measured FMA peak, and how much of it other
processes took (the machines that run benchmarks are often shared, or virtual)."""

from __future__ import annotations

import os
import platform
import time

BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # workarounds that slow a current NumPy down


def cpu_model() -> str:
    """The CPU's model name with its vendor, family, model and stepping, from /proc/cpuinfo.

    The name alone can be as vague as "AMD EPYC" (virtual machines often trim it); family and
    model tell the micro-architecture (Intel family 6 model 85 is Skylake-SP / Cascade Lake,
    AMD family 25 model 17 is Zen 4), and a GEMM figure means little without it."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" not in fields:
        return name
    return (f"{name} ({fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')} "
            f"stepping {fields.get('stepping', '?')})")


def cores() -> int:
    """The cores this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gemm_config_description(core) -> str:
    """fastmlp's current GEMM configuration (``core.gemm_config()``, core being fastmlp._core) in
    one line: name, source, reason, then per dtype MR×NR, KC, MC (when given), NC and prefetch."""
    if not hasattr(core, "gemm_config"):
        return "unknown (this build has no fastmlp._core.gemm_config)"
    config = core.gemm_config()
    head = f"{config.get('name', '?')} (source {config.get('source', '?')}"
    if config.get("kernel"):
        head += f", kernel {config['kernel']}"
    head += f": {config['reason']})" if config.get("reason") else ")"
    parts = [head]
    for dtype in ("float32", "float64"):
        blocking = config.get(dtype)
        if not isinstance(blocking, dict):
            continue
        text = f"{dtype} {blocking.get('mr', '?')}×{blocking.get('nr', '?')}"
        for key in ("kc", "mc", "nc"):
            if key in blocking:
                text += f", {key} {blocking[key]}"
        if "prefetch" in blocking:
            prefetch = blocking["prefetch"]
            text += f", prefetch {('on' if prefetch else 'off') if isinstance(prefetch, bool) else prefetch}"
        extra = [f"{k} {v}" for k, v in blocking.items() if k not in ("mr", "nr", "kc", "mc", "nc", "prefetch")]
        parts.append(", ".join([text, *extra]))
    return "; ".join(parts)


def blas_description(threadpoolctl) -> str:
    """The BLAS libraries loaded in this process (threadpoolctl's view), or why unknown."""
    if threadpoolctl is None:
        return "(threadpoolctl not installed: BLAS unknown)"
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture') or ''}".rstrip()
                     + f" ({p.get('filepath', '').rsplit('/', 2)[-2] if p.get('filepath') else '?'})"
                     for p in pools) or "(no BLAS found)"


# ---- other processes' share of the CPU -------------------------------------------------------------
def _proc_stat() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of all processes since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, (fields[7] if len(fields) > 7 else 0) / tick


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Taken:
    """How much of the CPU that a timed block needed others took while it ran.

    Others' busy time (everything /proc/stat counts busy, the hypervisor's steal included, minus
    this process's own) is charged against the block only where it exceeds the cores the block
    leaves idle: a 1-thread block on 2 cores loses nothing to one other busy thread. The share is
    that excess over the block's threads × wall time: 0 on a quiet machine, 1 when another
    process had the block's every core. None where /proc/stat is not readable."""

    def __init__(self, threads: int, machine_cores: int | None = None):
        self.threads = threads
        self.cores = machine_cores or cores()
        self.start()

    def start(self) -> None:
        self.stat0, self.own0, self.wall0 = _proc_stat(), _own_seconds(), time.perf_counter()

    def share(self) -> float | None:
        stat = _proc_stat()
        if stat is None or self.stat0 is None:
            return None
        wall = time.perf_counter() - self.wall0
        if wall <= 0:
            return 0.0
        others = (stat[0] - self.stat0[0]) - (_own_seconds() - self.own0)
        spare = max(0, self.cores - self.threads) * wall
        return min(1.0, max(0.0, others - spare) / (min(self.threads, self.cores) * wall))


# ---- probes built into the extension ----------------------------------------------------------------
def fma_peak(dtype: str, threads: int, seconds: float = 0.2, trials: int = 3) -> dict | None:
    """The machine's FMA peak in GFLOP/s on ``threads`` threads (fastmlp._core.fma_peak: the best
    of ``trials`` runs of independent FMA chains on vector registers), or None on a build without
    the probe."""
    from fastmlp import _core

    if not hasattr(_core, "fma_peak"):
        return None
    return _core.fma_peak(dtype, threads, seconds, trials)


def noise(seconds: float = 0.5) -> dict | None:
    """Time stolen from spinning threads, one per core, over ``seconds`` (fastmlp._core.spin_probe:
    any gap between two clock reads above 20 µs counts): the share of the machine that another
    process or the hypervisor took. None on a build without the probe."""
    from fastmlp import _core

    if not hasattr(_core, "spin_probe"):
        return None
    return _core.spin_probe(cores(), seconds, 20.0)
