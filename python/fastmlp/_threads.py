"""The thread count of fastmlp's kernels (process-wide)."""

from __future__ import annotations

from . import _core
from ._validation import check_int

__all__ = ["set_num_threads", "get_num_threads"]

MAX_THREADS: int = _core.MAX_THREADS  # the pool's max_threads (threading.hpp)


def get_num_threads() -> int:
    """Threads the kernels use: OMP_NUM_THREADS at import, else the usable CPUs, until set."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Sets the threads the kernels use (1 <= n <= 1024), for the whole process.

    Results do not depend on it. fastmlp's pool never waits at a barrier for a
    thread that has no CPU, so asking for more threads than are free costs
    little; and a forked child (multiprocessing's default on Linux) starts its
    own threads afresh.
    """
    _core.set_num_threads(check_int(n, "n", minimum=1, maximum=MAX_THREADS))
