"""The twin of cpp/src/gemm/ (gemm.cpp and its per-ISA kernels): one matrix product."""

from __future__ import annotations

import numpy as np

from .._validation import common_float_dtype as _float_dtype


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """C = alpha · op(a) · op(b) + beta · C (beta ignored when c is None; c updated in place)."""
    dtype = _float_dtype(a, b) if c is None else _float_dtype(a, b, c)
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if c is None:
        return (dtype.type(alpha) * product).astype(dtype)
    c[...] = dtype.type(alpha) * product + (dtype.type(beta) * c if beta != 0 else 0)
    return c
