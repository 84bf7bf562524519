"""The layers between dense ones (cpp/src/layers.cpp): layer norm, batch norm, dropout and
the residual add, held to their NumPy twins in fastmlp.reference.layers, to finite
differences, and to torch.nn.LayerNorm / BatchNorm1d.

Shapes are drawn from the awkward sizes 1, 3, 7, 33, 257; inputs come contiguous and as
views (transposed, strided with NaN in the gaps, negative strides); each runs at 1 and 2
threads, whose results must be identical to the bit. Every failure prints the max
difference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core, kernels, reference
from fastmlp.reference import Rng
from kernel_helpers import LAYOUTS, assert_close, dtype_id, eps_of, max_abs, with_layout

SIZES = (1, 3, 7, 33, 257)
DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
SHAPES = list(itertools.product(SIZES, SIZES))


def rtol_of(dtype) -> float:
    return RTOL[np.dtype(dtype)]


def values(shape, seed, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) + offset


def norm_inputs(rows, width, dtype, seed=0):
    """x (with an offset, as real activations have), gain and bias, of dtype."""
    x = values((rows, width), seed, offset=0.5).astype(dtype)
    gain = (1 + 0.5 * values(width, seed + 1)).astype(dtype)
    bias = values(width, seed + 2).astype(dtype)
    return x, gain, bias


def in_threads(threads, fn):
    """fn() run with ``threads`` kernel threads (the count is put back by the test's fixture)."""
    fm.set_num_threads(threads)
    return fn()


def assert_same_bits(results, what):
    """Every result (a tuple of arrays) equal to the first, bit for bit."""
    first = results[0]
    for other in results[1:]:
        for i, (a, b) in enumerate(zip(first, other)):
            diff = max_abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
            assert np.array_equal(a, b, equal_nan=True), f"{what}[{i}]: differs between thread counts, max |diff| {diff:.3e}"


def forward_atol(dtype, *arrays) -> float:
    return 16 * eps_of(dtype) * max(1.0, *(max_abs(a) for a in arrays))


def backward_atol(dtype, dy, gain, rstd, xhat) -> float:
    """dx = rstd (g − mean g − xhat mean(g xhat)): rounding on the scale of its terms."""
    g = max_abs(dy) * max(1.0, max_abs(gain))
    return 64 * eps_of(dtype) * max_abs(rstd) * g * (1 + max_abs(xhat) ** 2)


def sums_atol(dtype, dy, xhat) -> float:
    return 16 * eps_of(dtype) * dy.shape[0] * max(1.0, max_abs(dy) * max(1.0, max_abs(xhat)))


# ---- layer norm and batch norm against their twins ------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows,width", SHAPES, ids=[f"{r}x{w}" for r, w in SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_layer_norm_matches_reference(dtype, rows, width, layout, restore_num_threads):
    x, gain, bias = norm_inputs(rows, width, dtype)
    dy = values((rows, width), 7).astype(dtype)
    views = [with_layout(a, layout) for a in (x, gain, bias)]
    forward = [in_threads(t, lambda: kernels.layer_norm(*views)) for t in (1, 2)]
    assert_same_bits(forward, "layer_norm")
    y, xhat, rstd = forward[0]
    y_ref, xhat_ref, rstd_ref = reference.layer_norm(x, gain, bias)
    tol = rtol_of(dtype)
    assert_close(rstd, rstd_ref, rtol=tol, what="layer_norm rstd")
    assert_close(xhat, xhat_ref, rtol=tol, atol=forward_atol(dtype, xhat_ref), what="layer_norm xhat")
    assert_close(y, y_ref, rtol=tol, atol=forward_atol(dtype, y_ref, gain), what="layer_norm y")
    views = [with_layout(a, layout) for a in (dy, xhat_ref, rstd_ref, gain)]
    backward = [in_threads(t, lambda: kernels.layer_norm_backward(*views)) for t in (1, 2)]
    assert_same_bits(backward, "layer_norm_backward")
    dx, d_gain, d_bias = backward[0]
    dx_ref, d_gain_ref, d_bias_ref = reference.layer_norm_backward(dy, xhat_ref, rstd_ref, gain)
    assert_close(dx, dx_ref, rtol=tol, atol=backward_atol(dtype, dy, gain, rstd_ref, xhat_ref), what="layer_norm dx")
    assert_close(d_gain, d_gain_ref, rtol=tol, atol=sums_atol(dtype, dy, xhat_ref), what="layer_norm d_gain")
    assert_close(d_bias, d_bias_ref, rtol=tol, atol=sums_atol(dtype, dy, xhat_ref), what="layer_norm d_bias")


BATCH_SHAPES = [(r, w) for r, w in SHAPES if r >= 2]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows,width", BATCH_SHAPES, ids=[f"{r}x{w}" for r, w in BATCH_SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_batch_norm_matches_reference(dtype, rows, width, layout, restore_num_threads):
    x, gain, bias = norm_inputs(rows, width, dtype)
    dy = values((rows, width), 7).astype(dtype)
    mean0, var0 = values(width, 8).astype(dtype), (1 + values(width, 9) ** 2).astype(dtype)
    views = [with_layout(a, layout) for a in (x, gain, bias)]
    tol = rtol_of(dtype)

    def train():
        running = [with_layout(mean0.copy(), layout), with_layout(var0.copy(), layout)]  # strided: written back
        return (*kernels.batch_norm(*views, *running, momentum=0.2), *running)
    forward = [in_threads(t, train) for t in (1, 2)]
    assert_same_bits(forward, "batch_norm (training)")
    y, xhat, rstd, mean, var = forward[0]
    mean_ref, var_ref = mean0.copy(), var0.copy()
    y_ref, xhat_ref, rstd_ref = reference.batch_norm(x, gain, bias, mean_ref, var_ref, momentum=0.2)
    assert_close(rstd, rstd_ref, rtol=tol, what="batch_norm rstd")
    assert_close(xhat, xhat_ref, rtol=tol, atol=forward_atol(dtype, xhat_ref), what="batch_norm xhat")
    assert_close(y, y_ref, rtol=tol, atol=forward_atol(dtype, y_ref, gain), what="batch_norm y")
    assert_close(mean, mean_ref, rtol=tol, atol=forward_atol(dtype, mean_ref), what="running_mean")
    assert_close(var, var_ref, rtol=tol, atol=forward_atol(dtype, var_ref), what="running_var")

    evals = [in_threads(t, lambda: kernels.batch_norm(*views, with_layout(mean0, layout), with_layout(var0, layout),
                                                     training=False)) for t in (1, 2)]
    assert_same_bits([(e,) for e in evals], "batch_norm (eval)")
    y_eval_ref = reference.batch_norm(x, gain, bias, mean0, var0, training=False)
    assert_close(evals[0], y_eval_ref, rtol=tol, atol=forward_atol(dtype, y_eval_ref, gain, x - mean0),
                 what="batch_norm eval y")

    views = [with_layout(a, layout) for a in (dy, xhat_ref, rstd_ref, gain)]
    backward = [in_threads(t, lambda: kernels.batch_norm_backward(*views)) for t in (1, 2)]
    assert_same_bits(backward, "batch_norm_backward")
    dx, d_gain, d_bias = backward[0]
    dx_ref, d_gain_ref, d_bias_ref = reference.batch_norm_backward(dy, xhat_ref, rstd_ref, gain)
    assert_close(dx, dx_ref, rtol=tol, atol=backward_atol(dtype, dy, gain, rstd_ref, xhat_ref), what="batch_norm dx")
    assert_close(d_gain, d_gain_ref, rtol=tol, atol=sums_atol(dtype, dy, xhat_ref), what="batch_norm d_gain")
    assert_close(d_bias, d_bias_ref, rtol=tol, atol=sums_atol(dtype, dy, xhat_ref), what="batch_norm d_bias")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rows,width", [(600, 300), (3000, 70), (70, 3000), (20000, 5)])
def test_norms_are_bit_identical_across_thread_counts(rows, width, dtype, restore_num_threads):
    """Big enough that every kernel splits its work (rows, column blocks) among threads."""
    x, gain, bias = norm_inputs(rows, width, dtype)
    dy = values((rows, width), 3).astype(dtype)
    mask = kernels.dropout_mask(x.shape, 0.25, 5)

    def everything():
        y, xhat, rstd = kernels.layer_norm(x, gain, bias)
        ln_back = kernels.layer_norm_backward(dy, xhat, rstd, gain)
        mean, var = np.zeros(width, dtype), np.ones(width, dtype)
        b = kernels.batch_norm(x, gain, bias, mean, var)
        bn_back = kernels.batch_norm_backward(dy, b[1], b[2], gain)
        y_eval = kernels.batch_norm(x, gain, bias, mean, var, training=False)
        return (y, xhat, rstd, *ln_back, *b, mean, var, *bn_back, y_eval, kernels.dropout(x, mask, 0.25),
                kernels.dropout_backward(dy, mask, 0.25), kernels.residual_add(x, dy))
    assert_same_bits([in_threads(t, everything) for t in (1, 2, 3)], f"layers {rows}x{width}")


@pytest.mark.parametrize("rows,offset", [(100_000, 1000.0), (100_000, 0.0), (3, 1e4), (1000, 1e4)])
def test_float32_statistics_stay_accurate(rows, offset):
    """Statistics summed in double: float32 batch norm over 10^5 rows and layer norm over rows of
    10^5, with a mean large against the spread, stay within a few ulp of float64 (rstd) and
    xhat within a few float32 ulp of its O(1) values (the mean's rounding does not shift it)."""
    x = values((rows, 3), 4, offset=offset).astype(np.float32)
    for name, forward, data in [("batch", kernels.batch_norm, x), ("layer", kernels.layer_norm, x.T.copy())]:
        width = data.shape[1]
        gain, bias = np.ones(width, np.float32), np.zeros(width, np.float32)
        twin = reference.batch_norm if name == "batch" else reference.layer_norm
        _, xhat, rstd = forward(data, gain, bias)
        _, xhat_ref, rstd_ref = twin(data.astype(np.float64), gain, bias)
        assert_close(rstd, rstd_ref, rtol=4 * eps_of(np.float32), what=f"float32 {name} norm rstd")
        assert_close(xhat, xhat_ref, rtol=0, atol=8 * eps_of(np.float32) * max(1.0, max_abs(xhat_ref)),
                     what=f"float32 {name} norm xhat")


# ---- dropout and the residual add --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (1,), (3,), (7,), (33,), (257,), (7, 33), (33, 257)], ids=str)
@pytest.mark.parametrize("p", [0.0, 1e-12, 0.1, 0.5, 0.9, 0.999999])
def test_dropout_mask_matches_reference_bit_for_bit(shape, p):
    for seed in (0, 12345, 2**64 - 1):
        mask = kernels.dropout_mask(shape, p, seed)
        assert mask.dtype == np.uint8 and mask.shape == shape
        assert np.array_equal(mask, reference.dropout_mask(shape, p, seed)), f"seed {seed}"
        assert np.array_equal(mask, kernels.dropout_mask(shape, p, seed)), "the same seed gives the same mask"
    assert set(np.unique(mask)) <= {0, 1}


def test_dropout_mask_advances_a_generator_as_the_twin_does():
    fast, twin = Rng(99), Rng(99)
    for n, p in [(5, 0.5), (6, 0.3), (1, 0.2), (0, 0.5), (10, 0.0), (33, 0.7)]:
        assert np.array_equal(kernels.dropout_mask(n, p, fast), reference.dropout_mask(n, p, twin)), (n, p)
        assert fast.state() == twin.state(), f"after n={n}, p={p}"
    used = Rng(7)
    drawn = kernels.dropout_mask(9, 0.5, used)
    assert used.state() != Rng(7).state(), "5 draws move the generator"
    assert np.array_equal(kernels.dropout_mask(9, 0.5, Rng(7).state()), drawn), "a state tuple draws as the Rng"
    assert not np.array_equal(kernels.dropout_mask(64, 0.5, used), kernels.dropout_mask(64, 0.5, used))
    untouched = Rng(3)
    kernels.dropout_mask(100, 0.0, untouched)
    assert untouched.state() == Rng(3).state(), "p = 0 draws nothing"


def test_dropout_mask_follows_the_header_formula():
    """Element 2i from the low 32 bits of draw i, 2i + 1 from the high bits, kept below ⌊(1 − p) 2³²⌋."""
    rng, p = Rng(2024), 0.37
    threshold = int((1 - p) * 2**32)
    expected = []
    for _ in range(4):
        draw = rng.next()
        expected += [int(draw & 0xFFFFFFFF < threshold), int(draw >> 32 < threshold)]
    assert kernels.dropout_mask(7, p, 2024).tolist() == expected[:7]
    assert reference.dropout_keep_threshold(p) == threshold


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_keeps_about_one_minus_p(p):
    n = 200_000
    kept = kernels.dropout_mask(n, p, 1).mean()
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < 5 * sigma, f"kept {kept:.5f}, expected {1 - p} ± {5 * sigma:.5f}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (33, 257), (257, 257), (40000,)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_dropout_and_residual_match_reference(dtype, shape, layout, restore_num_threads):
    x, skip = values(shape, 1).astype(dtype), values(shape, 2).astype(dtype)
    mask = kernels.dropout_mask(shape, 0.3, 11)
    for name, fast, twin in [
        ("dropout", lambda: kernels.dropout(with_layout(x, layout), with_layout(mask.astype(dtype), layout), 0.3),
         lambda: reference.dropout(x, mask, 0.3)),
        ("dropout_backward", lambda: kernels.dropout_backward(with_layout(x, layout), mask.astype(bool), 0.3),
         lambda: reference.dropout_backward(x, mask, 0.3)),
        ("residual_add", lambda: kernels.residual_add(with_layout(x, layout), with_layout(skip, layout)),
         lambda: reference.residual_add(x, skip)),
    ]:
        results = [in_threads(t, fast) for t in (1, 2)]
        assert_same_bits([(r,) for r in results], name)
        assert results[0].dtype == dtype
        assert_close(results[0], twin(), rtol=0, what=name)  # one rounding each, as in the twin


def test_dropout_zeroes_dropped_elements_even_when_infinite():
    x = np.array([np.inf, -np.inf, np.nan, 2.0])
    mask = np.array([0, 0, 0, 1], dtype=np.uint8)
    assert kernels.dropout(x, mask, 0.5).tolist() == [0.0, 0.0, 0.0, 4.0]
    assert reference.dropout(x, mask, 0.5).tolist() == [0.0, 0.0, 0.0, 4.0]


# ---- in place and accumulating, as the engine calls the kernels ----------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_kernels_in_place_equal_out_of_place(dtype):
    rows, width = 33, 70
    x, gain, bias = norm_inputs(rows, width, dtype)
    dy = values((rows, width), 3).astype(dtype)
    y, xhat, rstd = kernels.layer_norm(x, gain, bias)
    buffer, rstd_in = x.copy(), np.empty(rows, dtype)
    _core.layer_norm_forward(buffer, gain, bias, buffer, rstd_in, buffer, 1e-5)  # xhat = y = x
    assert np.array_equal(buffer, y) and np.array_equal(rstd_in, rstd)
    buffer = x.copy()
    _core.layer_norm_forward(buffer, gain, bias, buffer, rstd_in, np.empty_like(x), 1e-5)  # xhat = x
    assert np.array_equal(buffer, xhat)

    dx, d_gain, d_bias = kernels.layer_norm_backward(dy, xhat, rstd, gain)
    buffer, dg, db = dy.copy(), np.ones(width, dtype), np.ones(width, dtype)
    _core.layer_norm_backward(buffer, xhat, rstd, gain, buffer, dg, db, True)  # dx = dy, accumulate
    assert np.array_equal(buffer, dx)
    assert_close(dg, d_gain + 1, rtol=rtol_of(dtype), what="accumulated d_gain")
    assert_close(db, d_bias + 1, rtol=rtol_of(dtype), what="accumulated d_bias")

    yb, xhatb, rstdb = kernels.batch_norm(x, gain, bias)
    buffer, rstd_in = x.copy(), np.empty(width, dtype)
    _core.batch_norm_forward_train(buffer, gain, bias, buffer, rstd_in, buffer, None, None, 1e-5, 0.1)
    assert np.array_equal(buffer, yb) and np.array_equal(rstd_in, rstdb)
    dx, d_gain, d_bias = kernels.batch_norm_backward(dy, xhatb, rstdb, gain)
    buffer, dg, db = dy.copy(), np.ones(width, dtype), np.ones(width, dtype)
    _core.batch_norm_backward(buffer, xhatb, rstdb, gain, buffer, dg, db, True)
    assert np.array_equal(buffer, dx)
    assert_close(dg, d_gain + 1, rtol=rtol_of(dtype), what="accumulated d_gain")
    mean, var = np.zeros(width, dtype), np.ones(width, dtype)
    y_eval = kernels.batch_norm(x, gain, bias, mean, var, training=False)
    buffer = x.copy()
    _core.batch_norm_forward_eval(buffer, gain, bias, mean, var, buffer, 1e-5)
    assert np.array_equal(buffer, y_eval)

    mask = kernels.dropout_mask(x.shape, 0.5, 3)
    buffer = x.copy()
    _core.dropout_forward(buffer, mask, 0.5, buffer)
    assert np.array_equal(buffer, kernels.dropout(x, mask, 0.5))
    buffer = x.copy()
    _core.residual_add(buffer, dy, buffer)
    assert np.array_equal(buffer, x + dy)
    buffer = dy.copy()
    _core.residual_add(x, buffer, buffer)
    assert np.array_equal(buffer, x + dy)


def test_running_statistics_are_updated_in_place_whatever_their_layout():
    x, gain, bias = norm_inputs(9, 4, np.float32)
    expected_mean, expected_var = np.zeros(4), np.ones(4)
    reference.batch_norm(x, gain, bias, expected_mean, expected_var)
    for mean, var in [(np.zeros(4, np.float32), np.ones(4, np.float32)),  # the kernel writes them
                      (np.zeros(8, np.float32)[::2], np.ones(8, np.float32)[::2]),  # strided: written back
                      (np.zeros(4), np.ones(4))]:  # float64: the computation is float64
        kernels.batch_norm(x, gain, bias, mean, var)
        assert_close(mean, expected_mean, rtol=1e-6, atol=1e-7, what=f"running_mean {mean.dtype} {mean.strides}")
        assert_close(var, expected_var, rtol=1e-6, what=f"running_var {var.dtype} {var.strides}")


# ---- finite differences (float64) ------------------------------------------------------------------


def numeric_gradient(f, arrays, weights, h=1e-5):
    """d(Σ weights ⊙ f(*arrays))/d each array, by central differences of fourth order."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            saved = a[i]
            total = 0.0
            for step, coefficient in ((2, -1), (1, 8), (-1, -8), (-2, 1)):
                a[i] = saved + step * h
                total += coefficient * np.sum(weights * f(*arrays))
            a[i] = saved
            g[i] = total / (12 * h)
        grads.append(g)
    return grads


def assert_gradients(analytic, numeric, names, what):
    for a, n, name in zip(analytic, numeric, names):
        assert_close(a, n, rtol=1e-6, atol=1e-8 * max(1.0, max_abs(n)), what=f"{what}: d/d{name}")


IMPLEMENTATIONS = {"cpp": kernels, "twin": reference}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norm_gradients_match_finite_differences(norm, impl):
    k = IMPLEMENTATIONS[impl]
    x, gain, bias = norm_inputs(5, 4, np.float64, seed=3)
    w = values((5, 4), 4)
    forward = k.layer_norm if norm == "layer" else k.batch_norm
    backward = k.layer_norm_backward if norm == "layer" else k.batch_norm_backward
    _, xhat, rstd = forward(x, gain, bias)
    analytic = backward(w, xhat, rstd, gain)
    numeric = numeric_gradient(lambda *a: forward(*a)[0], [x, gain, bias], w)
    assert_gradients(analytic, numeric, ["x", "gain", "bias"], f"{impl} {norm} norm")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_dropout_and_residual_gradients_match_finite_differences(impl):
    k = IMPLEMENTATIONS[impl]
    x, skip, w = values((4, 6), 1), values((4, 6), 2), values((4, 6), 3)
    mask = kernels.dropout_mask(x.shape, 0.4, 8)
    numeric = numeric_gradient(lambda a: k.dropout(a, mask, 0.4), [x], w)
    assert_gradients([k.dropout_backward(w, mask, 0.4)], numeric, ["x"], f"{impl} dropout")
    numeric = numeric_gradient(lambda a, b: k.residual_add(a, b), [x, skip], w)
    assert_gradients([w, w], numeric, ["x", "skip"], f"{impl} residual add")  # dy passes to both


def residual_block(k, norm, mask, p):
    """out = x + dropout(tanh(norm(x @ W))), and its backward, from kernels k (fastmlp.kernels or the twins)."""
    norm_forward = k.layer_norm if norm == "layer" else k.batch_norm
    norm_backward = k.layer_norm_backward if norm == "layer" else k.batch_norm_backward

    def forward(x, weight, gain, bias):
        h = k.gemm(x, weight)
        n, xhat, rstd = norm_forward(h, gain, bias)
        a = k.activation_forward(n, "tanh")
        return k.residual_add(x, k.dropout(a, mask, p)), (h, n, xhat, rstd, a)

    def backward(dout, x, weight, gain, saved):
        h, n, xhat, rstd, a = saved
        da = k.dropout_backward(dout, mask, p)
        dn = k.activation_backward(da, n, a, "tanh")
        dh, d_gain, d_bias = norm_backward(dn, xhat, rstd, gain)
        dx = dout + k.gemm(dh, weight, trans_b=True)  # the skip and the block
        return dx, k.gemm(x, dh, trans_a=True), d_gain, d_bias
    return forward, backward


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_residual_block_gradients_match_finite_differences(norm, impl):
    """residual(x, dropout(act(norm(x @ W)))) composed from the kernels: the chain's gradients
    for x, W, gain and bias against finite differences of the whole block."""
    k = IMPLEMENTATIONS[impl]
    rows, width, p = 6, 5, 0.3
    x, weight = values((rows, width), 1), 0.5 * values((width, width), 2)
    gain, bias = 1 + 0.3 * values(width, 3), 0.2 * values(width, 4)
    w = values((rows, width), 5)
    mask = kernels.dropout_mask(x.shape, p, 6)
    assert 0 < mask.sum() < mask.size
    forward, backward = residual_block(k, norm, mask, p)
    _, saved = forward(x, weight, gain, bias)
    analytic = backward(w, x, weight, gain, saved)
    numeric = numeric_gradient(lambda *a: forward(*a)[0], [x, weight, gain, bias], w)
    assert_gradients(analytic, numeric, ["x", "W", "gain", "bias"], f"{impl} residual {norm}-norm block")


def test_stacked_blocks_gradients_match_finite_differences():
    """Two blocks in a row (layer norm, then batch norm), the C++ kernels throughout."""
    rows, width, p = 5, 4, 0.25
    x = values((rows, width), 1)
    params = [0.5 * values((width, width), 2), 1 + 0.2 * values(width, 3), 0.1 * values(width, 4),
              0.5 * values((width, width), 5), 1 + 0.2 * values(width, 6), 0.1 * values(width, 7)]
    masks = [kernels.dropout_mask(x.shape, p, 8), kernels.dropout_mask(x.shape, p, 9)]
    blocks = [residual_block(kernels, "layer", masks[0], p), residual_block(kernels, "batch", masks[1], p)]
    w = values((rows, width), 10)

    def forward(x, *params):
        saved = []
        for b, (f, _) in enumerate(blocks):
            inputs = x
            x, s = f(x, *params[3 * b:3 * b + 3])
            saved.append((inputs, s))
        return x, saved

    _, saved = forward(x, *params)
    grads, d = [None] * 6, w
    for b in (1, 0):
        inputs, s = saved[b]
        d, *grads[3 * b:3 * b + 3] = blocks[b][1](d, inputs, params[3 * b], params[3 * b + 1], s)
    numeric = numeric_gradient(lambda *a: forward(*a)[0], [x, *params], w)
    assert_gradients([d, *grads], numeric, ["x", "W0", "gain0", "bias0", "W1", "gain1", "bias1"], "two blocks")


# ---- torch ---------------------------------------------------------------------------------------------


def test_batch_norm_matches_torch_batchnorm1d():
    """Training steps (batch statistics, momentum, unbiased running variance), the gradients, then eval
    mode with the running statistics, against torch.nn.BatchNorm1d in float64."""
    torch = pytest.importorskip("torch")
    width = 6
    layer = torch.nn.BatchNorm1d(width, eps=1e-5, momentum=0.1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(1 + 0.5 * values(width, 1)))
        layer.bias.copy_(torch.from_numpy(values(width, 2)))
    gain, bias = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    mean, var = np.zeros(width), np.ones(width)
    for step, rows in enumerate([8, 3, 2, 17]):
        x = values((rows, width), 10 + step, offset=step)
        dy = values((rows, width), 20 + step)
        layer.train()
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = layer(tx)
        ty.backward(torch.from_numpy(dy))
        y, xhat, rstd = kernels.batch_norm(x, gain, bias, mean, var)
        dx, d_gain, d_bias = kernels.batch_norm_backward(dy, xhat, rstd, gain)
        what = f"step {step} (batch {rows})"
        assert_close(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13, what=f"{what} y")
        assert_close(mean, layer.running_mean.numpy(), rtol=1e-12, atol=1e-14, what=f"{what} running_mean")
        assert_close(var, layer.running_var.numpy(), rtol=1e-12, what=f"{what} running_var")
        assert_close(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12, what=f"{what} dx")
        assert_close(d_gain, layer.weight.grad.numpy(), rtol=1e-12, atol=1e-13, what=f"{what} d_gain")
        assert_close(d_bias, layer.bias.grad.numpy(), rtol=1e-12, atol=1e-13, what=f"{what} d_bias")
        layer.zero_grad()
        layer.eval()
        x_eval = values((5, width), 30 + step)
        with torch.no_grad():
            expected = layer(torch.from_numpy(x_eval)).numpy()
        y_eval = kernels.batch_norm(x_eval, gain, bias, mean, var, training=False)
        assert_close(y_eval, expected, rtol=1e-12, atol=1e-13, what=f"{what} eval y")


def test_layer_norm_matches_torch_layernorm():
    torch = pytest.importorskip("torch")
    rows, width = 7, 33
    layer = torch.nn.LayerNorm(width, eps=1e-5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(1 + 0.5 * values(width, 1)))
        layer.bias.copy_(torch.from_numpy(values(width, 2)))
    gain, bias = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    x, dy = values((rows, width), 3, offset=2.0), values((rows, width), 4)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = layer(tx)
    ty.backward(torch.from_numpy(dy))
    y, xhat, rstd = kernels.layer_norm(x, gain, bias)
    dx, d_gain, d_bias = kernels.layer_norm_backward(dy, xhat, rstd, gain)
    assert_close(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13, what="layer norm y")
    assert_close(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12, what="layer norm dx")
    assert_close(d_gain, layer.weight.grad.numpy(), rtol=1e-12, atol=1e-13, what="layer norm d_gain")
    assert_close(d_bias, layer.bias.grad.numpy(), rtol=1e-12, atol=1e-13, what="layer norm d_bias")


# ---- errors name the problem -------------------------------------------------------------------------


def _m(*shape, dtype=np.float64):
    return np.ones(shape, dtype=dtype)


VALUE_ERRORS = {
    "batch norm of one sample in training": (lambda: kernels.batch_norm(_m(1, 4), _m(4), _m(4)),
                                             "at least 2 samples per batch, got 1"),
    "batch norm of one sample, C++": (
        lambda: _core.batch_norm_forward_train(_m(1, 4), _m(4), _m(4), _m(1, 4), _m(4), _m(1, 4), None, None,
                                               1e-5, 0.1), "at least 2 samples per batch, got 1"),
    "batch norm eval without running statistics": (lambda: kernels.batch_norm(_m(3, 4), _m(4), _m(4), training=False),
                                                   "running_mean and running_var"),
    "batch norm with one running statistic": (lambda: kernels.batch_norm(_m(3, 4), _m(4), _m(4), _m(4)),
                                              "both running_mean and running_var"),
    "batch norm running_var length": (lambda: kernels.batch_norm(_m(3, 4), _m(4), _m(4), _m(4), _m(5)),
                                      "running_var has shape (5,)"),
    "batch norm momentum": (lambda: kernels.batch_norm(_m(3, 4), _m(4), _m(4), _m(4), _m(4), momentum=1.5),
                            "momentum"),
    "layer norm gain length": (lambda: kernels.layer_norm(_m(3, 4), _m(5), _m(4)), "gain has shape (5,)"),
    "layer norm 1-D x": (lambda: kernels.layer_norm(_m(4), _m(4), _m(4)), "x must be 2-D"),
    "layer norm no columns": (lambda: kernels.layer_norm(_m(3, 0), _m(0), _m(0)), "at least one column"),
    "layer norm eps": (lambda: kernels.layer_norm(_m(3, 4), _m(4), _m(4), eps=-1.0), "eps"),
    "layer norm bias, C++": (lambda: _core.layer_norm_forward(_m(3, 4), _m(4), _m(3), _m(3, 4), _m(3), _m(3, 4),
                                                              1e-5), "bias has shape (3,)"),
    "layer norm y overlaps gain, C++": (
        lambda: (lambda g: _core.layer_norm_forward(_m(1, 4), g, _m(4), _m(1, 4), _m(1), g.reshape(1, 4), 1e-5))(
            _m(4)), "y overlaps gain"),
    "layer_norm_backward xhat shape": (lambda: kernels.layer_norm_backward(_m(3, 4), _m(4, 3), _m(3), _m(4)),
                                       "xhat has shape (4, 3)"),
    "layer_norm_backward rstd length": (lambda: kernels.layer_norm_backward(_m(3, 4), _m(3, 4), _m(4), _m(4)),
                                        "rstd has shape (4,)"),
    "batch_norm_backward rstd length": (lambda: kernels.batch_norm_backward(_m(3, 4), _m(3, 4), _m(3), _m(4)),
                                        "rstd has shape (3,)"),
    "batch_norm_backward rstd length, C++": (
        lambda: _core.batch_norm_backward(_m(3, 4), _m(3, 4), _m(3), _m(4), _m(3, 4), _m(4), _m(4), False),
        "rstd has shape (3,)"),
    "dropout p = 1": (lambda: kernels.dropout(_m(3), _m(3), 1.0), "p: the dropout probability must be in [0, 1)"),
    "dropout p < 0": (lambda: kernels.dropout_backward(_m(3), _m(3), -0.1), "[0, 1)"),
    "dropout p NaN": (lambda: kernels.dropout_mask(3, float("nan"), 0), "[0, 1)"),
    "dropout p = 1, C++": (lambda: _core.dropout_forward(_m(3), np.ones(3, np.uint8), 1.0, _m(3)), "p must be in [0, 1)"),
    "dropout_mask p = 1, C++": (lambda: _core.dropout_mask([1, 2, 3, 4], False, 0.0, 1.0, np.empty(3, np.uint8)),
                                "p must be in [0, 1)"),
    "dropout mask shape": (lambda: kernels.dropout(_m(3, 4), _m(4, 3), 0.5), "mask has shape (4, 3)"),
    "dropout mask values": (lambda: kernels.dropout(_m(3), np.array([0, 2, 1]), 0.5), "values 0 and 1"),
    "dropout mask length, C++": (lambda: _core.dropout_forward(_m(3), np.ones(4, np.uint8), 0.5, _m(3)),
                                 "mask: expected 3 elements"),
    "dropout_mask zero state": (lambda: kernels.dropout_mask(3, 0.5, ((0, 0, 0, 0), False, 0.0)), "zero"),
    "dropout_mask negative size": (lambda: kernels.dropout_mask(-1, 0.5, 0), "n"),
    "residual shapes": (lambda: kernels.residual_add(_m(3, 4), _m(4, 3)), "skip has shape (4, 3)"),
    "residual shapes, C++": (lambda: _core.residual_add(_m(3, 4), _m(3, 4), _m(12)), "out has shape (12,)"),
}


@pytest.mark.parametrize("call,message", VALUE_ERRORS.values(), ids=VALUE_ERRORS.keys())
def test_errors_name_the_problem(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value), f"expected {message!r} in: {info.value}"


TYPE_ERRORS = {
    "layer norm strings": lambda: kernels.layer_norm(np.array([["a"]]), _m(1), _m(1)),
    "batch norm running statistics as lists": lambda: kernels.batch_norm(_m(3, 2), _m(2), _m(2), [0, 0], [1, 1]),
    "batch norm integer running statistics": lambda: kernels.batch_norm(
        _m(3, 2), _m(2), _m(2), np.zeros(2, int), np.ones(2, int)),
    "batch norm training not a bool": lambda: kernels.batch_norm(_m(3, 2), _m(2), _m(2), training="yes"),
    "dropout_mask bad rng": lambda: kernels.dropout_mask(3, 0.5, "seed"),
    "dropout p not a number": lambda: kernels.dropout(_m(3), _m(3), "0.5"),
    "dropout float32 x with float64 out, C++": lambda: _core.dropout_forward(
        _m(3, dtype=np.float32), np.ones(3, np.uint8), 0.5, _m(3)),
    "dropout mask dtype, C++": lambda: _core.dropout_forward(_m(3), _m(3), 0.5, _m(3)),
}


@pytest.mark.parametrize("call", TYPE_ERRORS.values(), ids=TYPE_ERRORS.keys())
def test_type_errors(call):
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value)


def test_a_read_only_running_statistic_is_refused():
    mean = np.zeros(2)
    mean.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean: the array is read-only"):
        kernels.batch_norm(_m(3, 2), _m(2), _m(2), mean, np.ones(2))


def test_the_cuda_backends_hashed_dropout_mask_twin():
    """reference.dropout_mask_hashed (the twin tests/test_cuda_kernels.py holds the GPU's
    mask to): keeps about 1 − p, p = 0 keeps all, each counter and seed its own mask."""
    from fastmlp.reference import dropout_mask_hashed

    mask = dropout_mask_hashed(100_003, 0.3, 1234, 7)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert abs(mask.mean() - 0.7) < 0.01
    assert not np.array_equal(mask, dropout_mask_hashed(100_003, 0.3, 1234, 8))
    assert not np.array_equal(mask, dropout_mask_hashed(100_003, 0.3, 1235, 7))
    np.testing.assert_array_equal(mask, dropout_mask_hashed(100_003, 0.3, 1234, 7))
    np.testing.assert_array_equal(dropout_mask_hashed(33, 0.0, 2**64 - 1, 1), np.ones(33, np.uint8))
