"""kernels.gemm's fast path (_core.gemm_fast_path) held to its checked path (kernels._gemm_checked).

kernels.gemm first offers its arguments to _core.gemm_fast_path, which runs the
common case in one C++ call and returns None for anything else; the checked path
then converts, copies or raises. Over a matrix of inputs (dtypes, transposes, views
with strides, column-major storage, aliasing between c and a or b, 0-size
dimensions, lists, odd alpha / beta / trans values), the two must agree bit for
bit: the same result (same dtype, shape, values, and c itself returned when given)
or the same exception type and message. The fast path must never raise on its own
account, and must leave c untouched whenever it declines. No timing here:
benchmarks/bench_small_gemm.py measures the gain.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from fastmlp import _core, kernels

SHAPES = ((1, 1, 1), (3, 5, 4), (1, 7, 3), (4, 1, 3), (2, 9, 1), (0, 3, 2), (3, 0, 2), (3, 4, 0), (1, 0, 0))
LAYOUTS = ("contiguous", "column-major", "row-gaps", "column-gaps", "negative", "list")


def stored(values: np.ndarray, layout: str):
    """``values`` (a 2-D array) in the given storage; equal in value, never sharing memory."""
    gap = np.nan if values.dtype.kind == "f" else 0  # what the gaps between a view's elements hold
    if layout == "contiguous":
        return values.copy()
    if layout == "column-major":
        return np.asfortranarray(values)
    if layout == "row-gaps":  # rows contiguous, a gap of NaN after each: unit column stride, row stride > row
        big = np.full((values.shape[0], values.shape[1] + 3), gap, values.dtype)
        big[:, : values.shape[1]] = values
        return big[:, : values.shape[1]]
    if layout == "column-gaps":  # every 2nd column: the checked path copies it
        big = np.full((values.shape[0], 2 * values.shape[1]), gap, values.dtype)
        big[:, ::2] = values
        return big[:, ::2]
    if layout == "negative":
        return values[::-1, ::-1].copy()[::-1, ::-1]
    if layout == "list":
        return values.tolist()
    raise ValueError(layout)


def outcome(call):
    """("result", array) or ("error", type, message) for one call."""
    try:
        return ("result", call())
    except Exception as error:  # noqa: BLE001 - the point is to compare whatever is raised
        return ("error", type(error), str(error))


def same_values(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == y.dtype.kind == "f")


def assert_same_outcome(fast, slow, what):
    assert fast[0] == slow[0], f"{what}: fast path {fast[:1] + fast[2:] if fast[0] == 'error' else 'returned'}, " \
                               f"checked path {slow[1:] if slow[0] == 'error' else 'returned'}"
    if fast[0] == "error":
        assert fast[1:] == slow[1:], f"{what}: errors differ: {fast[1:]} vs {slow[1:]}"
        return
    f, s = fast[1], slow[1]
    assert type(f) is type(s), f"{what}: returned {type(f).__name__} vs {type(s).__name__}"
    assert f.dtype == s.dtype and f.shape == s.shape, f"{what}: {f.dtype} {f.shape} vs {s.dtype} {s.shape}"
    assert same_values(f, s), f"{what}: values differ, max |diff| = " \
                                                 f"{np.nanmax(np.abs(f.astype(float) - s)) if f.size else 0}"


def compare(make, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, what=""):
    """Runs kernels.gemm and kernels._gemm_checked on fresh (a, b, c) from ``make`` and
    compares outcomes, the returned object (c itself when given), and the inputs afterwards;
    then _core.gemm_fast_path alone. Returns whether the fast path ran the call."""
    runs = []
    for gemm in (kernels.gemm, kernels._gemm_checked):
        a, b, c = make()
        before = [np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in (a, b)]
        if gemm is kernels.gemm:
            result = outcome(lambda: gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b))
        else:
            result = outcome(lambda: gemm(a, b, c, alpha, beta, trans_a, trans_b))
        if result[0] == "result" and c is not None:
            assert result[1] is c, f"{what}: c given but another array returned"
        inputs_after = [x for x in (a, b)]
        runs.append((result, before, inputs_after, c))
    assert_same_outcome(runs[0][0], runs[1][0], what)
    # The fast path alone: it never raises (except for what the GEMM driver itself
    # would raise on either path); when it declines, c is as it was.
    a, b, c = make()
    c_before = np.array(c, copy=True) if isinstance(c, np.ndarray) else None
    fast = _core.gemm_fast_path(a, b, c, alpha, beta, trans_a, trans_b)
    if fast is None:
        if c_before is not None:
            assert same_values(c, c_before), f"{what}: the fast path declined but wrote c"
    else:
        assert_same_outcome(("result", fast), runs[1][0], what + " (fast path alone)")
    return fast is not None
    # a and b are read only (unless c is one of them: then both paths wrote it the same way).
    for (_, before, after, c) in runs:
        for old, new in zip(before, after):
            if isinstance(new, np.ndarray) and not (c is not None and np.may_share_memory(new, c)):
                assert same_values(old, new), f"{what}: an input was written"


def operands(m, n, k, dtype_a, dtype_b, trans_a, trans_b, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype_a)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype_b)
    return a, b


# ---- the matrix: dtypes × layouts × transposes × shapes × c ---------------------------------


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64),
                                    (np.int64, np.float32), (np.dtype(">f4"), np.dtype(">f4"))],
                         ids=["float32", "float64", "mixed", "int-float32", "big-endian"])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_fast_and_checked_paths_agree_over_layouts_and_shapes(dtypes, trans_a, trans_b):
    for (m, n, k), layout_a, layout_b in itertools.product(SHAPES, LAYOUTS, LAYOUTS):
        a0, b0 = operands(m, n, k, *dtypes, trans_a, trans_b)
        out_dtype = np.result_type(np.float32, *dtypes) if all(d == np.float32 for d in dtypes) else np.float64
        c0 = np.random.default_rng(1).standard_normal((m, n)).astype(out_dtype)
        what = f"{m}×{n}×{k} a {layout_a} b {layout_b} trans {trans_a},{trans_b} {dtypes}"
        make_new = lambda: (stored(a0, layout_a), stored(b0, layout_b), None)  # noqa: E731
        fast_new = compare(make_new, alpha=0.75, trans_a=trans_a, trans_b=trans_b, what=what + " new C")
        make_into = lambda: (stored(a0, layout_a), stored(b0, layout_b), c0.copy())  # noqa: E731
        fast_into = compare(make_into, alpha=0.75, beta=-0.5, trans_a=trans_a, trans_b=trans_b, what=what + " into c")
        # The fast path's case: ndarrays of one native float dtype that the checked path
        # reads where they lie (neither converted nor copied; empty ones are never read).
        def read_in_place(x):
            return isinstance(x, np.ndarray) and (
                x.size == 0 or np.shares_memory(kernels._matrix(x, "x", x.dtype, False)[0], x))

        common = dtypes[0] == dtypes[1] and dtypes[0] in (np.float32, np.float64) and \
            all(read_in_place(x) for x in make_new()[:2])
        assert fast_new == fast_into == common, f"{what}: fast path taken {fast_new, fast_into}, expected {common}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c_kind", ["row-gaps", "column-major", "column-gaps", "read-only", "other dtype",
                                    "list", "wrong shape", "3-D", "1-D", "subclass", "int", "big-endian"])
def test_fast_and_checked_paths_agree_on_every_kind_of_c(dtype, c_kind):
    for (m, n, k), (trans_a, trans_b) in itertools.product(SHAPES, itertools.product([False, True], repeat=2)):
        a0, b0 = operands(m, n, k, dtype, dtype, trans_a, trans_b)
        c0 = np.random.default_rng(2).standard_normal((m, n)).astype(dtype)

        def make():
            if c_kind == "read-only":
                c = c0.copy()
                c.flags.writeable = False
            elif c_kind == "other dtype":
                c = c0.astype(np.float64 if dtype == np.float32 else np.float32)
            elif c_kind == "list":
                c = c0.tolist()
            elif c_kind == "wrong shape":
                c = np.zeros((m + 1, n), dtype)
            elif c_kind == "3-D":
                c = c0.reshape(m, n, 1).copy()
            elif c_kind == "1-D":
                c = c0.reshape(-1).copy()
            elif c_kind == "subclass":
                c = c0.copy().view(np.matrix)
            elif c_kind == "int":
                c = c0.astype(np.int64)
            elif c_kind == "big-endian":
                c = c0.astype(np.dtype(dtype).newbyteorder(">"))
            else:
                c = stored(c0, c_kind)
            return a0.copy(), b0.copy(), c

        compare(make, alpha=1.5, beta=0.25, trans_a=trans_a, trans_b=trans_b,
                what=f"{m}×{n}×{k} c {c_kind} trans {trans_a},{trans_b}")


SCALARS = [1.0, 0.5, 0.0, -2, 3, True, np.float64(0.5), np.float32(0.5), np.int64(2), float("nan"), float("inf"),
           -float("inf"), 10**400, "1.0", None, 1 + 0j]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_and_checked_paths_agree_on_alpha_beta_and_flags(dtype):
    a0, b0 = operands(3, 4, 5, dtype, dtype, False, False)
    c0 = np.ones((3, 4), dtype)
    for value in SCALARS:
        compare(lambda: (a0, b0, None), alpha=value, what=f"alpha {value!r}, new C")
        compare(lambda: (a0, b0, None), beta=value, what=f"beta {value!r}, new C (beta unused)")
        compare(lambda: (a0, b0, c0.copy()), alpha=value, beta=1.0, what=f"alpha {value!r} into c")
        compare(lambda: (a0, b0, c0.copy()), beta=value, what=f"beta {value!r} into c")
    a1, b1 = operands(3, 4, 5, dtype, dtype, True, False)
    for flag in [True, False, 1, 0, np.bool_(True), np.bool_(False), "yes", "", None, [1]]:
        compare(lambda: (a1, b0, None), trans_a=flag, what=f"trans_a {flag!r}")
        compare(lambda: (a0, b0.T.copy(), c0.copy()), trans_b=flag, what=f"trans_b {flag!r}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_and_checked_paths_agree_on_bad_operands(dtype):
    m = np.ones((3, 3), dtype)
    cases = {
        "1-D a": lambda: (np.ones(3, dtype), m, None),
        "3-D b": lambda: (m, np.ones((3, 3, 1), dtype), None),
        "0-D a": lambda: (np.array(2.0, dtype), m, None),
        "inner sizes": lambda: (np.ones((3, 4), dtype), np.ones((5, 6), dtype), None),
        "inner sizes, column-major a": lambda: (np.asfortranarray(np.ones((3, 4), dtype)), np.ones((5, 6), dtype),
                                                None),
        "c shape": lambda: (np.ones((3, 4), dtype), np.ones((4, 5), dtype), np.zeros((3, 6), dtype)),
        "string a": lambda: (np.array([["a", "b"]]), m, None),
        "complex b": lambda: (m, m.astype(np.complex128), None),
        "None a": lambda: (None, m, None),
        "ragged list": lambda: ([[1.0, 2.0], [3.0]], m, None),
        "bool a": lambda: (np.ones((3, 3), bool), m, None),
        "float16 a": lambda: (m.astype(np.float16), m, None),
        "subclass a": lambda: (m.view(np.matrix), m, None),
        "matrix c of a's dtype, read-only a": lambda: (np.frombuffer(m.tobytes(), dtype).reshape(3, 3), m,
                                                        np.zeros((3, 3), dtype)),
    }
    for name, make in cases.items():
        for trans_a, trans_b in itertools.product([False, True], repeat=2):
            compare(make, alpha=2.0, beta=0.5, trans_a=trans_a, trans_b=trans_b, what=name)


# ---- aliasing: c sharing memory with a or b ------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_fast_and_checked_paths_agree_when_c_shares_memory(dtype, beta):
    n = 40  # past a register tile, so a kernel that read a overwritten c would show it

    def buffer():
        return np.random.default_rng(5).standard_normal((3 * n, 3 * n)).astype(dtype)

    cases = {
        "c is a": lambda buf: (buf[:n, :n], buf[n:2 * n, :n].copy(), buf[:n, :n]),
        "c is b": lambda buf: (buf[n:2 * n, :n].copy(), buf[:n, :n], buf[:n, :n]),
        "c overlaps a's corner": lambda buf: (buf[:n, :n], buf[2 * n:, :n].copy(),
                                              buf[n // 2:n // 2 + n, n // 2:n // 2 + n]),
        "a column-major view of c's bytes": lambda buf: (buf.T[:n, :n], buf[2 * n:, 2 * n:].copy(), buf[:n, :n]),
        "a and c interleaved rows": lambda buf: (buf[0:2 * n:2, :n], buf[2 * n:, :n].copy(), buf[1:2 * n:2, :n]),
        "same buffer, apart": lambda buf: (buf[:n, :n], buf[n:2 * n, :n], buf[2 * n:, :n]),
        "c is a, transposed product": lambda buf: (buf[:n, :n], buf[:n, :n], buf[:n, :n]),
    }
    for name, case in cases.items():
        for trans_a, trans_b in itertools.product([False, True], repeat=2):
            compare(lambda: case(buffer()), alpha=0.5, beta=beta, trans_a=trans_a, trans_b=trans_b,
                    what=f"{name} trans {trans_a},{trans_b}")


# ---- the fast path itself ------------------------------------------------------------------


def fast_path(a, b, c=None, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    return _core.gemm_fast_path(a, b, c, alpha, beta, trans_a, trans_b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_common_case_takes_the_fast_path(dtype):
    a, b = operands(16, 128, 128, dtype, dtype, False, False)
    assert fast_path(a, b) is not None
    assert fast_path(a, b.T.copy(), trans_b=True) is not None
    assert fast_path(np.asfortranarray(a), b) is not None  # column-major: read as a transpose
    assert fast_path(a[:, :64], b[:64]) is not None  # row stride past the row
    c = np.zeros((16, 128), dtype)
    assert fast_path(a, b, c, alpha=2, beta=1) is c
    assert fast_path(np.ones((0, 3), dtype), np.ones((3, 0), dtype)) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_path_declines_without_touching_c(dtype):
    a, b = operands(4, 5, 6, dtype, dtype, False, False)
    c = np.full((4, 5), 7.0, dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    declined = {
        "list a": (a.tolist(), b, c),
        "mixed dtypes": (a, b.astype(other), c),
        "c of the other dtype": (a, b, c.astype(other)),
        "column gaps": (np.repeat(a, 2, axis=1)[:, ::2], b, c),
        "c aliases a": (a, b, a[:, :5]),
        "nan beta": (a, b, c, 1.0, float("nan")),
        "bool alpha": (a, b, c, True),
        "numpy bool flag": (a, b, c, 1.0, 0.0, np.bool_(False)),
        "inner sizes": (a, b[:5], c),
        "huge int alpha": (a, b, c, 10**400),
    }
    for name, args in declined.items():
        assert fast_path(*args) is None, name
        assert np.array_equal(c, np.full((4, 5), 7.0, dtype)), f"{name}: c written"


def test_small_products_from_threads_agree_with_one_thread():
    rng = np.random.default_rng(9)
    cases = [(rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt))
             for (m, n, k) in [(1, 128, 128), (8, 64, 64), (1, 1, 1), (16, 128, 128)]
             for dt in (np.float32, np.float64)]
    expected = [kernels._gemm_checked(a, b, None, 1.0, 0.0, False, False) for a, b in cases]
    failures = []

    def worker(seed):
        order = np.random.default_rng(seed).permutation(len(cases))
        for _ in range(200):
            for i in order:
                c = np.empty_like(expected[i])
                kernels.gemm(*cases[i], c)
                if not (np.array_equal(c, expected[i]) and np.array_equal(kernels.gemm(*cases[i]), expected[i])):
                    failures.append(i)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"cases {sorted(set(failures))} differ when run from several threads"
