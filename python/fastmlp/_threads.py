"""The thread count of fastmlp's kernels (process-wide)."""

from __future__ import annotations

import warnings

from . import _core
from ._validation import check_int

__all__ = ["set_num_threads", "get_num_threads"]


def get_num_threads() -> int:
    """Threads the kernels use: OMP_NUM_THREADS at import, else the usable cores, until set."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Sets the threads the kernels use (n >= 1). Results do not depend on it.

    In a process forked after fastmlp ran threads (multiprocessing's default on
    Linux), GNU OpenMP cannot start threads again: such a child stays at one
    thread and a request for more gives a RuntimeWarning.
    """
    n = check_int(n, "n", minimum=1)
    if not _core.set_num_threads(n):
        reason = (
            "this process was forked after fastmlp had started its threads"
            if _core.in_forked_child()
            else "fastmlp was built without OpenMP"
        )
        warnings.warn(f"set_num_threads({n}) ignored: {reason}; fastmlp runs on one thread", RuntimeWarning,
                      stacklevel=2)
