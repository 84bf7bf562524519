"""What the kernel tests share: dtype names, tolerances in ulps, a closeness assertion that
prints the largest difference, and views of one array in several memory layouts."""

from __future__ import annotations

import numpy as np

LAYOUTS = ("contiguous", "transposed", "strided", "negative")
ATOL_ULPS = 16  # the "tiny atol" of the elementwise kernels, in units of eps · scale


def dtype_id(dtype) -> str:
    return np.dtype(dtype).name


def eps_of(dtype) -> float:
    return float(np.finfo(dtype).eps)


def max_abs(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmax(np.abs(x))) if x.size else 0.0


def assert_close(actual, expected, *, rtol, atol=0.0, what="result"):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_diff = float(np.nanmax(diff)) if diff.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=atol,
        err_msg=f"{what}: max |diff| = {max_diff:.3e} (rtol {rtol:g}, atol {atol:.3e})",
    )


def with_layout(values: np.ndarray, layout: str) -> np.ndarray:
    """A view equal to ``values`` whose memory is laid out as ``layout`` says."""
    values = np.asarray(values)
    if layout == "contiguous":
        return np.ascontiguousarray(values)
    if layout == "transposed":  # for 2-D, the transpose of a C-contiguous array (Fortran order)
        return np.ascontiguousarray(values.T).T
    if layout == "strided":  # every 2nd / 3rd element of a bigger array whose gaps hold NaN
        steps = tuple(2 + axis % 2 for axis in range(values.ndim))
        big = np.full(tuple(s * n for s, n in zip(steps, values.shape)), np.nan, dtype=values.dtype)
        view = big[tuple(slice(None, None, s) for s in steps)]
        view[...] = values
        return view
    if layout == "negative":  # every axis reversed: negative strides
        flip = tuple(slice(None, None, -1) for _ in range(values.ndim))
        return values[flip].copy()[flip]
    raise ValueError(layout)
