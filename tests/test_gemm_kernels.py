"""Every GEMM kernel this CPU can run (avx512, avx2, portable), forced one at a
time, held to NumPy on awkward shapes (edges of every MR × NR tile and KC block)
in all four transpose cases; and bit-identical across thread counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import kernels, reference

KERNELS = kernels.available_gemm_kernels()
SHAPES = [
    (1, 1, 1), (3, 7, 15), (17, 33, 257), (257, 17, 1000), (1000, 3, 33), (15, 1000, 7),
    (33, 257, 17), (7, 1, 1000), (1, 257, 3), (1000, 15, 17),
]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture
def use_kernel(request):
    kernels.set_gemm_kernel(request.param)
    yield request.param
    kernels.set_gemm_kernel("auto")


def test_the_best_kernel_is_the_default():
    kernels.set_gemm_kernel("auto")
    assert kernels.gemm_kernel() == KERNELS[0]
    assert "portable" in KERNELS
    assert fm._core.build_info()["gemm_kernel"] == KERNELS[0]


def test_an_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="name"):
        kernels.set_gemm_kernel("sse9")
    assert kernels.gemm_kernel() == KERNELS[0]


@pytest.mark.parametrize("use_kernel", KERNELS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_kernel_matches_numpy(use_kernel, dtype, trans_a, trans_b, m, n, k):
    assert kernels.gemm_kernel() == use_kernel
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    twin = c.copy()
    expected = 1.25 * ((a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)) + 0.5 * c
    kernels.gemm(a, b, c, alpha=1.25, beta=0.5, trans_a=trans_a, trans_b=trans_b)
    reference.gemm(a, b, twin, alpha=1.25, beta=0.5, trans_a=trans_a, trans_b=trans_b)
    scale = k * np.abs(a).max() * np.abs(b).max() + np.abs(expected).max()
    for what, want in (("exact", expected), ("reference.gemm", twin)):
        error = np.abs(c - want).max()
        assert error <= RTOL[dtype] * scale, f"{use_kernel} vs {what}: max |diff| = {error:.3e} (scale {scale:.3e})"


@pytest.mark.parametrize("use_kernel", KERNELS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("m,n,k", [(300, 257, 300), (129, 1000, 64), (1000, 3, 700)])
def test_kernel_is_bit_identical_with_one_and_two_threads(use_kernel, dtype, m, n, k, restore_num_threads):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype)
    results = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        results.append(kernels.gemm(a, b, trans_b=True))
    assert np.array_equal(results[0], results[1]), f"{use_kernel}: 1 and 2 threads differ"


@pytest.mark.parametrize("use_kernel", KERNELS, indirect=True)
def test_training_is_bit_identical_with_one_and_two_threads(use_kernel, restore_num_threads):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 64)).astype(np.float32)
    y = rng.standard_normal((300, 10)).astype(np.float32)
    params = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        net = fm.Network([64, 256, 256, 10], activation="tanh", seed=1)
        net.fit(X, y, epochs=2, batch_size=128, optimizer=fm.SGD(lr=0.01))
        params.append(net.params.copy())
    assert np.array_equal(params[0], params[1])


# ---- the forward GEMM's epilogue (bias and activation applied tile by tile) ----------------------

# (batch, inputs, outputs): every path of the driver with an epilogue: register tiles
# with the epilogue per tile (batch · outputs ≥ 2**14, ragged edges), one pass after a
# small product, the transposed product (outputs narrower than a tile) and the dot
# products (one sample; one output).
EPILOGUE_SHAPES = [(257, 33, 100), (130, 7, 257), (33, 17, 7), (3000, 17, 7), (1, 257, 33), (300, 33, 1)]


@pytest.mark.parametrize("use_kernel", KERNELS, indirect=True)
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
@pytest.mark.parametrize("batch, inputs, outputs", EPILOGUE_SHAPES)
def test_forward_with_the_fused_epilogue_matches_the_reference(use_kernel, activation, batch, inputs, outputs):
    rng = np.random.default_rng(batch * 31 + outputs)
    net = fm.Network([inputs, outputs], output_activation=activation, dtype="float64", seed=1)
    net.biases[0][...] = rng.normal(size=outputs)
    twin = fm.reference.Network.from_network(net)
    X = rng.normal(size=(batch, inputs))
    out = net.forward(X)
    expected = twin.forward(X)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)
    # The training cache holds Z = X·Wᵀ + b beside A = f(Z).
    z, a = net._core.cache(0)
    np.testing.assert_allclose(z, twin.cache[0][0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a, out, rtol=0, atol=0)
    # predict (in place, chunked) agrees with forward.
    np.testing.assert_allclose(net.predict(X), out, rtol=1e-12, atol=1e-13)
