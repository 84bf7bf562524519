"""What the benchmark scripts share: the machine's description (fastmlp.bench's, the one
implementation), tables, and a gauge of how much CPU other processes took while a benchmark
ran (the machines are shared)."""

from __future__ import annotations

import os
import time

from fastmlp.bench._machine import proc_stat, blas_description, cpu_model, gemm_config_description  # noqa: F401


def print_table(header, rows) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    stat = proc_stat()
    return None if stat is None else stat[0]


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
