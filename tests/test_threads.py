"""Threads: results independent of the thread count, fork safety, Python threads
(GIL released, one call at a time per network) and set_num_threads' checks."""

import multiprocessing
import threading
import time
import warnings

import numpy as np
import pytest

import fastmlp as fm

# Big enough that the GEMMs go parallel (the elementwise passes stay serial at 128 rows).
SIZES = [64, 256, 256, 10]


def data(n=128, inputs=64, outputs=10, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, inputs)).astype(dtype)
    y = np.tanh(X[:, :outputs] + 0.5 * X[:, outputs : 2 * outputs]).astype(dtype)
    return X, y


def train(seed, X, y, epochs=3, batch_size=32, dtype="float32", sizes=SIZES):
    net = fm.Network(sizes, seed=seed, dtype=dtype)
    history = net.fit(X, y, epochs=epochs, batch_size=batch_size, shuffle=True, optimizer=fm.SGD(lr=0.01))
    return net, history.history["loss"]


# ---- results do not depend on the thread count ----------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_weights_with_one_and_two_threads(restore_num_threads, dtype):
    X, y = data(n=256, dtype=np.dtype(dtype).type)
    fm.set_num_threads(1)
    assert fm.get_num_threads() == 1
    net1, losses1 = train(0, X, y, epochs=4, batch_size=128, dtype=dtype)
    predict1 = net1.predict(X)
    fm.set_num_threads(2)
    assert fm.get_num_threads() == 2
    net2, losses2 = train(0, X, y, epochs=4, batch_size=128, dtype=dtype)
    predict2 = net2.predict(X)
    assert np.array_equal(net1.params, net2.params), (
        f"max |diff| {np.abs(net1.params - net2.params).max()} between 1 and 2 threads"
    )
    assert losses1 == losses2
    np.testing.assert_array_equal(predict1, predict2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_split_steps_same_bits_with_one_and_two_threads(restore_num_threads, dtype, loss):
    # A small network with batches of 100: every step runs as two pieces of the
    # batch, on two threads or one after the other (the fit times both ways,
    # keeps the faster and tries the other now and then: one thread after 16
    # steps). The bits must not depend on the way.
    X, y = data(n=300, inputs=6, outputs=3, dtype=np.dtype(dtype).type)
    if loss == "cross_entropy":
        y = np.argmax(y, axis=1)
    runs = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        net = fm.Network([6, 32, 16, 3], loss=loss, seed=1, dtype=dtype)
        history = net.fit(X, y, epochs=100, batch_size=100, optimizer=fm.SGD(lr=0.05, momentum=0.9))
        runs.append((net.params.copy(), history.history))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert runs[0][1]["loss"][-1] < runs[0][1]["loss"][0]


def test_forward_backward_independent_of_threads(restore_num_threads):
    X, y = data(n=128)
    results = []
    for threads in (1, 2, 3):
        fm.set_num_threads(threads)
        net = fm.Network(SIZES, seed=3)
        y_pred = net.forward(X)
        net.backward(X, y, y_pred)
        results.append((y_pred.copy(), net.grads.copy()))
    for y_pred, grads in results[1:]:
        np.testing.assert_array_equal(y_pred, results[0][0])
        np.testing.assert_array_equal(grads, results[0][1])


def test_get_num_threads_is_positive(restore_num_threads):
    assert isinstance(restore_num_threads, int) and restore_num_threads >= 1
    fm.set_num_threads(3)
    assert fm.get_num_threads() == 3


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_rejects_non_positive(bad, restore_num_threads):
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 1"):
        fm.set_num_threads(bad)
    assert fm.get_num_threads() == restore_num_threads


@pytest.mark.parametrize("bad", [1.5, "2", None, True, 2.0])
def test_set_num_threads_rejects_non_integers(bad, restore_num_threads):
    with pytest.raises(TypeError, match=r"^n: expected an integer, got"):
        fm.set_num_threads(bad)
    assert fm.get_num_threads() == restore_num_threads


def test_set_num_threads_accepts_numpy_integers(restore_num_threads):
    fm.set_num_threads(np.int64(2))
    assert fm.get_num_threads() == 2


# ---- fork ---------------------------------------------------------------------------------------------


def _child_work(conn, X, y):
    try:
        threads_before = fm.get_num_threads()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fm.set_num_threads(2)
        warned = [str(w.category.__name__) + ": " + str(w.message) for w in caught]
        threads_after = fm.get_num_threads()
        net, losses = train(1, X, y)
        conn.send(("ok", threads_before, warned, threads_after, net.params.copy(), losses, net.predict(X)))
    except BaseException as error:  # report anything to the parent
        conn.send(("error", repr(error)))
    finally:
        conn.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_child_trains_and_predicts(restore_num_threads):
    X, y = data(n=128)
    # The parent runs fastmlp's thread pool first.
    fm.set_num_threads(2)
    train(0, X, y, epochs=2)

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
        child = context.Process(target=_child_work, args=(send, X, y))
        child.start()
    send.close()
    try:
        assert receive.poll(120), "the forked child sent nothing within 120 s (hung?)"
        result = receive.recv()
        child.join(timeout=120)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    assert result[0] == "ok", result
    _, threads_before, warned, threads_after, params, losses, prediction = result
    # The child starts its own pool: it keeps the parent's thread count and uses it.
    assert threads_before == 2
    assert threads_after == 2
    assert warned == []
    assert np.isfinite(params).all() and np.isfinite(prediction).all()
    # The same computation in the parent, on two threads, gives the same numbers.
    net, parent_losses = train(1, X, y)
    np.testing.assert_array_equal(params, net.params)
    assert losses == parent_losses
    np.testing.assert_array_equal(prediction, net.predict(X))


# ---- Python threads -----------------------------------------------------------------------------------


def _run_in_threads(*targets):
    errors = []

    def wrap(target):
        def run():
            try:
                target()
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    assert not errors, errors


def test_two_threads_two_networks_match_sequential(restore_num_threads):
    fm.set_num_threads(2)
    X, y = data(n=128)
    X2, y2 = data(n=128, seed=1)
    seq_a, _ = train(0, X, y, epochs=3)
    seq_b, _ = train(1, X2, y2, epochs=3)

    a = fm.Network(SIZES, seed=0)
    b = fm.Network(SIZES, seed=1)
    fit = dict(epochs=3, batch_size=32, shuffle=True, optimizer=fm.SGD(lr=0.01))
    _run_in_threads(lambda: a.fit(X, y, **fit), lambda: b.fit(X2, y2, **fit))
    np.testing.assert_array_equal(a.params, seq_a.params)
    np.testing.assert_array_equal(b.params, seq_b.params)


def test_two_threads_one_network_are_serialized(restore_num_threads):
    fm.set_num_threads(2)
    X, y = data(n=128)
    net = fm.Network(SIZES, seed=0)
    # Full batch: both fits are the same update rule, so their order does not matter.
    fit = dict(epochs=3, optimizer=fm.SGD(lr=0.01))
    _run_in_threads(lambda: net.fit(X, y, **fit), lambda: net.fit(X, y, **fit))
    assert np.isfinite(net.params).all()
    sequential = fm.Network(SIZES, seed=0)
    sequential.fit(X, y, **fit)
    sequential.fit(X, y, **fit)
    np.testing.assert_array_equal(net.params, sequential.params)


def test_predict_while_another_thread_fits_the_same_network(restore_num_threads):
    fm.set_num_threads(2)
    X, y = data(n=128)
    net = fm.Network(SIZES, seed=0)
    outputs = []

    def predict_many():
        for _ in range(20):
            outputs.append(net.predict(X))

    _run_in_threads(lambda: net.fit(X, y, epochs=10, batch_size=16), predict_many)
    assert len(outputs) == 20
    assert all(np.isfinite(out).all() and out.shape == (128, 10) for out in outputs)


def test_fit_releases_the_gil(restore_num_threads):
    fm.set_num_threads(1)
    X, y = data(n=512)
    net = fm.Network([64, 256, 256, 10], seed=0)
    net.fit(X, y, epochs=1)  # warm up, and measure one epoch
    start = time.perf_counter()
    net.fit(X, y, epochs=1, batch_size=64)
    epoch_seconds = max(time.perf_counter() - start, 1e-4)
    epochs = max(2, min(200, int(0.5 / epoch_seconds)))  # a fit of about half a second

    stop = threading.Event()
    count = [0]

    def counter():
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        time.sleep(0.05)  # let the counter start
        # Its rate while this thread sleeps (the GIL free) ...
        before = count[0]
        start = time.perf_counter()
        time.sleep(0.2)
        idle_rate = (count[0] - before) / (time.perf_counter() - start)
        # ... and while this thread fits.
        before = count[0]
        start = time.perf_counter()
        net.fit(X, y, epochs=epochs, batch_size=64)
        elapsed = time.perf_counter() - start
        fit_rate = (count[0] - before) / elapsed
    finally:
        stop.set()
        thread.join()
    # Holding the GIL, the fit would stop the counter for all but the engine's
    # brief signal checks (every 100 ms): a few percent of its free rate at most.
    assert elapsed > 0.1, f"the fit was too short to measure ({elapsed:.3f} s)"
    assert fit_rate > 0.2 * idle_rate, (
        f"the counter ran at {fit_rate:.0f}/s during a {elapsed:.2f} s fit, {idle_rate:.0f}/s otherwise"
    )
