"""The fuzz test's driver: hypothesis drives one target (a public kernel, or one of
Network's methods) with random shapes, layouts, dtypes, overlaps, read-only flags
and extreme values, and holds every call to the contract of DESIGN.md:

- a ValueError / TypeError whose message names an argument of the call
  (FloatingPointError where the API documents it: Network.fit, partial_fit, step), or
- a result equal to the NumPy twin in fastmlp.reference (tolerances per dtype);
- never a crash, never a hang (test_fuzz.py runs this module in a subprocess with a
  timeout, one per target, so a segfault or a deadlock fails that target's test).

Run as ``python tests/fuzz_driver.py TARGET`` (``--list`` prints the targets). Before
each call the case is written to the file named by FASTMLP_FUZZ_LAST_CASE, so a crash
or a hang still names its input. FASTMLP_FUZZ_EXAMPLES sets the examples per target.
Not collected by pytest (its name does not start with test_).
"""

from __future__ import annotations

import faulthandler
import inspect
import math
import os
import pickle
import re
import sys
import threading
import traceback
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastmlp as fm  # noqa: E402
from fastmlp import kernels, reference  # noqa: E402
from kernel_helpers import ATOL_ULPS, assert_close, eps_of  # noqa: E402

EXAMPLES = int(os.environ.get("FASTMLP_FUZZ_EXAMPLES", "100"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # a fixed seed: the same examples on every run
    suppress_health_check=list(HealthCheck),
    print_blob=False,
    # Shrinking makes the examples minimal but can take minutes when much fails: on request only.
    phases=(Phase.explicit, Phase.reuse, Phase.generate)
    + ((Phase.shrink,) if os.environ.get("FASTMLP_FUZZ_SHRINK") == "1" else ()),
)

SIZES = (0, 1, 3, 7, 33)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# To look past a known failure while exploring (never in CI): FASTMLP_FUZZ_EXCLUDE=readonly,bigints,extreme
EXCLUDE = set(filter(None, os.environ.get("FASTMLP_FUZZ_EXCLUDE", "").split(",")))
HUGE_INTS = (2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100, -1, -(2**63), -(2**63) - 1)
if "bigints" in EXCLUDE:
    HUGE_INTS = (-1, 2**31)
FLOAT_SPECIALS = (math.inf, -math.inf, math.nan, 1e300, -1e300, -0.0, 5e-324, 1e-310, 1e-40, 3.4e38, 65504.0)
NUMBERS = (0.0, -0.0, 1.0, -1.0, 0.5, 2.5, 1e-3, math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324, 2**63, -1)
ACCEPTED = (ValueError, TypeError)
_LAST_CASE = os.environ.get("FASTMLP_FUZZ_LAST_CASE")
warnings.simplefilter("ignore")  # overflow, NaN and cast warnings are the point here, not news
np.seterr(all="ignore")


def record(text: str) -> None:
    """Writes the case about to run where the parent test reads it after a crash or hang."""
    if _LAST_CASE:
        with open(_LAST_CASE, "w", encoding="utf-8") as f:
            f.write(text)


class Failure(AssertionError):
    pass


# ---- arrays ---------------------------------------------------------------------------------------

REAL_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "uint64", "bool", "float16")
BAD_DTYPES = ("complex128", "object")
LAYOUTS = ("contiguous", "fortran", "strided", "negative", "broadcast")


class Arr:
    """How to build one array argument; built afresh for each call (the kernel's and the twin's)."""

    def __init__(self, shape, dtype, layout, readonly, seed, specials, scale):
        self.shape, self.dtype, self.layout, self.readonly = tuple(shape), dtype, layout, readonly
        self.seed, self.specials, self.scale = seed, tuple(specials), scale
        self.inplace = False
        self.absolute = False

    def written(self) -> "Arr":
        """This array as an argument the call writes (``out``, ``c``, ``params``, state)."""
        self.inplace = True
        return self

    def __repr__(self):
        return (f"Arr(shape={self.shape}, dtype={self.dtype!r}, layout={self.layout!r}, readonly={self.readonly}, "
                f"seed={self.seed}, specials={self.specials}, scale={self.scale})")

    @property
    def is_real(self) -> bool:
        return self.dtype not in BAD_DTYPES

    def values(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        dtype = np.dtype(self.dtype)
        size = int(np.prod(self.shape))
        if dtype.kind in "iu":
            flat = rng.integers(0 if dtype.kind == "u" else -3, 4, size=size).astype(dtype)
            info = np.iinfo(dtype)
            for index, value in self.specials:
                if size:
                    flat[index % size] = info.max if value > 0 else info.min
        elif dtype.kind == "b":
            flat = rng.integers(0, 2, size=size).astype(bool)
        else:
            flat = rng.standard_normal(size) * self.scale
            for index, value in self.specials:
                if size:
                    flat[index % size] = value
            with np.errstate(all="ignore"):
                if self.dtype == "complex128":
                    flat = flat + 1j * rng.standard_normal(size)
                elif self.dtype == "object":
                    flat = flat.astype(object)
                else:
                    flat = flat.astype(dtype)
        values = flat.reshape(self.shape)
        if self.absolute:  # a second moment (v) is never negative
            values = np.abs(values)
        if self.layout == "broadcast" and values.ndim and values.shape[0]:
            values[...] = values[:1]  # the values the stride-0 view shows
        return values

    def build(self, normal: bool = False) -> np.ndarray:
        """The array; ``normal``: the same values, C-contiguous and writable (unless the
        array is one a call writes: those keep their layout and flags)."""
        values = self.values()
        if normal and not self.inplace:
            return values
        out = with_layout(values, self.layout)
        if self.readonly:
            out.flags.writeable = False
        return out


def with_layout(values: np.ndarray, layout: str) -> np.ndarray:
    if layout == "contiguous" or values.ndim == 0:
        return values
    if layout == "fortran":
        return np.asfortranarray(values)
    if layout == "strided":  # every 2nd element of a bigger buffer whose gaps hold NaN (or 7)
        big = np.full(tuple(2 * n for n in values.shape), 7 if values.dtype.kind in "iub" else np.nan,
                      dtype=values.dtype)
        view = big[tuple(slice(None, None, 2) for _ in values.shape)]
        view[...] = values
        return view
    if layout == "negative":
        flip = tuple(slice(None, None, -1) for _ in values.shape)
        return values[flip].copy()[flip]
    if layout == "broadcast":  # a stride-0 view (read-only, as NumPy makes them): the first row repeated
        if values.shape[0] == 0:
            return values
        return np.broadcast_to(values[:1], values.shape)
    raise ValueError(layout)


@st.composite
def arrays(draw, shape, dtypes=REAL_DTYPES + REAL_DTYPES[:2] * 3 + BAD_DTYPES, extreme=True):
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    dtype = draw(st.sampled_from(dtypes))
    layouts = LAYOUTS if "readonly" not in EXCLUDE else tuple(x for x in LAYOUTS if x != "broadcast")
    layout = draw(st.sampled_from(layouts + ("contiguous",) * 3))
    readonly = draw(st.booleans()) and "readonly" not in EXCLUDE
    seed = draw(st.integers(0, 2**16))
    extreme = extreme and "extreme" not in EXCLUDE
    specials = ()
    if extreme and draw(st.integers(0, 3)) == 0:
        specials = tuple(draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(FLOAT_SPECIALS)),
                                       min_size=1, max_size=3)))
    scale = draw(st.sampled_from((1.0, 1.0, 1.0, 1e-3, 1e3, 1e30))) if extreme else 1.0
    return Arr(shape, dtype, layout, readonly, seed, specials, scale)


def shapes(ndim=None):
    dims = st.sampled_from(SIZES)
    if ndim is None:
        return st.integers(0, 3).flatmap(lambda n: st.tuples(*[dims] * n))
    return st.tuples(*[dims] * ndim)


def maybe_wrong(shape_strategy_value, draw):
    """The right shape most of the time; sometimes one of another ndim or size."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(shapes())
    if choice == 1 and shape_strategy_value:
        shape = list(shape_strategy_value)
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(SIZES))
        return tuple(shape)
    return shape_strategy_value


# ---- calling and comparing ------------------------------------------------------------------------


def names_an_argument(message: str, names) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


RAW_BINDING = ("incompatible function arguments", "Unable to cast", "(arg0:", "pybind11")


def check_error(error: BaseException, names, what: str, allowed=ACCEPTED) -> None:
    if not isinstance(error, allowed):
        raise Failure(f"{what}: raised {type(error).__name__}: {error} (expected a ValueError/TypeError "
                      "naming an argument, or a result equal to the twin)") from error
    message = str(error)
    if any(raw in message for raw in RAW_BINDING):
        raise Failure(f"{what}: a raw binding error instead of a message naming the argument: "
                      f"{type(error).__name__}: {message}") from error
    if not isinstance(error, FloatingPointError) and not names_an_argument(message, names):
        raise Failure(f"{what}: {type(error).__name__} whose message names none of the arguments {list(names)}: "
                      f"{message}") from error


def attempt(fn, *args, **kwargs):
    """(True, result) or (False, the exception)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                return True, fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - classified by the caller
        return False, error


def tolerance(dtype, scale):
    dtype = np.dtype(dtype)
    rtol = RTOL.get(dtype, 1e-12)
    return rtol, max(ATOL_ULPS * eps_of(dtype if dtype in RTOL else np.float64) * scale, rtol * scale)


def compare(actual, expected, *, scale, what, dtype=np.float64):
    """actual equal to expected: same type of result; arrays of the same shape and dtype, close per dtype."""
    if isinstance(expected, (tuple, list)):  # a tuple of results, or a list of arrays written in place
        if type(actual) is not type(expected) or len(actual) != len(expected):
            raise Failure(f"{what}: returned {type(actual).__name__}, the twin a {type(expected).__name__} of "
                          f"{len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            compare(a, e, scale=scale, what=f"{what}[{i}]", dtype=dtype)
        return
    if expected is None:
        return
    if isinstance(expected, np.ndarray):
        if not isinstance(actual, np.ndarray):
            raise Failure(f"{what}: returned {type(actual).__name__}, the twin an ndarray")
        if actual.shape != expected.shape or actual.dtype != expected.dtype:
            raise Failure(f"{what}: shape {actual.shape} dtype {actual.dtype}, the twin's {expected.shape} "
                          f"{expected.dtype}")
        dtype = expected.dtype
    else:
        actual, expected = np.float64(actual), np.float64(expected)  # a scalar: tolerance of the inputs' dtype
    if np.dtype(dtype).kind != "f":
        if not np.array_equal(actual, expected):
            raise Failure(f"{what}: {actual!r} but the twin gives {expected!r}")
        return
    rtol, atol = tolerance(dtype, scale)
    try:
        assert_close(actual, expected, rtol=rtol, atol=atol, what=what)
    except AssertionError as error:
        raise Failure(str(error)) from None


def square(x: float) -> float:
    return x * x  # inf past the float range, where ** raises OverflowError


def finite_scale(*values) -> float:
    """The largest finite magnitude among the float values given (1 at least)."""
    biggest = 1.0
    for v in values:
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub" and v.size:
            a = np.abs(v.astype(np.float64))
            a = a[np.isfinite(a)]
            if a.size:
                biggest = max(biggest, float(a.max()))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            biggest = max(biggest, abs(float(v)))
    return biggest


# ---- kernels ----------------------------------------------------------------------------------------


class Case:
    """One call of a kernel: ``make(normal)`` builds fresh (args, kwargs); ``inplace`` names the
    arguments the call writes, compared after it; ``scale(args, kwargs)`` the magnitude for atol."""

    def __init__(self, make, text, inplace=(), scale=None, valid_types=True):
        self.make, self.text, self.inplace = make, text, tuple(inplace)
        self.scale = scale or (lambda args, kwargs: finite_scale(*args, *kwargs.values()))
        self.valid_types = valid_types  # False: some argument is complex/object: must be refused

    def __repr__(self):
        return self.text


def bound_arguments(fn, args, kwargs):
    return inspect.signature(fn).bind(*args, **kwargs).arguments


def run_kernel_case(name: str, case: Case) -> None:
    fast, twin = getattr(kernels, name), getattr(reference, name)
    names = list(inspect.signature(fast).parameters)
    if name == "schedule_factor":  # a spec's message may name the spec's key instead
        names += ["schedule", "kind", *SCHEDULE_KEYS]
    what = f"kernels.{name}({case.text})"
    record(what)
    args_k, kwargs_k = case.make(False)
    ok_k, out_k = attempt(fast, *args_k, **kwargs_k)
    if not case.valid_types:
        if ok_k:
            raise Failure(f"{what}: accepted a complex/object array (must be refused naming it)")
        check_error(out_k, names, what)
        return
    args_r, kwargs_r = case.make(False)
    ok_r, out_r = attempt(twin, *args_r, **kwargs_r)
    if not ok_r:
        if ok_k:
            raise Failure(f"{what}: returned {short(out_k)} but the twin refuses: "
                          f"{type(out_r).__name__}: {out_r}")
        check_error(out_k, names, what)
        return
    if not ok_k:
        check_error(out_k, names, what)
        # Refusing is allowed, but not for read-only or strided *inputs* the kernel accepts contiguous.
        args_n, kwargs_n = case.make(True)
        ok_n, out_n = attempt(fast, *args_n, **kwargs_n)
        if ok_n:
            raise Failure(f"{what}: refused with {type(out_k).__name__}: {out_k} -- yet the same values, "
                          "C-contiguous and writable, are accepted (read-only/strided inputs must work)")
        return
    normal_args, normal_kwargs = case.make(True)
    scale = case.scale(normal_args, normal_kwargs)
    arrays_in = [a for a in (*normal_args, *normal_kwargs.values()) if isinstance(a, np.ndarray)]
    dtype = np.float32 if arrays_in and all(a.dtype == np.float32 for a in arrays_in) else np.float64
    compare(out_k, out_r, scale=scale, what=f"{what} result", dtype=dtype)
    bound_k, bound_r = bound_arguments(fast, args_k, kwargs_k), bound_arguments(twin, args_r, kwargs_r)
    for arg in case.inplace:
        if bound_k.get(arg) is not None:
            compare(bound_k[arg], bound_r[arg], scale=scale, what=f"{what} {arg} after the call", dtype=dtype)


def short(value) -> str:
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "..."


ACTIVATION_NAMES = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "swish", "gelu")
BAD_NAMES = ("softmax", "", "RELU", None, 3)


def names_or_bad(good):
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.sampled_from(BAD_NAMES))


def mostly(good, bad, odds=5):
    """One of ``good`` most of the time (so that one bad value at a time gets through to
    the C++), one of ``bad`` otherwise."""
    return st.one_of(*[st.sampled_from(good)] * odds, st.sampled_from(bad))


def numbers():
    return mostly((1.0, 0.5, -1.0, 2.5, 0.0, -0.0), NUMBERS)


def all_real(*specs) -> bool:
    return all(s.is_real for s in specs if isinstance(s, Arr))


def describe(**parts) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in parts.items())


def computed_dtype(*specs):
    arrs = [s for s in specs if isinstance(s, Arr)]
    return np.dtype(np.float32) if all(a.dtype == "float32" for a in arrs) else np.dtype(np.float64)


@st.composite
def out_spec(draw, like: Arr):
    """An ``out`` argument: ("none"), a fresh array ("fresh", sometimes of a wrong dtype, shape,
    layout, or read-only), the source itself ("same": in place) or a view of the source's buffer
    one element further on ("shifted": a partial overlap)."""
    kind = draw(st.sampled_from(("none", "none", "fresh", "fresh", "same", "shifted", "odd")))
    if kind == "fresh":
        return ("fresh", Arr(like.shape, computed_dtype(like).name, "contiguous", False, 1, (), 1.0).written())
    if kind == "odd":
        return ("fresh", draw(arrays(maybe_wrong(like.shape, draw))).written())
    if kind == "same":
        like.written()  # the source is written too: its layout and flags are the call's to refuse
    return (kind, None)


def source_and_out(source: Arr, out, normal: bool):
    """The source array and the ``out`` that ``out_spec`` described."""
    kind, spec = out
    array = source.build(normal)
    if kind == "none":
        return array, None
    if kind == "fresh":
        return array, spec.build(normal)
    if kind == "same" or array.dtype.kind != "f":
        return array, array
    base = np.zeros(array.size + 1, dtype=array.dtype)
    base[: array.size] = array.reshape(-1)
    return base[: array.size].reshape(array.shape), base[1:].reshape(array.shape)


KERNEL_CASES = {}


def kernel_case(name):
    def register(fn):
        KERNEL_CASES[name] = fn
        return fn
    return register


@kernel_case("activation_forward")
def _(draw):
    z = draw(arrays(shapes()))
    activation = draw(names_or_bad(ACTIVATION_NAMES))
    out = draw(out_spec(z))

    def make(normal):
        zz, oo = source_and_out(z, out, normal)
        return (zz,), {"activation": activation, "out": oo}
    return Case(make, describe(z=z, activation=activation, out=out), inplace=("out",), valid_types=all_real(z, out[1]))


@kernel_case("activation_backward")
def _(draw):
    shape = draw(shapes())
    z = draw(arrays(maybe_wrong(shape, draw)))
    da = draw(arrays(maybe_wrong(shape, draw)))
    a = draw(st.one_of(st.none(), arrays(maybe_wrong(shape, draw))))
    activation = draw(names_or_bad(ACTIVATION_NAMES))
    out = draw(out_spec(da))

    def make(normal):
        dda, oo = source_and_out(da, out, normal)
        return (dda, z.build(normal)), {"a": None if a is None else a.build(normal), "activation": activation, "out": oo}
    return Case(make, describe(da=da, z=z, a=a, activation=activation, out=out), inplace=("out",),
                valid_types=all_real(z, da, a, out[1]))


def _matrix_and_row(draw):
    b, o = draw(st.sampled_from(SIZES)), draw(st.sampled_from(SIZES))
    z = draw(arrays(maybe_wrong((b, o), draw)))
    bias = draw(arrays(maybe_wrong((o,), draw)))
    return z, bias


@kernel_case("bias_add_forward")
def _(draw):
    z, bias = _matrix_and_row(draw)
    return Case(lambda n: ((z.build(n), bias.build(n)), {}), describe(z=z, bias=bias), valid_types=all_real(z, bias))


@kernel_case("bias_add_backward")
def _(draw):
    dz = draw(arrays(maybe_wrong(draw(shapes(2)), draw)))
    return Case(lambda n: ((dz.build(n),), {}), describe(dz=dz),
                scale=lambda args, kwargs: finite_scale(*args) * max(1, args[0].shape[0] if args[0].ndim else 1),
                valid_types=all_real(dz))


@kernel_case("bias_activation_forward")
def _(draw):
    z, bias = _matrix_and_row(draw)
    activation = draw(names_or_bad(ACTIVATION_NAMES))
    return Case(lambda n: ((z.build(n), bias.build(n)), {"activation": activation}),
                describe(z=z, bias=bias, activation=activation), valid_types=all_real(z, bias))


@kernel_case("activation_bias_backward")
def _(draw):
    shape = draw(shapes(2))
    da = draw(arrays(maybe_wrong(shape, draw)))
    z = draw(arrays(maybe_wrong(shape, draw)))
    a = draw(st.one_of(st.none(), arrays(maybe_wrong(shape, draw))))
    activation = draw(names_or_bad(ACTIVATION_NAMES))

    def make(n):
        return (da.build(n), z.build(n)), {"a": None if a is None else a.build(n), "activation": activation}
    return Case(make, describe(da=da, z=z, a=a, activation=activation),
                scale=lambda args, kwargs: square(finite_scale(*args, *kwargs.values())) * max(1, shape[0]),
                valid_types=all_real(da, z, a))


def _pair(draw, ndim=2):
    shape = draw(shapes(ndim))
    return draw(arrays(maybe_wrong(shape, draw))), draw(arrays(maybe_wrong(shape, draw)))


def _sq_scale(args, kwargs):
    return square(finite_scale(*args))


@kernel_case("mse_forward")
def _(draw):
    pred, target = _pair(draw, draw(st.integers(0, 3)))
    return Case(lambda n: ((pred.build(n), target.build(n)), {}), describe(pred=pred, target=target),
                scale=_sq_scale, valid_types=all_real(pred, target))


@kernel_case("mse_backward")
def _(draw):
    pred, target = _pair(draw, draw(st.integers(0, 3)))
    scale = draw(st.one_of(st.none(), numbers()))
    return Case(lambda n: ((pred.build(n), target.build(n)), {"scale": scale}),
                describe(pred=pred, target=target, scale=scale), valid_types=all_real(pred, target),
                scale=lambda args, kwargs: finite_scale(*args) * finite_scale(kwargs["scale"] or 1.0))


LOSS_NAMES = ("mse", "cross_entropy", "binary_cross_entropy", "huber")


def _loss_case(draw, with_delta):
    name = draw(names_or_bad(LOSS_NAMES))
    shape = draw(shapes(2))
    pred, target = draw(arrays(maybe_wrong(shape, draw))), draw(arrays(maybe_wrong(shape, draw)))
    kwargs = {"delta": draw(mostly((1.0, 0.5, 1e-3), (0.0, -1.0, math.nan, math.inf, 2**63)))} if with_delta else {}
    if draw(st.integers(0, 2)) == 0:  # row weights, now and then (some negative, NaN or misshapen)
        kwargs["weight"] = draw(arrays(maybe_wrong((shape[0],), draw)))
    return name, pred, target, kwargs


def _loss_scale(args, kwargs):
    return square(finite_scale(*args[1:])) * max(1.0, finite_scale(kwargs.get("delta", 1.0)))


@kernel_case("loss_forward")
@kernel_case("loss_backward")
def _(draw):
    name, pred, target, kwargs = _loss_case(draw, True)
    return Case(lambda n: ((name, pred.build(n), target.build(n)), _built(kwargs, n)),
                describe(name=name, pred=pred, target=target, **kwargs), scale=_loss_scale,
                valid_types=all_real(pred, target, *kwargs.values()))


@kernel_case("count_correct")
def _(draw):
    name, pred, target, kwargs = _loss_case(draw, False)
    return Case(lambda n: ((name, pred.build(n), target.build(n)), _built(kwargs, n)),
                describe(name=name, pred=pred, target=target, **kwargs),
                scale=lambda args, kwargs: finite_scale(*kwargs.values()) * max(1, args[1].size),
                valid_types=all_real(pred, target, *kwargs.values()))


def _built(kwargs, normal):
    """kwargs with each array spec built."""
    return {key: value.build(normal) if isinstance(value, Arr) else value for key, value in kwargs.items()}


@kernel_case("softmax")
def _(draw):
    z = draw(arrays(maybe_wrong(draw(shapes(2)), draw)))
    return Case(lambda n: ((z.build(n),), {}), describe(z=z), scale=lambda a, k: 1.0, valid_types=all_real(z))


@kernel_case("grad_norm")
def _(draw):
    g = draw(arrays(shapes()))
    clip = draw(st.one_of(st.none(), numbers()))
    return Case(lambda n: ((g.build(n),), {"clip_value": clip}), describe(grads=g, clip_value=clip),
                scale=lambda a, k: finite_scale(*a) * math.sqrt(max(1, a[0].size)), valid_types=all_real(g))


@kernel_case("gemm")
def _(draw):
    m, n, k = (draw(st.sampled_from(SIZES)) for _ in range(3))
    trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
    a = draw(arrays(maybe_wrong((k, m) if trans_a else (m, k), draw)))
    b = draw(arrays(maybe_wrong((n, k) if trans_b else (k, n), draw)))
    c_kind = draw(st.sampled_from(("none", "none", "fresh", "fresh", "overlap_a", "overlap_b", "is_a")))
    c = draw(arrays(maybe_wrong((m, n), draw))).written() if c_kind == "fresh" else None
    if c_kind == "is_a":
        a.written()  # a is c: its layout and flags are the call's to refuse
    alpha, beta = draw(numbers()), draw(numbers())
    dtype = computed_dtype(a, b)
    shift = draw(st.integers(0, 1))

    def make(normal):
        aa, bb = a.build(normal), b.build(normal)
        cc = None
        if c_kind == "fresh":
            cc = c.build(normal)
        elif c_kind in ("overlap_a", "overlap_b", "is_a"):
            src = aa if c_kind != "overlap_b" else bb
            if c_kind == "is_a":
                cc = aa
            else:  # c and the operand views into one buffer, c shifted by ``shift`` rows and columns
                rows, cols = max(src.shape[0] if src.ndim == 2 else 1, m) + 1, max(src.shape[1] if src.ndim == 2 else 1, n) + 1
                base = np.random.default_rng(a.seed).standard_normal((rows, cols)).astype(dtype)
                if src.ndim == 2:
                    base[: src.shape[0], : src.shape[1]] = src
                    view = base[: src.shape[0], : src.shape[1]]
                    src = view
                cc = base[shift : shift + m, 1 - shift : 1 - shift + n]
                if c_kind == "overlap_a":
                    aa = src
                else:
                    bb = src
        return (aa, bb, cc), {"alpha": alpha, "beta": beta, "trans_a": trans_a, "trans_b": trans_b}

    def scale(args, kwargs):
        aa, bb, cc = args
        depth = max(1, aa.shape[0] if trans_a else (aa.shape[1] if aa.ndim == 2 else 1))
        return (depth * finite_scale(aa) * finite_scale(bb) * finite_scale(alpha)
                + finite_scale(beta) * (finite_scale(cc) if cc is not None else 0.0))
    return Case(make, describe(a=a, b=b, c=c_kind if c is None else c, alpha=alpha, beta=beta,
                               trans_a=trans_a, trans_b=trans_b, shift=shift),
                inplace=("c",), scale=scale, valid_types=all_real(a, b, c))


# ---- the layers between dense ones: layer norm, batch norm, dropout, residual add ----------------

NORM_EPS = ((1e-5, 1e-5, 1e-3, 0.0), (-1e-5, math.nan, math.inf, "0.1"))
DROPOUT_P = ((0.0, 0.1, 0.5, 0.9), (1.0, -0.1, 1.5, math.nan, math.inf, "0.5", None))


def _norm_rows_and_vectors(draw, names):
    """x (B, W) and the vectors of width W named ``names``, each possibly of a wrong shape."""
    b, w = draw(st.sampled_from(SIZES)), draw(st.sampled_from(SIZES))
    x = draw(arrays(maybe_wrong((b, w), draw)))
    return (b, w), x, [draw(arrays(maybe_wrong((w,), draw))) for _ in names]


def _norm_scale(args, kwargs):
    """The outputs' scale: xhat is O(√W), y = gain ⊙ xhat + bias."""
    x, gain, bias = args[:3]
    width = x.shape[1] if x.ndim == 2 else 1
    return max(1.0, math.sqrt(width)) * finite_scale(gain) + finite_scale(bias)


@kernel_case("layer_norm")
def _(draw):
    _, x, (gain, bias) = _norm_rows_and_vectors(draw, ("gain", "bias"))
    eps = draw(mostly(*NORM_EPS))
    return Case(lambda n: ((x.build(n), gain.build(n), bias.build(n)), {"eps": eps}),
                describe(x=x, gain=gain, bias=bias, eps=eps), scale=_norm_scale,
                valid_types=all_real(x, gain, bias))


@kernel_case("batch_norm")
def _(draw):
    (b, w), x, (gain, bias) = _norm_rows_and_vectors(draw, ("gain", "bias"))
    training = draw(mostly((True, True, False), (None, 1, "yes")))
    running = draw(st.sampled_from(("both", "both", "both", "none", "mean only")))
    mean = var = None
    if running != "none":
        mean = draw(arrays(maybe_wrong((w,), draw))).written()
        if running == "both":
            var = draw(arrays(maybe_wrong((w,), draw))).written()
            var.absolute = True  # a variance is never negative
    kwargs = {"training": training, "eps": draw(mostly(*NORM_EPS)),
              "momentum": draw(mostly((0.1, 0.0, 1.0, 0.5), (-0.1, 1.5, math.nan, math.inf)))}

    def make(n):
        return ((x.build(n), gain.build(n), bias.build(n), None if mean is None else mean.build(n),
                 None if var is None else var.build(n)), dict(kwargs))

    def scale(args, kwargs):
        return _norm_scale(args, kwargs) * max(1.0, finite_scale(*args)) if training is False else \
            _norm_scale(args, kwargs) + finite_scale(*args)
    return Case(make, describe(x=x, gain=gain, bias=bias, running_mean=mean, running_var=var, **kwargs),
                inplace=("running_mean", "running_var"), scale=scale,
                valid_types=all_real(x, gain, bias, mean, var))


@kernel_case("layer_norm_backward")
@kernel_case("batch_norm_backward")
def _(draw):
    (b, w), dy, (gain,) = _norm_rows_and_vectors(draw, ("gain",))
    xhat = draw(arrays(maybe_wrong((b, w), draw)))
    rstd = draw(arrays(maybe_wrong((draw(st.sampled_from((b, w))),), draw)))

    def scale(args, kwargs):
        dy_, xhat_, rstd_, gain_ = args  # dx = rstd (g − mean g − xhat mean(g ⊙ xhat)); the sums over rows
        rows = dy_.shape[0] if dy_.ndim == 2 else 1
        g = finite_scale(dy_) * finite_scale(gain_)
        return (finite_scale(rstd_) * g * (1 + square(finite_scale(xhat_)))
                + max(1, rows) * finite_scale(dy_) * finite_scale(xhat_))
    return Case(lambda n: ((dy.build(n), xhat.build(n), rstd.build(n), gain.build(n)), {}),
                describe(dy=dy, xhat=xhat, rstd=rstd, gain=gain), scale=scale,
                valid_types=all_real(dy, xhat, rstd, gain))


@kernel_case("dropout_mask")
def _(draw):
    shape = draw(st.one_of(st.sampled_from(SIZES), shapes(), st.sampled_from((-1, 2**63, "3", 2.5, (3, -1)))))
    p = draw(mostly(*DROPOUT_P))
    rng = draw(mostly((0, 1, 2**64 - 1, 12345, ((1, 2, 3, 4), False, 0.0)),
                      (-1, 2**64, "seed", None, ((0, 0, 0, 0), False, 0.0), ((1, 2, 3), False, 0.0))))
    return Case(lambda n: ((shape, p, rng), {}), describe(n_or_shape=shape, p=p, rng=rng))


@kernel_case("dropout")
@kernel_case("dropout_backward")
def _(draw):
    shape = draw(shapes())
    x = draw(arrays(shape))
    mask = draw(arrays(maybe_wrong(shape, draw), dtypes=("bool", "bool", "bool", "uint8", "float64", "int64")))
    p = draw(mostly(*DROPOUT_P))
    return Case(lambda n: ((x.build(n), mask.build(n), p), {}), describe(x=x, mask=mask, p=p),
                scale=lambda args, kwargs: finite_scale(args[0]) * 10, valid_types=all_real(x, mask))


@kernel_case("residual_add")
def _(draw):
    x, skip = _pair(draw, draw(st.integers(0, 3)))
    return Case(lambda n: ((x.build(n), skip.build(n)), {}), describe(x=x, skip=skip),
                scale=lambda args, kwargs: 2 * finite_scale(*args), valid_types=all_real(x, skip))


@kernel_case("sum_into_each")
def _(draw):
    """Written arrays: mostly of one dtype, length, contiguous and writable, one sometimes
    wrong (dtype, shape, layout, read-only, the same array twice); start/stop sometimes out
    of range."""
    n = draw(st.sampled_from(SIZES))
    dtype = draw(st.sampled_from(("float32", "float64")))
    specs = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 4)) == 0:
            spec = draw(arrays(maybe_wrong((n,), draw)))
        else:
            spec = draw(arrays((n,), dtypes=(dtype,)))
            spec.layout, spec.readonly = "contiguous", False
        specs.append(spec.written())
    repeat = draw(st.integers(0, 9)) == 0 and len(specs) > 1
    bounds = draw(st.sampled_from(("whole", "whole", "part", "bad")))
    start, stop = {"whole": (0, None), "part": (min(1, n), max(min(1, n), n - 1)),
                   "bad": draw(st.sampled_from(((-1, None), (0, n + 1), (n, 0), (2**63, None), ("1", None),
                                                (0, 2.5))))}[bounds]

    def make(normal):
        built = [spec.build(normal) for spec in specs]
        if repeat:
            built[-1] = built[0]
        return (built, start, stop), {}
    scale = lambda args, kwargs: len(args[0]) * finite_scale(*args[0])  # noqa: E731
    return Case(make, describe(arrays=specs, repeat=repeat, start=start, stop=stop), inplace=("arrays",),
                scale=scale, valid_types=all_real(*specs))


COMMON_OPTIMIZER_ARGS = {  # name: (good values, bad values)
    "lr": ((0.01, 0.1, 1.0), (0.0, -0.1, math.nan, math.inf, 1e300)),
    "weight_decay": ((0.0, 0.0, 0.01, 1.0), (-1.0, math.nan, math.inf)),
    "step": ((1, 1, 2, 5, 2**62), (0, -1) + HUGE_INTS),
    "grad_scale": ((1.0, 1.0, 0.5, 0.0), (math.nan, math.inf, -1.0)),
    "clip_value": ((None, None, 0.5, 1e-3), (0.0, -1.0, math.nan, math.inf)),
}
SGD_ARGS = {
    "momentum": ((0.0, 0.9, 0.5), (-0.5, math.nan, math.inf)),
    "dampening": ((0.0, 0.0, 0.1, 1.0), (2.0, -1.0, math.nan)),
    "nesterov": ((False, True), (1, None)),
}
ADAM_ARGS = {
    "beta1": ((0.9, 0.0, 0.5), (1.0, -0.1, math.nan)),
    "beta2": ((0.999, 0.0, 0.9), (1.0, 1.5, math.nan)),
    "eps": ((1e-8, 1e-6, 1e-3), (0.0, -1e-8, math.nan, math.inf)),
}
STATE_NAMES = {"sgd_update": (), "sgd_step": ("velocity",), "adam_step": ("m", "v"), "lamb_step": ("m", "v")}
ALIASES = ("grads_is_params", "state_is_params", "states_shared", "grads_is_state")


def _optimizer_case(draw, name):
    """An in-place update: one argument at most is bad (wrong dtype, layout, flags, shape,
    aliasing or value), so that every check and the arithmetic behind them get exercised."""
    table = dict(COMMON_OPTIMIZER_ARGS)
    table.update(SGD_ARGS if name == "sgd_step" else ADAM_ARGS if name != "sgd_update" else {})
    if name == "sgd_update":
        table = {"lr": COMMON_OPTIMIZER_ARGS["lr"]}
    state_names = STATE_NAMES[name]
    choices = ["params", "grads", "alias", *state_names, *table]
    if name == "lamb_step":
        choices += ["segments"] * 6  # the bounds checks (offset + size past int64) get their share
    bad = draw(st.sampled_from([None] * len(choices) + choices), label="bad argument")
    n = draw(st.sampled_from(SIZES))
    dtype = draw(st.sampled_from(("float32", "float64")))
    params = draw(arrays((n,), dtypes=(dtype,)))
    if bad == "params":
        params = draw(arrays(maybe_wrong((n,), draw), dtypes=("float32", "float64", "float16", "int64", "object")))
    else:
        params.layout, params.readonly = "contiguous", False
    grads = draw(arrays(maybe_wrong((n,), draw) if bad == "grads" else (n,),
                        dtypes=REAL_DTYPES + BAD_DTYPES if bad == "grads" else REAL_DTYPES))
    states = []
    for state in state_names:
        if bad == state:
            states.append(draw(st.one_of(st.none(), arrays(maybe_wrong((n,), draw)))))
        else:
            states.append(Arr((n,), dtype, "contiguous", False, draw(st.integers(0, 99)), (), 0.1))
            states[-1].absolute = state == "v"
    states = [None if x is None else x.written() for x in states]
    params.written()
    alias = draw(st.sampled_from(ALIASES)) if bad == "alias" else "none"
    kwargs = {k: draw(st.sampled_from(bad_values if k == bad else good)) for k, (good, bad_values) in table.items()}
    if name == "sgd_step" and kwargs["nesterov"] is True and bad not in ("momentum", "dampening", "nesterov"):
        kwargs["momentum"], kwargs["dampening"] = 0.9, 0.0
    if name == "adam_step":
        kwargs["decoupled"] = draw(st.booleans())
    if name == "lamb_step":
        kwargs["segments"] = draw(segment_lists(n, bad == "segments"))

    def make(normal):
        p, g = params.build(normal), grads.build(normal)
        s = [None if x is None else x.build(normal) for x in states]
        if alias == "grads_is_params":
            g = p
        elif alias == "state_is_params" and s and s[0] is not None:
            s[0] = p
        elif alias == "states_shared" and len(s) == 2 and s[0] is not None:
            s[1] = s[0]
        elif alias == "grads_is_state" and s and s[0] is not None:
            g = s[0]
        if name == "sgd_update":
            return (p, g, kwargs["lr"]), {}
        return (p, g, *s), dict(kwargs)
    return Case(make, describe(params=params, grads=grads, **dict(zip(state_names, states)), alias=alias, **kwargs),
                inplace=("params", *state_names), scale=_optimizer_scale, valid_types=all_real(params, grads, *states))


def _optimizer_scale(args, kwargs):
    return finite_scale(*args) * max(1.0, finite_scale(kwargs.get("lr", 1.0)))


@st.composite
def segment_lists(draw, n, bad):
    if not bad:  # a partition of the buffer, or of a part of it
        cuts = sorted(set(draw(st.lists(st.integers(0, max(n, 0)), max_size=3))) | {0, n})
        return [(lo, hi - lo) for lo, hi in zip(cuts[:-1], cuts[1:])]
    kind = draw(st.sampled_from(("random", "huge", "huge")))
    if kind == "huge":  # offset + size past int64 (and a few past every integer type)
        return [(draw(st.sampled_from((1, n, 2**62, 2**63 - 1, 2**63, -1))),
                 draw(st.sampled_from((2**63 - 1, 2**63 - 1, 2**62 + 2**61, 2**64 - 1, 2**64, -(2**63)))))]
    values = st.one_of(st.integers(-2, n + 2), st.sampled_from(HUGE_INTS))
    return draw(st.lists(st.tuples(values, values), max_size=3))


for _name in STATE_NAMES:
    kernel_case(_name)(lambda draw, name=_name: _optimizer_case(draw, name))


SCHEDULE_KEYS = ("step_size", "gamma", "total_steps", "min_factor", "warmup_steps", "bogus")


@kernel_case("schedule_factor")
def _(draw):
    kind = draw(st.sampled_from(("constant", "step", "exponential", "cosine", "cosine", "step", "linear", None)))
    spec = {"kind": kind}
    ints = st.one_of(st.integers(0, 12), st.sampled_from(HUGE_INTS), st.sampled_from((1.5, True, math.nan)))
    floats = st.one_of(st.sampled_from((0.1, 0.5, 0.9, 1.0, 1.5, 0.0)), numbers())
    for key in draw(st.lists(st.sampled_from(SCHEDULE_KEYS), unique=True, max_size=3)):
        spec[key] = draw(floats if key in ("gamma", "min_factor") else ints)
    if kind == "step":
        spec.setdefault("step_size", draw(st.integers(1, 5)))
        spec.setdefault("gamma", 0.5)
    if kind == "exponential":
        spec.setdefault("gamma", 0.9)
    if kind == "cosine":
        spec.setdefault("total_steps", draw(st.integers(1, 20)))
    step = draw(st.one_of(st.integers(0, 30), st.integers(0, 30), st.sampled_from(HUGE_INTS), st.sampled_from((1.5, True, None))))
    return Case(lambda n: ((dict(spec), step), {}), describe(spec=spec, step=step), scale=lambda a, k: 1.0)


@st.composite
def layer_sizes(draw, count):
    """``count`` layer sizes, small or bad; sometimes one so big that its product with its
    neighbours (4 each) overflows int64 (never a size that fits and would take the memory)."""
    sizes = [draw(st.sampled_from((1, 3, 7, 1, 3, 0, -1, 2.0, True))) for _ in range(count)]
    if sizes and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(sizes) - 1))
        sizes[i] = draw(st.sampled_from((2**62, 2**63, 2**64, 2**100)))
        for j in (i - 1, i + 1):
            if 0 <= j < len(sizes):
                sizes[j] = 4
    return sizes


@kernel_case("init_params")
def _(draw):
    n_layers = draw(st.integers(0, 3))
    sizes = draw(layer_sizes(n_layers + 1))
    schemes = draw(st.one_of(names_or_bad(reference.INIT_SCHEMES),
                             st.lists(st.sampled_from(reference.INIT_SCHEMES), min_size=max(n_layers, 0), max_size=n_layers + 1)))
    seed = draw(st.one_of(st.integers(0, 1000), st.sampled_from(HUGE_INTS)))
    dtype = draw(st.sampled_from(("float32", "float64", "float64", "float32", "float16", "int32", None, "bogus")))
    return Case(lambda n: ((list(sizes), schemes, seed, dtype), {}),
                describe(layer_sizes=sizes, schemes=schemes, seed=seed, dtype=dtype), scale=lambda a, k: 1.0)


def run_gemm_choice(draw) -> None:
    """gemm_kernel, available_gemm_kernels, set_gemm_kernel: no twin; the contract is the names."""
    available = kernels.available_gemm_kernels()
    if not (isinstance(available, list) and available and all(isinstance(x, str) for x in available)):
        raise Failure(f"available_gemm_kernels() returned {available!r}")
    name = draw(st.sampled_from(("auto", *available, "portable", "avx512", "AVX2", "", None, 3)), label="name")
    what = f"kernels.set_gemm_kernel({name!r})"
    record(what)
    ok, error = attempt(kernels.set_gemm_kernel, name)
    try:
        if not ok:
            check_error(error, ["name"], what)
            if name in available or name == "auto":
                raise Failure(f"{what}: refused a name available_gemm_kernels() lists: {error}")
            return
        if name not in available and name != "auto":
            raise Failure(f"{what}: accepted a name available_gemm_kernels() does not list ({available})")
        now = kernels.gemm_kernel()
        if now not in available or (name != "auto" and now != name):
            raise Failure(f"{what}: gemm_kernel() is then {now!r}")
        a = np.arange(6.0).reshape(2, 3)
        compare(kernels.gemm(a, a.T), reference.gemm(a, a.T), scale=50.0, what=f"gemm after {what}")
    finally:
        kernels.set_gemm_kernel("auto")


NO_TWIN = {"gemm_kernel", "available_gemm_kernels", "set_gemm_kernel"}


@st.composite
def config_specs(draw):
    """A GEMM configuration spec: names, overrides (good, out of range, garbage), or not a str."""
    names = ["auto", *kernels.gemm_configs(), "nehalem", "", "AUTO"]
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(names)))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(("kc", "nc", "prefetch", "mc", "", "kc ")))
        value = draw(st.one_of(st.integers(-2, 10000).map(str), st.sampled_from(("", "x", "1e3", "256 ", "0x10", "99999999999"))))
        parts.append(draw(st.sampled_from((f"{key}={value}", key))))
    spec = ",".join(parts)
    return draw(st.sampled_from((spec, spec, spec, None, 256, b"auto")))


def run_gemm_config_choice(draw) -> None:
    """gemm_config, gemm_configs, set_gemm_config, cpu_info: no twin; the contract is the
    description, the refusal of a bad spec (nothing changed), and a right product after."""
    info = kernels.cpu_info()
    if not (isinstance(info, dict) and isinstance(info.get("caches"), list)):
        raise Failure(f"cpu_info() returned {info!r}")
    spec = draw(config_specs(), label="spec")
    what = f"kernels.set_gemm_config({spec!r})"
    record(what)
    before = kernels.gemm_config()
    ok, error = attempt(kernels.set_gemm_config, spec)
    try:
        if not ok:
            check_error(error, ["spec", "gemm config", "kc", "nc", "prefetch"], what)
            if kernels.gemm_config() != before:
                raise Failure(f"{what}: refused ({error}) but the configuration changed")
            return
        config = kernels.gemm_config()
        for dtype in ("float32", "float64"):
            b = config[dtype]
            if not (b["kc"] >= 8 and b["nc"] >= b["nr"] and b["nc"] % b["nr"] == 0):
                raise Failure(f"{what}: accepted, giving {config}")
        rng = np.random.default_rng(0)
        a = rng.standard_normal((37, 300))
        b = rng.standard_normal((300, 257)).astype(np.float32)
        for x, y in ((a, a.T), (a[:1].astype(np.float32), b), (b.T, a[:1].T.astype(np.float32))):
            # tiles; one row of C (row times matrix); one column (dot products)
            compare(kernels.gemm(x, y), reference.gemm(x, y), scale=500.0, what=f"gemm after {what}")
    finally:
        kernels.set_gemm_kernel("auto")
        kernels.set_gemm_config("auto")


CONFIG_CHOICE = {"gemm_config", "gemm_configs", "set_gemm_config", "cpu_info"}


def kernel_target(name):
    if name in CONFIG_CHOICE or name in NO_TWIN:
        run = run_gemm_config_choice if name in CONFIG_CHOICE else run_gemm_choice

        @SETTINGS
        @given(st.data())
        def test(data):
            run(data.draw)
        return test
    if name not in KERNEL_CASES:
        raise SystemExit(f"fuzz_driver: kernels.{name} is public but has no fuzz case; add one")

    @SETTINGS
    @given(st.data())
    def test(data):
        case = data.draw(st.composite(lambda draw: KERNEL_CASES[name](draw))(), label=f"{name} case")
        run_kernel_case(name, case)
    return test


# ---- Network ----------------------------------------------------------------------------------------

OPTIMIZER_KINDS = ("sgd", "sgd_momentum", "adam", "adamw", "lamb")


@st.composite
def optimizers(draw):
    """(an fm optimizer, the kwargs of its reference.Optimizer twin), or an invalid one."""
    kind = draw(st.sampled_from(OPTIMIZER_KINDS))
    lr = draw(st.sampled_from((0.01, 0.1, 0.001)))
    clip_norm = draw(st.sampled_from((None, None, 1.0, 1e-3)))
    clip_value = draw(st.sampled_from((None, None, 0.5)))
    common = dict(clip_norm=clip_norm, clip_value=clip_value)
    if kind.startswith("sgd"):
        momentum = 0.9 if kind == "sgd_momentum" else 0.0
        nesterov = bool(momentum) and draw(st.booleans())
        opt = fm.SGD(lr, momentum, nesterov=nesterov, **common)
        return opt, dict(kind="sgd", lr=lr, momentum=momentum, nesterov=nesterov, **common)
    cls = {"adam": fm.Adam, "adamw": fm.AdamW, "lamb": fm.LAMB}[kind]
    opt = cls(lr, **common)
    return opt, dict(kind=kind, lr=lr, weight_decay=opt.weight_decay, eps=opt.eps, **common)


@st.composite
def networks(draw, classifier_ok=True):
    n_in, n_out = draw(st.sampled_from((1, 3, 7))), draw(st.sampled_from((1, 3, 7)))
    hidden = draw(st.lists(st.sampled_from((1, 3, 7)), max_size=2))
    loss = draw(st.sampled_from(LOSS_NAMES if classifier_ok else ("mse", "huber")))
    if loss == "cross_entropy" and n_out < 2:
        n_out = 3
    activation = draw(st.sampled_from(ACTIVATION_NAMES))
    dtype = draw(st.sampled_from(("float32", "float64")))
    seed = draw(st.integers(0, 100))
    spec = dict(layer_sizes=[n_in, *hidden, n_out], activation=activation, loss=loss, dtype=dtype, seed=seed)
    return spec


def make_network(spec):
    return fm.Network(spec["layer_sizes"], spec["activation"], loss=spec["loss"], dtype=spec["dtype"], seed=spec["seed"])


@st.composite
def net_inputs(draw, spec):
    """X and y for a network spec: the right shapes mostly, any dtype, layout, flags, values."""
    n = draw(st.sampled_from((1, 3, 7, 33, 0)))
    n_in, n_out = spec["layer_sizes"][0], spec["layer_sizes"][-1]
    X = draw(arrays(maybe_wrong((n, n_in), draw)))
    if draw(st.integers(0, 3)) == 0:  # finite in float64, past float32's range: a float32 network must refuse it
        X.shape, X.dtype = (max(n, 1), n_in), "float64"
        X.specials = ((draw(st.integers(0, 99)), draw(st.sampled_from((1e300, -1e39)))),)
    loss = spec["loss"]
    if loss == "cross_entropy" and draw(st.integers(0, 3)):
        y = ("labels", draw(st.integers(0, 2**16)), draw(st.sampled_from(("int64", "int32", "float64", "uint64"))),
             draw(st.sampled_from((None, None, None, -1, n_out, 2**63, 1.5, math.nan))), maybe_wrong((n,), draw))
    else:
        y = draw(arrays(maybe_wrong((n, n_out) if n_out > 1 or draw(st.booleans()) else (n,), draw)))
        if draw(st.integers(0, 5)) == 0:
            y.dtype, y.specials = "float64", ((draw(st.integers(0, 99)), 1e300),)
        if loss in ("cross_entropy", "binary_cross_entropy"):
            y = ("probabilities", y)
    return X, y


def build_y(y, spec, normal=False):
    n_out = spec["layer_sizes"][-1]
    if isinstance(y, Arr):
        return y.build(normal)
    if y[0] == "probabilities":  # 0/1 (bce) or one-hot (ce) rows, the Arr's layout and flags
        base = y[1].build(normal)
        if base.dtype.kind not in "fiub" or base.ndim == 0:
            return base
        with np.errstate(all="ignore"):
            values = np.asarray(base, dtype=np.float64)
        if spec["loss"] == "binary_cross_entropy":
            fixed = (np.nan_to_num(values) > 0).astype(base.dtype) if base.dtype.kind != "b" else base
        elif values.ndim == 2 and values.shape[1] == n_out and values.shape[1]:
            fixed = np.zeros_like(values)
            fixed[np.arange(values.shape[0]), np.argmax(np.nan_to_num(values), axis=1)] = 1
            fixed = fixed.astype(base.dtype) if base.dtype.kind == "f" else fixed
        else:
            return base
        out = with_layout(np.ascontiguousarray(fixed), y[1].layout if not normal else "contiguous")
        if y[1].readonly and not normal:
            out.flags.writeable = False
        return out
    _, seed, dtype, bad, shape = y
    labels = np.random.default_rng(seed).integers(0, n_out, size=shape).astype(dtype)
    if bad is not None and labels.size:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = labels.astype(np.float64) if isinstance(bad, float) else labels
            if isinstance(bad, int) and not np.can_cast(np.min_scalar_type(bad), labels.dtype):
                labels = labels.astype(np.float64)
            labels.flat[0] = bad
    return labels


def dense_targets(y: np.ndarray, spec):
    """y as the twin reads it (n, n_out) in the network's dtype, or None when it is not valid input."""
    n_out, dtype, loss = spec["layer_sizes"][-1], np.dtype(spec["dtype"]), spec["loss"]
    if y.dtype.kind not in "fiub":
        return None
    with np.errstate(all="ignore"):
        if loss == "cross_entropy":
            if y.ndim == 2 and y.shape[1] == 1:
                y = y.reshape(-1)
            if y.ndim == 1:
                v = y.astype(np.float64)
                if not (np.isfinite(v).all() and (v == np.round(v)).all() and (v >= 0).all() and (v < n_out).all()):
                    return None
                if y.dtype.kind == "u" and (y >= n_out).any():
                    return None
                one_hot = np.zeros((y.shape[0], n_out), dtype=dtype)
                one_hot[np.arange(y.shape[0]), v.astype(np.int64)] = 1
                return one_hot
        if y.ndim == 1 and n_out == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != n_out:
            return None
        cast = y.astype(dtype)
        if not np.isfinite(cast).all():
            return None
        if loss in ("cross_entropy", "binary_cross_entropy") and ((cast < 0).any() or (cast > 1).any()):
            return None
        if loss == "cross_entropy" and (np.abs(cast.sum(axis=1, dtype=np.float64) - 1) > 1e-4).any():
            return None
        return np.ascontiguousarray(cast)


def valid_X(X: np.ndarray, spec):
    """X cast to the network's dtype when it is valid input, else None."""
    if X.dtype.kind not in "fiub" or X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != spec["layer_sizes"][0]:
        return None
    with np.errstate(all="ignore"):
        cast = X.astype(spec["dtype"])
    return cast if np.isfinite(cast).all() else None


def forward_scale(net, X) -> float:
    """A bound on the outputs' magnitude: |x| through every layer's |W| and |b| (activations are 1-Lipschitz, or bounded)."""
    bound = max(1.0, finite_scale(X))
    for W, b in zip(net.weights, net.biases):
        bound = bound * max(1.0, W.shape[1] * finite_scale(W)) + finite_scale(b) + 1.0
    return bound


NET_RTOL = {"float32": 1e-4, "float64": 1e-10}


def close_network(actual, expected, spec, scale, what):
    rtol = NET_RTOL[spec["dtype"]]
    try:
        assert_close(actual, expected, rtol=rtol, atol=rtol * scale, what=what)
    except AssertionError as error:
        raise Failure(str(error)) from None


def expect_refusal(ok, result, names, what, allowed=ACCEPTED):
    if ok:
        raise Failure(f"{what}: accepted invalid input (returned {short(result)}); expected a ValueError/TypeError naming it")
    check_error(result, names, what, allowed)


def network_case(data):
    """A network, its twin, and X, y as given to it (specs and arrays) and as the twin reads
    them (Xv, yv: None where they are not valid input)."""
    spec = data.draw(networks(), label="network")
    net = make_network(spec)
    twin = reference.Network.from_network(net)
    X_spec, y_spec = data.draw(net_inputs(spec), label="X, y")
    X, y = X_spec.build(), build_y(y_spec, spec)
    Xv = valid_X(X_spec.build(True), spec) if X_spec.is_real else None
    yv = dense_targets(build_y(y_spec, spec, True), spec) if Xv is not None else None
    if yv is not None and yv.shape[0] != Xv.shape[0]:
        yv = None
    return spec, net, twin, X_spec, y_spec, X, y, Xv, yv


def network_call(data, method: str) -> None:
    spec, net, twin, X_spec, y_spec, X, y, Xv, yv = network_case(data)
    what = f"Network({spec}).{method}(X={X_spec!r}, y={y_spec!r})"
    record(what)
    if method in ("predict", "predict_proba", "forward", "decision_function"):
        ok, out = attempt(getattr(net, method), X)
        if method == "predict_proba" and not net.is_classifier:
            return expect_refusal(ok, out, ["predict_proba", "loss"], what)
        if Xv is None:
            return expect_refusal(ok, out, ["X"], what)
        if not ok:
            raise Failure(f"{what}: refused valid input: {type(out).__name__}: {out}")
        logits = twin.forward(Xv)
        scale = forward_scale(net, Xv)
        if method in ("forward", "decision_function") or (method == "predict" and not net.is_classifier):
            return close_network(out, logits, spec, scale, what)
        if method == "predict_proba":
            expected = reference.softmax(logits) if spec["loss"] == "cross_entropy" else reference.activation_forward(logits, "sigmoid")
            return close_network(out, expected, spec, scale, what)
        tol = NET_RTOL[spec["dtype"]] * scale
        if spec["loss"] == "cross_entropy":
            chosen = logits[np.arange(len(out)), out]
            if out.shape != (Xv.shape[0],) or (chosen < logits.max(axis=1) - tol).any():
                raise Failure(f"{what}: classes {out} are not the twin's argmax of {logits}")
        else:
            expected = (logits > 0).astype(np.int64)
            expected = expected[:, 0] if spec["layer_sizes"][-1] == 1 else expected
            if out.shape != expected.shape or ((out != expected) & (np.abs(logits.reshape(out.shape)) > tol)).any():
                raise Failure(f"{what}: labels {out}, the twin's {expected}")
        return None
    if method in ("evaluate", "score"):
        ok, out = attempt(getattr(net, method), X, y)
        if Xv is None or yv is None:
            return expect_refusal(ok, out, ["X", "y"], what)
        if not ok:
            raise Failure(f"{what}: refused valid input: {type(out).__name__}: {out}")
        logits = twin.forward(Xv)
        scale = forward_scale(net, Xv) + finite_scale(yv)
        with np.errstate(all="ignore"):
            if method == "evaluate" or net.is_classifier:
                loss = reference.loss_forward(spec["loss"], logits, yv, net.huber_delta)
                correct = reference.count_correct(spec["loss"], logits, yv)
                units = yv.shape[0] if spec["loss"] == "cross_entropy" else yv.size
                if method == "evaluate":
                    close_network(out["loss"], loss, spec, scale * scale, what + " loss")
                    if net.is_classifier and abs(out["accuracy"] - correct / units) > 1.0 / units + 1e-12 and scale < 1e3:
                        raise Failure(f"{what}: accuracy {out['accuracy']}, the twin's {correct / units}")
                elif abs(out - correct / units) > 1.0 / units + 1e-12 and scale < 1e3:
                    raise Failure(f"{what}: score {out}, the twin's accuracy {correct / units}")
                return None
            residual = ((yv.astype(np.float64) - logits.astype(np.float64)) ** 2).sum(axis=0)
            total = ((yv.astype(np.float64) - yv.astype(np.float64).mean(axis=0)) ** 2).sum(axis=0)
        if np.isfinite(residual).all() and (total > 1e-6 * scale * scale).all():
            r2 = float(np.mean(1 - residual / total))
            tol = NET_RTOL[spec["dtype"]] * 100 * scale * scale / max(float(total.min()), 1e-300)
            if not (abs(out - r2) <= max(tol, 1e-6)):
                raise Failure(f"{what}: score {out}, the twin's R² {r2}")
        return None
    raise ValueError(method)


def fit_like(data, method: str) -> None:
    spec, net, twin, X_spec, y_spec, X, y, Xv, yv = network_case(data)
    opt, twin_opt = data.draw(optimizers(), label="optimizer")
    # The twin shuffles as the engine does once reference.Network.fit takes ``shuffle``;
    # until then a shuffled fit is held to the contract only (no crash, a named error or a result).
    twin_shuffles = "shuffle" in inspect.signature(reference.Network.fit).parameters
    shuffle = data.draw(st.booleans(), label="shuffle")
    if method == "fit":
        # No valid huge epoch counts: 2**62 epochs are valid and would run for ever.
        epochs = data.draw(mostly((1, 2, 3), (0, -1, 1.5, True, None, 2**63, 2**64, 2**100, -(2**63) - 1)), label="epochs")
        batch_size = data.draw(mostly((None, 1, 3, 7, 33), (0, -1, 2.0, True) + HUGE_INTS), label="batch_size")
        call = lambda: net.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=opt, shuffle=shuffle)  # noqa: E731
        valid_args = (isinstance(epochs, int) and not isinstance(epochs, bool) and 1 <= epochs <= 3
                      and (batch_size is None or (isinstance(batch_size, int) and not isinstance(batch_size, bool)
                                                  and batch_size >= 1)))
        names = ["X", "y", "epochs", "batch_size"]
    else:
        epochs, batch_size = 1, None
        classes = data.draw(st.sampled_from((None, None, "right", [0, 1], [2**63])), label="classes")
        if classes == "right":
            classes = list(range(spec["layer_sizes"][-1]))
        call = lambda: net.partial_fit(X, y, classes=classes, optimizer=opt, shuffle=shuffle)  # noqa: E731
        valid_args = classes is None or (spec["loss"] == "cross_entropy" and list(classes) == list(range(spec["layer_sizes"][-1])))
        names = ["X", "y", "classes"]
    what = (f"Network({spec}).{method}(X={X_spec!r}, y={y_spec!r}, optimizer={opt!r}, epochs={epochs!r}, "
            f"batch_size={batch_size!r}, shuffle={shuffle})")
    record(what)
    ok, out = attempt(call)
    if Xv is None or yv is None or not valid_args:
        return expect_refusal(ok, out, names, what)
    if not ok and batch_size is not None and batch_size >= 2**63:  # past int64: refusing it is fine too
        return check_error(out, names, what)
    if shuffle and not twin_shuffles:
        if not ok and not isinstance(out, FloatingPointError):
            raise Failure(f"{what}: refused valid input: {type(out).__name__}: {out}")
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twin_out = twin.fit(Xv, yv, epochs=epochs, batch_size=batch_size, optimizer=reference.Optimizer(**twin_opt),
                            **({"shuffle": shuffle} if twin_shuffles else {}))
    with np.errstate(all="ignore"):  # finite in the network's dtype: a float32 fit may stop past float32's range
        twin_finite = np.isfinite(twin.params).all() and np.isfinite(np.array(twin_out["loss"], dtype=spec["dtype"])).all()
    if not ok:
        if isinstance(out, FloatingPointError) and not twin_finite:
            return None
        raise Failure(f"{what}: refused valid input: {type(out).__name__}: {out} (the twin's losses {twin_out['loss']})")
    if not twin_finite:
        raise Failure(f"{what}: finished, but the twin's fit turns non-finite ({twin_out['loss']}): "
                      "expected FloatingPointError")
    scale = forward_scale(net, Xv) * (1 + finite_scale(yv))
    close_network(net.params, twin.params, spec, scale * (10 if spec["dtype"] == "float32" else 1), what + " params")
    if method == "fit":
        close_network(np.array(out.history["loss"]), np.array(twin_out["loss"]), spec, scale * scale, what + " losses")


def backward_step(data, method: str) -> None:
    spec, net, twin, X_spec, y_spec, X, y, Xv, yv = network_case(data)
    what = f"Network({spec}).{method}(X={X_spec!r}, y={y_spec!r})"
    record(what)
    ok, pred = attempt(net.forward, X)
    if Xv is None:
        return expect_refusal(ok, pred, ["X"], what + " (forward)")
    if not ok:
        raise Failure(f"{what}: forward refused valid input: {pred}")
    if method == "layer_cache":
        return check_layer_cache(data, net, twin, Xv, spec, what)
    if method == "backward_output":  # dL/d(output) of the network's own loss: the grads of backward
        d_spec = data.draw(arrays(maybe_wrong(pred.shape, draw=data.draw)), label="d_output")
        d_output = d_spec.build()
        ok, out = attempt(net.backward_output, X, d_output)
        with np.errstate(all="ignore"):
            d_valid = d_output.astype(spec["dtype"]) if d_spec.is_real and d_output.shape == pred.shape else None
        if d_valid is None or not np.isfinite(d_valid).all():
            return expect_refusal(ok, out, ["X", "d_output"], what + f" d_output={d_spec!r}")
        if not ok:
            raise Failure(f"{what}: backward_output refused valid input (d_output={d_spec!r}): {out}")
        with np.errstate(all="ignore"):
            twin.forward(Xv)
            twin_grads = twin_backward_output(twin, Xv, d_valid)
        scale = square(forward_scale(net, Xv)) * (1 + finite_scale(d_valid))
        if np.isfinite(twin_grads).all():
            close_network(net.grads, twin_grads, spec, scale, what + f" grads from d_output={d_spec!r}")
        return None
    ok, out = attempt(net.backward, X, y, pred)
    if yv is None:
        return expect_refusal(ok, out, ["X", "y", "y_pred"], what)
    if not ok:
        raise Failure(f"{what}: backward refused valid input: {type(out).__name__}: {out}")
    with np.errstate(all="ignore"):
        twin_pred = twin.forward(Xv)
        twin.backward(Xv, yv, twin_pred.astype(twin.dtype))
    scale = square(forward_scale(net, Xv)) * (1 + finite_scale(yv))
    if np.isfinite(twin.grads).all():
        close_network(net.grads, twin.grads, spec, scale, what + " grads")
    if method == "backward":
        return None
    opt, twin_opt = data.draw(optimizers(), label="optimizer")
    twin_optimizer = reference.Optimizer(**twin_opt)
    for i in range(2):
        ok, out = attempt(net.step, opt)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin_optimizer.step(twin.params, twin.grads, twin.segments())
        if not np.isfinite(twin.params).all():  # (non-finite grads clamped by clip_value make a finite step)
            if ok:
                raise Failure(f"{what}: step {i} with {opt!r} returned {out}, but the twin's parameters turn non-finite")
            check_error(out, ["grads"], what, allowed=(FloatingPointError,))
            return None
        if not ok:
            raise Failure(f"{what}: step {i} with {opt!r} raised {type(out).__name__}: {out}")
        close_network(net.params, twin.params, spec, scale + finite_scale(twin.params), f"{what} params after step {i} with {opt!r}")


def twin_backward_output(twin, X, d_output) -> np.ndarray:
    """The twin's grads backpropagated from a given dL/d(output) after its forward."""
    twin.backward_output(X, d_output)
    return twin.grads.copy()


def check_layer_cache(data, net, twin, Xv, spec, what) -> None:
    """layer_cache(layer) after forward: (Z, A) of that layer as the twin caches them, or a
    named error for a layer that is not one."""
    n_layers = len(spec["layer_sizes"]) - 1
    layer = data.draw(mostly(tuple(range(n_layers)), (-1, n_layers, 2**63, 2**64, 1.5, True, None)), label="layer")
    ok, out = attempt(net.layer_cache, layer)
    what = f"{what} layer_cache({layer!r})"
    if not (type(layer) is int and 0 <= layer < n_layers):
        return expect_refusal(ok, out, ["layer"], what)
    if not ok:
        raise Failure(f"{what}: refused a valid layer: {type(out).__name__}: {out}")
    with np.errstate(all="ignore"):
        twin.forward(Xv)
    zs, activations = twin.cache
    scale = forward_scale(net, Xv)
    for got, expected, name in zip(out, (zs[layer], activations[layer + 1]), ("Z", "A")):
        close_network(got, expected, spec, scale, f"{what} {name}")


def trained(data):
    spec = data.draw(networks(classifier_ok=False), label="network")
    net = make_network(spec)
    opt, _ = data.draw(optimizers(), label="optimizer")
    rng = np.random.default_rng(spec["seed"])
    X = rng.standard_normal((7, spec["layer_sizes"][0]))
    y = rng.standard_normal((7, spec["layer_sizes"][-1]))
    if data.draw(st.booleans(), label="trained first"):
        try:
            net.fit(X, y, epochs=2, batch_size=3, optimizer=opt)
        except FloatingPointError:  # it diverged: the weights keep their last finite values
            pass
    return spec, net, X, y


def same_future(a, b, X, y, what):
    """Two networks that must be alike: equal parameters now, and after the same shuffled fit."""
    if not np.array_equal(a.params, b.params) or a.layer_sizes != b.layer_sizes or a.dtype != b.dtype:
        raise Failure(f"{what}: the copy differs from the original")
    outcomes = [attempt(net.fit, X, y, epochs=2, batch_size=3) for net in (a, b)]
    if outcomes[0][0] != outcomes[1][0] or not np.array_equal(a.params, b.params):
        raise Failure(f"{what}: the copy's next shuffled fit differs from the original's")


def copy_pickle(data, method: str) -> None:
    spec, net, X, y = trained(data)
    what = f"Network({spec}).{method}"
    record(what)
    if method == "copy":
        other = net.copy()
    else:
        other = pickle.loads(pickle.dumps(net))
    same_future(net, other, X, y, what)


def leaves(value, path=()):
    """The paths of the tuple/list/dict leaves of a pickled state."""
    if isinstance(value, (tuple, list)):
        if len(value) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            yield path, value  # four words: a generator state
        for i, v in enumerate(value):
            yield from leaves(v, path + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, (np.ndarray, int, float, str)) and not isinstance(value, bool):
        yield path, value


def replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replace(value[head], rest, new)}
    items = list(value)
    items[head] = replace(items[head], rest, new)
    return tuple(items) if isinstance(value, tuple) else items


def tampered(leaf, draw):
    """(a tampered leaf, whether restoring it must fail)."""
    if isinstance(leaf, tuple):  # generator words
        return draw(st.sampled_from((((0, 0, 0, 0), True), ((1, 0, 0, 0), False), ((-1, 0, 0, 0), True),
                                     ((2**64, 1, 1, 1), True), ((1, 2, 3), True))))
    if isinstance(leaf, np.ndarray):
        if leaf.dtype.kind != "f":
            return leaf, False
        choice = draw(st.sampled_from(("scalar", "short", "nan", "inf", "2d", "object", "huge")))
        with np.errstate(all="ignore"):
            return {
                "scalar": (np.float64(0.5) if leaf.ndim else np.array([0.5]), True),
                "short": (leaf[:-1] if leaf.size else np.zeros(3), True),
                "nan": (np.full_like(leaf, np.nan), leaf.size > 0),
                "inf": (np.full_like(leaf, np.inf), leaf.size > 0),
                "2d": (leaf.reshape(1, -1), False),
                "object": (leaf.astype(object), False),
                "huge": (np.full(leaf.shape, 1e300), leaf.size > 0 and leaf.dtype == np.float32),
            }[choice]
    if isinstance(leaf, float):
        new = draw(st.sampled_from((math.nan, math.inf, -math.inf)))
        return new, True
    if isinstance(leaf, int):
        return draw(st.sampled_from(((-1, True), (2**64, True), (2**100, True), (2**63, False), (0, False))))
    return draw(st.sampled_from((("bogus", True), ("", True)))) if isinstance(leaf, str) else (leaf, False)


def pickled_state(data) -> None:
    spec, net, X, y = trained(data)
    fn, args = net.__reduce__()[:2]
    paths = list(leaves(args))
    path, leaf = data.draw(st.sampled_from(paths), label="field")
    new, must_fail = tampered(leaf, data.draw)
    what = f"restoring Network({spec}) with field {path} = {short(new)} (was {short(leaf)})"
    record(what)
    ok, out = attempt(fn, *replace(args, path, new))
    if not ok:
        check_error(out, ["params", "state", "optimizer", "rng", "steps", "buffers", "seed", "layer_sizes", "architecture",
                          "activation", "output_activation", "loss", "init", "dtype", "huber_delta",
                          "settings", "spare", "words", "rng_state", "optimizer_state"], what)
        return
    if must_fail:
        raise Failure(f"{what}: restored silently (params {short(out.params)}); expected a ValueError naming the field")
    if not np.isfinite(out.params).all():
        raise Failure(f"{what}: restored non-finite parameters")
    record(what + " -- then a shuffled fit (a hang here: the generator state was not checked)")
    ok, error = attempt(out.fit, X, y, epochs=2, batch_size=3)
    if not ok and not isinstance(error, FloatingPointError):
        raise Failure(f"{what}: the restored network then fails to fit: {type(error).__name__}: {error}")


NETWORK_TARGETS = {
    "network.predict": lambda d: network_call(d, "predict"),
    "network.predict_proba": lambda d: network_call(d, "predict_proba"),
    "network.forward": lambda d: network_call(d, "forward"),
    "network.evaluate": lambda d: network_call(d, "evaluate"),
    "network.score": lambda d: network_call(d, "score"),
    "network.fit": lambda d: fit_like(d, "fit"),
    "network.partial_fit": lambda d: fit_like(d, "partial_fit"),
    "network.backward": lambda d: backward_step(d, "backward"),
    "network.step": lambda d: backward_step(d, "step"),
    "network.decision_function": lambda d: network_call(d, "decision_function"),
    "network.backward_output": lambda d: backward_step(d, "backward_output"),
    "network.layer_cache": lambda d: backward_step(d, "layer_cache"),
    "network.copy": lambda d: copy_pickle(d, "copy"),
    "network.pickle": lambda d: copy_pickle(d, "pickle"),
    "network.pickled_state": pickled_state,
}


def constructor(data) -> None:
    sizes = data.draw(st.integers(0, 4).flatmap(layer_sizes), label="layer_sizes")
    kwargs = {
        "activation": data.draw(names_or_bad(ACTIVATION_NAMES), label="activation"),
        "loss": data.draw(names_or_bad(LOSS_NAMES), label="loss"),
        "dtype": data.draw(st.sampled_from(("float32", "float64", "float16", "int32", None, "bogus", np.float64)), label="dtype"),
        "seed": data.draw(st.one_of(st.integers(0, 100), st.sampled_from(HUGE_INTS + (1.5, "7"))), label="seed"),
        "huber_delta": data.draw(st.sampled_from((1.0, 1.0, 0.5, 0.0, math.nan, 2**63)), label="huber_delta"),
    }
    what = f"Network({sizes!r}, **{kwargs!r})"
    record(what)
    ok, net = attempt(fm.Network, list(sizes), **kwargs)
    valid_sizes = (len(sizes) >= 2 and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 7 for s in sizes))
    if not ok:
        check_error(net, ["layer_sizes", "activation", "loss", "dtype", "seed", "huber_delta", "output_activation"], what)
        if valid_sizes and kwargs["activation"] in ACTIVATION_NAMES and kwargs["loss"] in LOSS_NAMES \
                and kwargs["dtype"] in ("float32", "float64", np.float64) and isinstance(kwargs["seed"], int) \
                and 0 <= kwargs["seed"] < 2**64 and kwargs["huber_delta"] in (1.0, 0.5, 2**63) \
                and not (kwargs["loss"] == "cross_entropy" and sizes[-1] < 2):
            raise Failure(f"{what}: refused valid arguments: {net}")
        return
    if not valid_sizes:
        raise Failure(f"{what}: accepted layer sizes {sizes!r} ({net!r}); expected a ValueError naming layer_sizes")
    expected = reference.init_params(sizes, list(net.init), net.seed, net.dtype)
    if not np.array_equal(net.params, expected):
        raise Failure(f"{what}: initial parameters differ from reference.init_params")


LAYER_VALUES = {
    "inputs": (1, 2, 3, 0, -1, 2.0, True, None, "3", 2**63),
    "outputs": (1, 2, 3, 0, -1, 2.5, None, 2**64),
    "width": (1, 2, 3, 0, -1, None, "2"),
    "init": ("auto", "he_normal", "xavier_uniform", "zeros", None, 3),
    "name": ("relu", "tanh", "gelu", "linear", "softplus", None, 1),
    "eps": (1e-5, 1e-3, 0.0, -1.0, math.nan, math.inf, "1e-5", True),
    "momentum": (0.1, 0.5, 1.0, 0.0, 1.5, math.nan, None),
    "p": (0.0, 0.25, 0.5, 1.0, -0.1, math.nan, None),
}
LAYER_KEYS = {"dense": ("inputs", "outputs", "init"), "layer_norm": ("width", "eps"),
              "batch_norm": ("width", "eps", "momentum"), "activation": ("name",), "dropout": ("p",)}


@st.composite
def layer_specs(draw):
    """A list of layer dicts whose widths chain (residual blocks keep theirs), then now and
    then one entry spoiled: a bad value, an unknown key or type, a width that breaks the chain."""
    width = draw(st.integers(1, 4))
    layers = []

    def block(width, allow_residual):
        kind = draw(st.sampled_from(("dense", "dense", "layer_norm", "batch_norm", "activation", "dropout")
                                    + (("residual",) if allow_residual else ())))
        if kind == "dense":
            outputs = draw(st.integers(1, 4))
            spec = {"type": "dense", "inputs": width, "outputs": outputs}
            if draw(st.booleans()):
                spec["init"] = draw(st.sampled_from(LAYER_VALUES["init"][:3]))
            return spec, outputs
        if kind == "residual":
            inner = []
            for _ in range(draw(st.integers(1, 3))):
                spec, w = block(width, False)
                if w != width:  # a block keeps its width
                    spec = {"type": "dense", "inputs": width, "outputs": width}
                inner.append(spec)
            return {"type": "residual", "block": inner}, width
        spec = {"type": kind}
        for key in LAYER_KEYS[kind]:
            if key != "width" and (key == "name" or draw(st.booleans())):
                spec[key] = draw(st.sampled_from(LAYER_VALUES[key][:3]))
        return spec, width

    layers.append({"type": "dense", "inputs": width, "outputs": draw(st.integers(1, 4))})
    width = layers[0]["outputs"]
    for _ in range(draw(st.integers(0, 5))):
        spec, width = block(width, True)
        layers.append(spec)
    if draw(st.integers(0, 2)) == 0:  # spoil one entry
        target = draw(st.sampled_from(layers))
        if target["type"] == "residual" and target["block"]:
            target = draw(st.sampled_from(target["block"]))
        keys = LAYER_KEYS.get(target["type"], ())
        how = draw(st.sampled_from(("value", "key", "type")))
        if how == "value" and keys:
            key = draw(st.sampled_from(keys))
            target[key] = draw(st.sampled_from(LAYER_VALUES[key][3:]))
        elif how == "key":
            target["bias"] = False
        else:
            target["type"] = draw(st.sampled_from(("conv", 7, None)))
    return layers


def from_architecture(data) -> None:
    """from_architecture: a network whose architecture round-trips and whose eval pass is
    its twin's, or a ValueError/TypeError that names the entry."""
    spec = data.draw(layer_specs(), label="architecture")
    dtype = data.draw(st.sampled_from(("float32", "float64")), label="dtype")
    what = f"Network.from_architecture({spec!r}, dtype={dtype!r})"
    record(what)
    ok, net = attempt(fm.Network.from_architecture, spec, dtype=dtype, seed=1)
    if not ok:
        return check_error(net, ["architecture", "init", "layers"], what)
    again = fm.Network.from_architecture(net.architecture, dtype=dtype, seed=1)
    if again.architecture != net.architecture or not np.array_equal(again.params, net.params):
        raise Failure(f"{what}: from_architecture(net.architecture) builds another network")
    X = np.random.default_rng(0).standard_normal((5, net.n_inputs)).astype(dtype)
    twin = reference.LayerNetwork.from_network(net)
    close_network(net.predict(X), twin.predict(X), {"dtype": dtype}, forward_scale(net, X) * 10, what + " predict")
    out = net.forward(X)
    close_network(out, twin.forward(X), {"dtype": dtype}, forward_scale(net, X) * 10, what + " forward")


NETWORK_TARGETS["network.from_architecture"] = from_architecture


def set_num_threads(data) -> None:
    """fm.set_num_threads: a named error, or at most that many threads (fewer when they cannot
    start) and kernels whose results do not change."""
    n = data.draw(mostly((1, 2, 3, 4), (0, -1, 1.5, True, None, "2", 2**31, 2**32, 2**63, 2**64, 2**100)), label="n")
    what = f"fastmlp.set_num_threads({n!r})"
    record(what)
    saved = fm.get_num_threads()
    try:
        ok, error = attempt(fm.set_num_threads, n)
        if not ok:
            check_error(error, ["n"], what)
            if type(n) is int and n in (1, 2, 3, 4):
                raise Failure(f"{what}: refused a valid count: {error}")
            return
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise Failure(f"{what}: accepted an invalid count")
        now = fm.get_num_threads()
        if not 1 <= now <= n:
            raise Failure(f"{what}: get_num_threads() is then {now}")
        a = np.arange(12.0).reshape(3, 4)
        compare(kernels.gemm(a, a.T), reference.gemm(a, a.T), scale=500.0, what=f"gemm after {what}")
    finally:
        fm.set_num_threads(saved)


def network_target(name):
    body = {"network.constructor": constructor, "threads.set_num_threads": set_num_threads}.get(name) \
        or NETWORK_TARGETS[name]

    @SETTINGS
    @given(st.data())
    def test(data):
        body(data)
    return test


def crash_on_purpose() -> None:
    """The target ``selftest.segfault``: test_fuzz.py checks that a crash is reported, with its case."""
    import ctypes

    record("selftest.segfault: reading address 0")
    ctypes.string_at(0)


def targets() -> list[str]:
    return [f"kernels.{n}" for n in kernels.__all__] + ["network.constructor", *NETWORK_TARGETS, "threads.set_num_threads"]


def report_failure(target: str, error: BaseException) -> None:
    """Each distinct failure: its message and the falsifying example hypothesis attached."""
    found = list(getattr(error, "exceptions", None) or [error])
    print(f"FUZZ FAILURE in {target}: {len(found)} distinct failure(s)", flush=True)
    for i, exc in enumerate(found, 1):
        print(f"--- {target} failure {i}: {type(exc).__name__}: {exc}")
        for note in getattr(exc, "__notes__", []):
            print(f"    {note}")
        if not isinstance(exc, Failure):  # a bug in the driver or an unexpected exception: its traceback
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stdout)
    sys.stdout.flush()


def main(argv) -> int:
    if argv[1:] == ["--list"]:
        print("\n".join(targets()))
        return 0
    (target,) = argv[1:]
    faulthandler.enable()  # a crash prints where it happened
    if os.environ.get("FASTMLP_FUZZ_DUMP_AFTER"):  # a hang prints where it waits before the parent kills it
        faulthandler.dump_traceback_later(float(os.environ["FASTMLP_FUZZ_DUMP_AFTER"]), exit=False)
    if target == "selftest.segfault":
        crash_on_purpose()
    if target == "selftest.hang":  # test_fuzz.py checks that a hang is reported, with its case
        record("selftest.hang: sleeping")
        threading.Event().wait()
    test = kernel_target(target.split(".", 1)[1]) if target.startswith("kernels.") else network_target(target)
    try:
        test()
    except BaseException as error:  # noqa: BLE001 - reported, with hypothesis's falsifying examples
        report_failure(target, error)
        return 1
    finally:
        record("")
    print(f"{target}: {EXAMPLES} examples passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
