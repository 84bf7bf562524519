"""The machine a benchmark runs on: its CPU, its measured FMA peak, and how much of it other
processes took (the machines that run benchmarks are often shared, or virtual)."""

from __future__ import annotations

import os
import platform
import time

BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # workarounds that slow a current NumPy down


def cpu_model() -> str:
    """The CPU's model name with its vendor, family, model and stepping, from fastmlp's own CPU
    detection (``fastmlp._core.cpu_info()``, CPUID).

    The name alone can be as vague as "AMD EPYC" (virtual machines often trim it); family and
    model tell the micro-architecture (Intel family 6 model 85 is Skylake-SP / Cascade Lake,
    AMD family 25 model 17 is Zen 4), and a GEMM figure means little without it. Without CPUID
    (arm64 and others) the platform's name."""
    from fastmlp import _core

    info = _core.cpu_info()
    name = info["brand"] or platform.processor() or platform.machine()
    if not info["vendor"]:
        return name
    return f"{name} ({info['vendor']} family {info['family']} model {info['model']} stepping {info['stepping']})"


def cores() -> int:
    """The CPUs this process may run on (its affinity), else the machine's."""
    cpus = allowed_cpus()
    return len(cpus) if cpus else (os.cpu_count() or 1)


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
def allowed_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on (its affinity: taskset, a cgroup's cpuset), or None
    where the platform does not say."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def parse_proc_stat(text: str, cpus: frozenset[int] | None = None) -> tuple[float, float] | None:
    """(busy, steal) clock ticks since boot from the text of /proc/stat: of the CPUs in ``cpus``
    (their ``cpuN`` lines), or of the whole machine (the ``cpu`` line) when None. None when
    the text has none of them. Busy is user + nice + system + irq + softirq + steal: everything
    but idle and iowait."""
    busy = steal = 0
    found = False
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        if (name == "cpu") != (cpus is None):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in values[:8]]
        fields += [0] * (8 - len(fields))
        busy += sum(fields) - fields[3] - fields[4]
        steal += fields[7]
        found = True
    return (busy, steal) if found else None


def proc_stat(cpus: frozenset[int] | None = None) -> tuple[float, float] | None:
    """(busy, steal) CPU seconds since boot of ``cpus`` (default: the whole machine), from
    Linux's /proc/stat, or None where it cannot be read."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            ticks = parse_proc_stat(f.read(), cpus)
    except (OSError, ValueError):
        return None
    if ticks is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return ticks[0] / tick, ticks[1] / tick


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Taken:
    """How much of the CPU that a timed block needed others took while it ran.

    Others' busy time on the CPUs this process may use (what /proc/stat counts busy there, the
    hypervisor's steal included, minus this process's own) is charged against the block only
    where it exceeds the CPUs the block leaves idle: a 1-thread block on 2 CPUs loses nothing
    to one other busy thread. Both counts tick in 1/CLK_TCK s, rounded per CPU, so two ticks a
    CPU are forgiven. The share is the excess over the block's threads × wall time: 0 on a
    quiet machine, 1 when another process had all the block's CPUs. None where /proc/stat
    cannot be read."""

    def __init__(self, threads: int):
        self.threads = threads
        self.cpus = allowed_cpus()
        self.cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        self.tolerance = 2 * self.cores / os.sysconf("SC_CLK_TCK")
        self.start()

    def start(self) -> None:
        self.stat0, self.own0, self.wall0 = proc_stat(self.cpus), _own_seconds(), time.perf_counter()

    def share(self) -> float | None:
        stat = proc_stat(self.cpus)
        if stat is None or self.stat0 is None:
            return None
        return taken_share(stat[0] - self.stat0[0], _own_seconds() - self.own0, time.perf_counter() - self.wall0,
                           self.threads, self.cores, self.tolerance)


def taken_share(busy: float, own: float, wall: float, threads: int, cores: int, tolerance: float) -> float:
    """Taken's arithmetic: of ``busy`` CPU seconds on ``cores`` CPUs over ``wall`` seconds, ``own``
    were ours; what others used beyond the ``tolerance`` and the CPUs our ``threads`` left idle,
    as a share of the CPU time our threads needed, in [0, 1]."""
    if wall <= 0:
        return 0.0
    others = busy - own - tolerance
    spare = max(0, cores - threads) * wall
    return min(1.0, max(0.0, others - spare) / (min(threads, cores) * wall))


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
    return _core.spin_probe(min(cores(), 1024), seconds, 20.0)
