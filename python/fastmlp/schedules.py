"""Learning-rate schedules: lr_t = lr · factor(t), t = updates made so far (0 first).

Each schedule is a description; the C++ engine evaluates it at every update,
inside the fit loop. Any of them can have a linear warm-up in front:

    fm.Adam(lr=1e-3, schedule=fm.Warmup(500, fm.Cosine(total_steps=10_000)))

=================  ===========================================================
``Constant()``     1
``StepDecay``      γ^⌊t / step_size⌋  (γ = 0.1 by default)
``Exponential``    γ^t
``Cosine``         m + (1 − m) · (1 + cos(π · min(t, T) / T)) / 2, m = min_factor
``Warmup(W, s)``   (t + 1) / W while t < W, then s at t − W
=================  ===========================================================
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core
from ._validation import check_choice, check_int, check_real

__all__ = ["Schedule", "Constant", "StepDecay", "Exponential", "Cosine", "Warmup"]

INT64_MAX = 2**63 - 1  # the engine counts steps in int64

# The keys a spec of each kind reads besides "kind" and "warmup_steps": (required, optional).
_SPEC_KEYS = {"constant": ((), ()), "step": (("step_size", "gamma"), ()), "exponential": (("gamma",), ()),
              "cosine": (("total_steps",), ("min_factor",))}
_INT_KEYS = ("warmup_steps", "step_size", "total_steps")


def _spec_value(spec: dict, key: str):
    value = spec[key]
    if key in _INT_KEYS:
        return check_int(value, f"spec[{key!r}]", minimum=0, maximum=INT64_MAX)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"spec[{key!r}]: expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def _schedule_config(spec) -> _core.ScheduleConfig | None:
    """The engine's ScheduleConfig for a spec dict ({"kind": "cosine", "total_steps": 100, ...},
    see Schedule._spec), or None for None. The values are checked by the engine."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise TypeError(f"spec: expected a schedule spec dict such as {{'kind': 'cosine', 'total_steps': 100}} "
                        f"or None, got {type(spec).__name__} {spec!r}")
    kind = check_choice(spec.get("kind", "constant"), "spec['kind']", _core.SCHEDULES)
    required, optional = _SPEC_KEYS[kind]
    allowed = ("kind", "warmup_steps", *required, *optional)
    unknown = [key for key in spec if key not in allowed]
    if unknown:
        raise ValueError(f"spec: unknown keys {unknown} for kind {kind!r}; expected keys among {list(allowed)}")
    missing = [key for key in required if key not in spec]
    if missing:
        raise ValueError(f"spec: kind {kind!r} needs the keys {missing}")
    return _core.ScheduleConfig(kind=kind, **{key: _spec_value(spec, key) for key in spec if key != "kind"})


class Schedule:
    """Base class: ``factor(t)`` is the multiplier of the optimizer's lr at update t."""

    def _spec(self) -> dict:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _config(self) -> _core.ScheduleConfig:
        """What the engine reads."""
        return _core.ScheduleConfig(**self._spec())  # the attributes were checked in __init__

    def factor(self, t: int) -> float:
        """The lr multiplier at update t (0-based), as the engine computes it."""
        return float(_core.schedule_factor(self._config(), check_int(t, "t", minimum=0, maximum=INT64_MAX)))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._spec() == other._spec()

    def __repr__(self) -> str:
        spec = {k: v for k, v in self._spec().items() if k != "kind"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in spec.items())})"


class Constant(Schedule):
    """factor(t) = 1."""

    def _spec(self) -> dict:
        return {"kind": "constant"}


class StepDecay(Schedule):
    """factor(t) = gamma ** (t // step_size): the lr falls by gamma every step_size updates."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = check_int(step_size, "step_size", minimum=1, maximum=INT64_MAX)
        self.gamma = check_real(gamma, "gamma", 0.0, float("inf"), low_open=True, high_open=True)

    def _spec(self) -> dict:
        return {"kind": "step", "step_size": self.step_size, "gamma": self.gamma}


class Exponential(Schedule):
    """factor(t) = gamma ** t."""

    def __init__(self, gamma: float):
        self.gamma = check_real(gamma, "gamma", 0.0, float("inf"), low_open=True, high_open=True)

    def _spec(self) -> dict:
        return {"kind": "exponential", "gamma": self.gamma}


class Cosine(Schedule):
    """Cosine annealing from 1 to min_factor over total_steps updates, then min_factor."""

    def __init__(self, total_steps: int, min_factor: float = 0.0):
        self.total_steps = check_int(total_steps, "total_steps", minimum=1, maximum=INT64_MAX)
        self.min_factor = check_real(min_factor, "min_factor", 0.0, 1.0)

    def _spec(self) -> dict:
        return {"kind": "cosine", "total_steps": self.total_steps, "min_factor": self.min_factor}


class Warmup(Schedule):
    """Linear warm-up over ``steps`` updates ((t + 1) / steps), then ``schedule``
    (Constant by default) counted from the end of the warm-up."""

    def __init__(self, steps: int, schedule: Schedule | None = None):
        self.steps = check_int(steps, "steps", minimum=1, maximum=INT64_MAX)
        schedule = Constant() if schedule is None else schedule
        if not isinstance(schedule, Schedule) or isinstance(schedule, Warmup):
            raise TypeError(f"schedule: expected a schedule such as fm.Cosine(1000) (not a Warmup), got {schedule!r}")
        self.schedule = schedule

    def _spec(self) -> dict:
        return {**self.schedule._spec(), "warmup_steps": self.steps}

    def __repr__(self) -> str:
        return f"Warmup({self.steps}, {self.schedule!r})"
