"""Checks at the Python boundary: every message names the argument, what was
expected and what came, and every check runs before any C++ does."""

from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """float32 or float64 as an np.dtype; anything else is a clear error."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dtype!r}") from error
    if resolved not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected 'float32' or 'float64', got {resolved.name!r}")
    return np.dtype(resolved.name)  # numpy's own object (an unpickled dtype is an equal other one)


def common_float_dtype(*arrays) -> np.dtype:
    """The dtype a kernel computes in: float32 when every input is float32, else float64."""
    return np.dtype(np.float32) if all(np.asarray(a).dtype == np.float32 for a in arrays) else np.dtype(np.float64)


def check_clip_value(clip_value) -> float:
    """A given clip_value as a float > 0 (None, meaning no clamping, is the caller's to handle)."""
    value = float(clip_value)
    if not value > 0:  # also rejects NaN
        raise ValueError(f"clip_value must be > 0 (or None for no clamping); got {clip_value!r}")
    return value


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum] (each bound when given) as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = [f">= {minimum}"] if minimum is not None else []
        bounds += [f"<= {maximum}"] if maximum is not None else []
        expected = " and ".join(bounds)
        raise ValueError(f"{name}: expected an integer {expected}, got {value}")
    return value


def check_positive_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return value


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {', '.join(choices)}; got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}; got {value!r}")
    return value


def as_numeric_array(value, name: str) -> np.ndarray:
    """np.asarray that refuses what is not numbers (strings, objects, complex)."""
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise ValueError(f"{name}: could not be read as a numeric array ({error})") from error
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name}: expected real numbers (a numeric array), got dtype {array.dtype!s}"
        )
    return array


def check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind != "f":
        return
    if not _all_finite(array):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: expected finite values, found {bad} NaN or inf")


def _all_finite(array: np.ndarray) -> bool:
    if array.size <= 1 << 16:  # small (one sample to predict): the quickest test
        if np.isfinite(array).all():
            return True
    else:
        # Large: no temporary the size of the data. A sum is finite when every
        # value is, unless finite values overflow it; then min and max decide.
        with np.errstate(all="ignore"):
            if math.isfinite(array.sum()):
                return True
    return bool(np.isfinite(array.min()) and np.isfinite(array.max()))


def as_finite(array: np.ndarray, name: str, dtype: np.dtype) -> np.ndarray:
    """``array`` as a C-contiguous array of ``dtype`` (no copy when it is one),
    refused when it holds NaN or inf, or finite values too large for ``dtype``
    (1e300 in float64 input would become inf in float32)."""
    dtype = np.dtype(dtype)
    if not (array.dtype.kind == "f" and array.dtype.itemsize > dtype.itemsize):
        check_finite(array, name)
        return np.ascontiguousarray(array, dtype=dtype)  # a widening cast cannot overflow
    with np.errstate(over="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if not _all_finite(converted):  # one scan: NaN and inf survive the cast
        check_finite(array, name)   # they were there before it: their own message
        overflowing = np.abs(array) > np.finfo(converted.dtype).max
        raise ValueError(
            f"{name}: {int(np.count_nonzero(overflowing))} values overflow {converted.dtype.name} (the network's "
            f"dtype holds magnitudes up to {float(np.finfo(converted.dtype).max):.4g}), such as "
            f"{float(array[overflowing].flat[0])!r}; scale the data or use a float64 network"
        )
    return converted


def check_samples(value, name: str, n_features: int, dtype: np.dtype) -> np.ndarray:
    """X as a C-contiguous (n_samples, n_features) array of `dtype`; no copy when it already is one."""
    array = as_numeric_array(value, name)
    if array.ndim != 2:
        hint = (
            f"; for a single feature use {name}.reshape(-1, 1), for a single sample {name}.reshape(1, -1)"
            if array.ndim == 1
            else ""
        )
        raise ValueError(
            f"{name}: expected a 2-D array of shape (n_samples, {n_features}), got {array.ndim}-D "
            f"shape {array.shape}{hint}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty array of shape {array.shape}")
    if array.shape[1] != n_features:
        raise ValueError(
            f"{name}: expected {n_features} features (the network's first layer size), "
            f"got shape {array.shape}"
        )
    return as_finite(array, name, dtype)


def check_targets(value, name: str, n_samples: int, n_outputs: int, dtype: np.dtype) -> np.ndarray:
    """y as a C-contiguous (n_samples, n_outputs) array; 1-D is accepted for one output."""
    array = as_numeric_array(value, name)
    if array.ndim == 1 and n_outputs == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(
            f"{name}: expected shape ({n_samples}, {n_outputs}), got {array.ndim}-D shape {array.shape}"
        )
    if array.shape[0] != n_samples:
        raise ValueError(
            f"{name}: expected {n_samples} samples (as many as X), got {array.shape[0]} (shape {array.shape})"
        )
    if array.shape[1] != n_outputs:
        raise ValueError(
            f"{name}: expected {n_outputs} outputs (the network's last layer size), got shape {array.shape}"
        )
    return as_finite(array, name, dtype)


def check_sample_weight(value, name: str, n_samples: int, dtype: np.dtype, *, allow_all_zero: bool = False):
    """Per-sample weights as a C-contiguous (n_samples,) array of ``dtype``: finite,
    >= 0 and (unless allowed) not all zero. None stays None; a scalar is that weight
    for every sample."""
    if value is None:
        return None
    array = as_numeric_array(value, name)
    if array.ndim == 0:
        array = np.full(n_samples, array)  # cast below, where an overflow is named
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise ValueError(f"{name}: expected one weight per sample, shape ({n_samples},), got shape {array.shape}")
    array = as_finite(array, name, dtype)
    if (array < 0).any():
        raise ValueError(f"{name}: weights must be >= 0, found {int((array < 0).sum())} negative, "
                         f"such as {float(array[array < 0][0])!r}")
    if not allow_all_zero and n_samples and not array.any():
        raise ValueError(f"{name}: all weights are zero; nothing would be learned or measured")
    return array


def check_real(value, name: str, low: float, high: float, *, low_open: bool = False,
               high_open: bool = False) -> float:
    """A finite real number in [low, high] (each end open when asked)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    return value


def check_rng_state(state, name: str) -> tuple:
    """((w0, w1, w2, w3), has_spare, spare) of a network's generator (xoshiro256**,
    random.hpp), checked: four words in [0, 2**64), not all zero (a state the generator
    never leaves), has_spare True or False, spare finite."""
    if not isinstance(state, (tuple, list)) or len(state) != 3:
        raise ValueError(f"{name}: expected ((w0, w1, w2, w3), has_spare, spare), got {state!r:.200}")
    words, has_spare, spare = state
    if not isinstance(words, (tuple, list)) or len(words) != 4:
        raise ValueError(f"{name} words: expected 4 integers, got {words!r:.200}")
    words = tuple(check_int(w, f"{name} words[{i}]", minimum=0, maximum=2**64 - 1) for i, w in enumerate(words))
    if not any(words):
        raise ValueError(f"{name} words: all four are zero, a state the generator never leaves")
    if not isinstance(has_spare, (bool, np.bool_)):
        raise TypeError(f"{name} has_spare: expected True or False, got {has_spare!r}")
    if isinstance(spare, (bool, np.bool_)) or not isinstance(spare, numbers.Real) or not math.isfinite(spare):
        raise ValueError(f"{name} spare: expected a finite number, got {spare!r:.200}")
    return words, bool(has_spare), float(spare)
