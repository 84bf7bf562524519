"""Targets for each loss, as the engine reads them: a dense (n_samples, n_outputs)
array of the network's dtype. Classification labels become one-hot rows here,
once, before training starts; every malformed target is refused with a message
that names what is wrong."""

from __future__ import annotations

import numpy as np

from ._validation import as_numeric_array, check_finite, check_targets


def labels_to_one_hot(labels: np.ndarray, n_classes: int, name: str, dtype: np.dtype) -> np.ndarray:
    """Integer class labels (n,) in 0..n_classes-1 as one-hot rows (n, n_classes)."""
    if labels.dtype.kind == "f":
        check_finite(labels, name)
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"{name}: class labels must be whole numbers 0..{n_classes - 1}; "
                             f"got non-integer values such as {float(labels[labels != np.round(labels)][0])!r}")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise ValueError(f"{name}: class labels must be in 0..{n_classes - 1} (the network has {n_classes} "
                         f"outputs); got {labels[bad][0].item()!r} ({int(bad.sum())} labels out of range)")
    one_hot = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    one_hot[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1
    return one_hot


def prepare_targets(value, name: str, n_samples: int, n_outputs: int, loss: str, dtype: np.dtype) -> np.ndarray:
    if loss == "cross_entropy":
        array = as_numeric_array(value, name)
        if array.ndim == 2 and array.shape[1] == 1 and n_outputs > 1:
            array = array.reshape(-1)
        if array.ndim == 1:
            if array.shape[0] != n_samples:
                raise ValueError(f"{name}: expected {n_samples} labels (as many as X), got {array.shape[0]}")
            return labels_to_one_hot(array, n_outputs, name, dtype)
        if array.ndim != 2 or array.shape[1] != n_outputs:
            raise ValueError(f"{name}: cross_entropy expects class labels of shape ({n_samples},) or one-hot rows "
                             f"of shape ({n_samples}, {n_outputs}); got shape {array.shape}")
        y = check_targets(array, name, n_samples, n_outputs, dtype)
        if (y < 0).any() or (y > 1).any():
            raise ValueError(f"{name}: one-hot (probability) rows must hold values in [0, 1]")
        sums = y.sum(axis=1, dtype=np.float64)
        off = np.abs(sums - 1) > 1e-4
        if off.any():
            row = int(np.argmax(off))
            raise ValueError(f"{name}: one-hot (probability) rows must sum to 1; row {row} sums to {sums[row]:.6g}"
                             f" ({int(off.sum())} rows off)")
        return y
    if loss == "binary_cross_entropy":
        y = check_targets(value, name, n_samples, n_outputs, dtype)
        if (y < 0).any() or (y > 1).any():
            raise ValueError(f"{name}: binary_cross_entropy expects labels 0/1 (or probabilities in [0, 1]); "
                             f"got values from {y.min()!r} to {y.max()!r}")
        return y
    return check_targets(value, name, n_samples, n_outputs, dtype)
