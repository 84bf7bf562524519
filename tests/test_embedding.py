"""Embedding safety (issue 12, item 5): many threads predicting on one network, two fits
racing on one network, and read-only memory-mapped inputs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastmlp as fm


def network():
    net = fm.Network([8, 32, 32, 3], "relu", residual=True, norm="layer", loss="cross_entropy", seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 8)).astype(np.float32)
    net.fit(X, rng.integers(0, 3, 256), epochs=2, batch_size=32)
    return net


def test_sixteen_threads_predicting_at_once_get_the_serial_results():
    net = network()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((int(rng.integers(1, 40)), 8)).astype(np.float32) for _ in range(16 * 200)]
    serial = [net.predict_proba(X) for X in inputs]
    results = [None] * len(inputs)
    start = threading.Barrier(16)

    def worker(t):
        start.wait()
        for i in range(t, len(inputs), 16):
            results[i] = net.predict_proba(inputs[i])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


def test_two_fits_at_once_on_one_network_run_one_after_the_other():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((512, 8)).astype(np.float32)
    ya, yb = rng.integers(0, 3, 512), rng.integers(0, 3, 512)

    def fit(net, y):
        net.fit(X, y, epochs=5, batch_size=32, optimizer=fm.Adam(lr=1e-3))

    orders = []
    for first, second in ((ya, yb), (yb, ya)):
        net = network()
        fit(net, first)
        fit(net, second)
        orders.append(net.params.copy())
    racing = network()
    threads = [threading.Thread(target=fit, args=(racing, y)) for y in (ya, yb)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The engine's lock lets one fit run whole, then the other: never a mix of the two.
    assert any(np.array_equal(racing.params, params) for params in orders)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_read_only_memory_mapped_dataset_trains_and_predicts(dtype, tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 8)).astype(dtype)
    y = (X[:, :1] * X[:, 1:2]).astype(dtype)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    y_map = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert not X_map.flags.writeable
    in_memory, mapped = (fm.Network([8, 16, 1], "tanh", dtype=dtype, seed=4) for _ in range(2))
    in_memory.fit(X, y, epochs=3, batch_size=20)
    mapped.fit(X_map, y_map, epochs=3, batch_size=20)
    np.testing.assert_array_equal(mapped.params, in_memory.params)
    np.testing.assert_array_equal(mapped.predict(X_map), in_memory.predict(X))
    assert mapped.score(X_map, y_map) == in_memory.score(X, y)


def test_a_memory_mapped_float32_X_is_read_in_place(tmp_path):
    """No copy of X where its layout allows: tracemalloc (which sees NumPy's allocations)
    finds nothing near X's 8 MB allocated during fit, predict and score."""
    import tracemalloc

    rng = np.random.default_rng(5)
    np.save(tmp_path / "X.npy", rng.standard_normal((65536, 32)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.standard_normal((65536, 1)).astype(np.float32))
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    y = np.load(tmp_path / "y.npy", mmap_mode="r")
    net = fm.Network([32, 8, 1], seed=0)
    net.fit(X[:64], y[:64])  # first-call allocations (workspaces of another size) out of the way
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=1, batch_size=None, shuffle=False)
        net.score(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes // 2, f"{peak} bytes allocated for an X of {X.nbytes}"  # score: ~2 MB of float64 targets
