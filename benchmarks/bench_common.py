"""What the benchmark scripts share: the machine's description, tables, and a gauge of
how much CPU other processes took while a benchmark ran (the machines are shared)."""

from __future__ import annotations

import os
import platform
import time


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


def gemm_config_description(core) -> str:
    """fastmlp's current GEMM configuration (`core.gemm_config()`, core being fastmlp._core) in one
    line: name, source, reason, then per dtype MR×NR, KC, MC (when given), NC and prefetch.
    "unknown" for a build older than the call."""
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
    if threadpoolctl is None:
        return "(threadpoolctl not installed: BLAS unknown, its threads not set)"
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture') or ''} "
                     f"({p.get('filepath', '').rsplit('/', 2)[-2] if p.get('filepath') else '?'})"
                     for p in pools) or "(no BLAS found)"


def print_table(header, rows) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Average share of the machine's cores that *other* processes used between start() and
    share(): all busy CPU time minus this process's own (and its waited-for children's)."""

    def __init__(self):
        self.start()

    def start(self) -> None:
        self.busy0, self.own0, self.wall0 = _busy_seconds(), self._own(), time.perf_counter()

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def share(self) -> float | None:
        busy = _busy_seconds()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.wall0
        others = (busy - self.busy0) - (self._own() - self.own0)
        return max(0.0, others / (wall * (os.cpu_count() or 1)))

    def describe(self) -> str:
        share = self.share()
        return "unknown (no /proc/stat)" if share is None else f"{100 * share:.0f} % of the cores"


def time_block(f, block_seconds: float) -> float:
    """µs per call of f, called again and again for at least block_seconds (after one
    warm-up call): one sample of a round-robin benchmark."""
    f()
    calls, start = 0, time.perf_counter_ns()
    while True:
        f()
        calls += 1
        elapsed = time.perf_counter_ns() - start
        if elapsed >= block_seconds * 1e9:
            return elapsed / calls / 1e3
