"""The twin of the learning-rate schedules, which the engine keeps in
cpp/src/optimizer.cpp (Schedule::factor, beside the update rules it scales).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

# The engine's schedule kinds in its enum's order; the reference's own copy (tests/test_names.py).
SCHEDULE_KINDS = ("constant", "step", "exponential", "cosine")
_SCHEDULE_KEYS = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("total_steps", "min_factor"),
}


def _non_negative_int(value, what) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{what} must be >= 0; got {value}")
    return value


def _schedule_gamma(spec) -> float:
    if "gamma" not in spec:
        raise ValueError(f"schedule {spec['kind']!r} needs 'gamma'")
    gamma = float(spec["gamma"])
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"schedule: gamma must be positive and finite; got {gamma!r}")
    return gamma


def schedule_factor(spec, step) -> float:
    """The factor of the base learning rate at update t = ``step`` (0-based: 0 for the first update).

    ``spec`` is None (constant) or a dict with "kind" in :data:`SCHEDULE_KINDS` and an
    optional "warmup_steps" W (int ≥ 0, default 0). If t < W, the factor is (t + 1) / W.
    Otherwise, with s = t − W:

    - "constant": 1
    - "step" (keys "step_size" ≥ 1, "gamma"): gamma ** (s // step_size)
    - "exponential" ("gamma"): gamma ** s
    - "cosine" ("total_steps" T ≥ 1, "min_factor" f in [0, 1], default 0):
      f + (1 − f) · ½ · (1 + cos(π · min(s, T) / T))

    Keys other than these raise ValueError, as do an unknown kind and out-of-range values.
    """
    if spec is None:
        spec = {"kind": "constant"}
    if not isinstance(spec, Mapping):
        raise TypeError(f"schedule: expected a dict or None; got {type(spec).__name__}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule: kind must be one of {', '.join(SCHEDULE_KINDS)}; got {kind!r}")
    unknown = set(spec) - {"kind", "warmup_steps", *_SCHEDULE_KEYS[kind]}
    if unknown:
        raise ValueError(f"schedule {kind!r}: unknown keys {sorted(unknown)}")
    t = _non_negative_int(step, "step")
    warmup = _non_negative_int(spec.get("warmup_steps", 0), "warmup_steps")
    if t < warmup:
        return (t + 1) / warmup
    s = t - warmup
    if kind == "constant":
        return 1.0
    if kind == "step":
        if "step_size" not in spec:
            raise ValueError("schedule 'step' needs 'step_size'")
        step_size = operator.index(spec["step_size"])
        if step_size < 1:
            raise ValueError(f"schedule: step_size must be >= 1; got {step_size}")
        exponent = s // step_size
    elif kind == "exponential":
        exponent = s
    else:  # cosine
        if "total_steps" not in spec:
            raise ValueError("schedule 'cosine' needs 'total_steps'")
        total = operator.index(spec["total_steps"])
        if total < 1:
            raise ValueError(f"schedule: total_steps must be >= 1; got {total}")
        floor = float(spec.get("min_factor", 0.0))
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"schedule: min_factor must be in [0, 1]; got {floor!r}")
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    gamma = _schedule_gamma(spec)
    try:
        return gamma**exponent
    except OverflowError:  # gamma > 1 after very many steps
        return math.inf
