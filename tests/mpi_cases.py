"""Cases run under ``mpiexec -n N python -m mpi4py tests/mpi_cases.py CASE`` by
test_distributed.py. Each rank asserts; rank 0 prints "ok CASE" at the end. An
exception on any rank aborts them all (python -m mpi4py), so a failure never hangs."""

from __future__ import annotations

import sys

import numpy as np

import fastmlp as fm

comm = fm.distributed.MPI()


def data(n=203, n_inputs=6, loss="cross_entropy", seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_inputs))
    y = rng.integers(0, 3, n) if loss == "cross_entropy" else rng.standard_normal((n, 3))
    return X, y


def network(dtype, loss="cross_entropy", seed=7, **options):
    return fm.Network([6, 16, 8, 3], loss=loss, dtype=dtype, seed=seed, **options)


def equals_one_process():
    """The data-parallel fit is the single-process fit with the same global batch, to
    rounding; every rank ends with the same parameters and history."""
    X, y = data()
    for dtype, rtol in (("float64", 1e-10), ("float32", 2e-4)):
        for optimizer in (fm.SGD(lr=0.05, momentum=0.9), fm.Adam(lr=1e-2)):
            for shuffle in (False, True):
                # Another seed off rank 0: its parameters are broadcast from rank 0.
                net = network(dtype, seed=7 if comm.rank == 0 else 100 + comm.rank)
                alone = network(dtype)
                history = net.fit(X, y, epochs=3, batch_size=50, optimizer=optimizer, shuffle=shuffle, comm=comm)
                expected = alone.fit(X, y, epochs=3, batch_size=50, optimizer=optimizer, shuffle=shuffle)
                what = f"{dtype} {type(optimizer).__name__} shuffle={shuffle}"
                np.testing.assert_allclose(net.params, alone.params, rtol=rtol, atol=rtol * 1e-2, err_msg=what)
                np.testing.assert_allclose(history["loss"], expected["loss"], rtol=rtol, err_msg=what)
                np.testing.assert_allclose(history["accuracy"], expected["accuracy"], rtol=1e-12, err_msg=what)
                params = comm.allgather(net.params.copy())
                assert all(np.array_equal(params[0], p) for p in params), f"{what}: the ranks differ"
                # The generator moved alike: a second fit still agrees.
                net.fit(X, y, epochs=1, batch_size=64, comm=comm)
                alone.fit(X, y, epochs=1, batch_size=64)
                np.testing.assert_allclose(net.params, alone.params, rtol=rtol * 10, atol=rtol * 1e-2, err_msg=what)


def batch_norm():
    """Batch norm's statistics are the global batch's (summed across the ranks, forward
    and backward): the fit is the one-process fit, to rounding — with gradient
    checkpointing (which recomputes them) and dropout too; the running statistics agree."""
    X, y = data()
    for dtype, optimizer, rtol in (("float64", fm.Adam(lr=1e-2), 1e-10), ("float64", fm.SGD(lr=0.05, momentum=0.9), 1e-10),
                                   ("float32", fm.SGD(lr=0.05, momentum=0.9), 2e-4)):
        for shuffle, options in ((False, {}), (True, {"dropout": 0.2}), (True, {"residual": True})):
            for checkpoint in (None, 1):
                net = network(dtype, norm="batch", seed=7 if comm.rank == 0 else 50 + comm.rank, **options)
                alone = network(dtype, norm="batch", **options)
                arguments = dict(epochs=3, batch_size=50, optimizer=optimizer, shuffle=shuffle, checkpoint=checkpoint)
                history = net.fit(X, y, comm=comm, **arguments)
                expected = alone.fit(X, y, **arguments)
                what = f"{dtype} {type(optimizer).__name__} shuffle={shuffle} {options} checkpoint={checkpoint}"
                gathered = comm.allgather((net.params.copy(), net.state.copy()))
                assert all(np.array_equal(gathered[0][0], p) and np.array_equal(gathered[0][1], s)
                           for p, s in gathered), f"{what}: the ranks differ"
                np.testing.assert_allclose(history["loss"], expected["loss"], rtol=rtol, err_msg=what)
                # The biases of the dense layers that feed a batch norm do not change its output:
                # their gradient is 0 but for rounding, which Adam scales up (m / √v), so they
                # differ by the sums' rounding (1e-9 here), and the running means with them.
                # Everything else agrees to rtol. (In float32 Adam makes those biases differ by
                # about lr, and the running means and eval-mode outputs with them: SGD there.)
                loose = 1e-7 if isinstance(optimizer, fm.Adam) else rtol
                np.testing.assert_allclose(net.predict_proba(X), alone.predict_proba(X), rtol=loose, atol=loose,
                                           err_msg=what)
                np.testing.assert_allclose(net.state, alone.state, rtol=loose, atol=loose, err_msg=what)
                for mine, theirs in zip(net.biases[:-1], alone.biases[:-1]):
                    np.testing.assert_allclose(mine, theirs, atol=loose, err_msg=what)
                    mine[...] = theirs
                np.testing.assert_allclose(net.params, alone.params, rtol=rtol, atol=rtol * 1e-2, err_msg=what)


def dropout():
    """Each rank keeps its rows' part of the masks one process would draw for the whole
    global batch: the fit is the one-process fit, to rounding."""
    X, y = data()
    for shuffle in (False, True):
        net, alone = network("float64", dropout=0.3), network("float64", dropout=0.3)
        history = net.fit(X, y, epochs=3, batch_size=50, shuffle=shuffle, optimizer=fm.Adam(lr=1e-2), comm=comm)
        expected = alone.fit(X, y, epochs=3, batch_size=50, shuffle=shuffle, optimizer=fm.Adam(lr=1e-2))
        np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-13, err_msg=f"shuffle={shuffle}")
        np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-10)


def stops():
    """A stop asked on one rank, or an exception on one rank that the caller catches,
    ends the fit on every rank instead of leaving the others in the all-reduce."""
    X, y = data()
    stop_on_rank_0 = (lambda epoch, logs: comm.rank == 0 and epoch == 1)
    history = network("float64").fit(X, y, epochs=5, batch_size=50, on_epoch_end=stop_on_rank_0, comm=comm)
    assert len(history) == 2 and history.stopped_epoch == 1, f"rank {comm.rank}: {len(history)} epochs"

    def fails_on_rank_1(epoch, logs):
        if comm.rank == 1 and epoch == 0:
            raise KeyError("the callback's own error")

    expect_error(lambda: network("float64").fit(X, y, epochs=3, on_epoch_end=fails_on_rank_1, comm=comm),
                 r"^fit across ranks: after epoch 0, rank 1: KeyError: .the callback's own error", RuntimeError)
    import os
    import tempfile

    expect_error(lambda: network("float64").fit(X, y, epochs=2, checkpoint_every=1, comm=comm,
                                                checkpoint_path="/nonexistent/folder/checkpoint.npz"),
                 r"^fit across ranks: rank 0: ValueError: checkpoint_path: cannot write")
    folder = comm.broadcast(tempfile.mkdtemp() if comm.rank == 0 else None)
    blocked = os.path.join(folder, "checkpoint.npz")  # a folder where rank 0 must write the file
    if comm.rank == 0:
        os.mkdir(blocked)
    comm.comm.Barrier()
    expect_error(lambda: network("float64").fit(X, y, epochs=2, checkpoint_every=1, checkpoint_path=blocked,
                                                comm=comm),
                 r"^fit across ranks: after epoch 0, rank 0: IsADirectoryError: .*cannot write", RuntimeError)


def signal_handler_saves(path):
    """A signal handler that saves the network (Slurm's warning before preemption) runs
    during the all-reduce's Python, between two steps: no deadlock, a whole file."""
    import os
    import signal
    import threading

    X, y = data(n=400)
    net = network("float64")
    saved = []
    signal.signal(signal.SIGUSR1, lambda *_: saved.append(net.save(f"{path}.{comm.rank}")))
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    net.fit(X, y, epochs=40, batch_size=8, comm=comm)
    timer.join()
    assert saved, f"rank {comm.rank}: the handler did not run"
    fm.load(f"{path}.{comm.rank}")


def weights_and_validation():
    """Sample weights, a regression loss, a global batch smaller than the ranks at the
    end of each epoch, validation and early stopping: all as in one process."""
    X, y = data(n=97, loss="mse")
    w = np.random.default_rng(1).uniform(0, 2, len(X))
    net, alone = network("float64", loss="mse", seed=3), network("float64", loss="mse", seed=3)
    stop = dict(early_stopping=fm.EarlyStopping(patience=2), validation_split=0.2)
    history = net.fit(X, y, epochs=6, batch_size=32, sample_weight=w, comm=comm, **stop)
    expected = alone.fit(X, y, epochs=6, batch_size=32, sample_weight=w,
                         **dict(stop, early_stopping=fm.EarlyStopping(patience=2)))
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(history["val_loss"], expected["val_loss"], rtol=1e-10)
    histories = comm.allgather(history.history)
    assert all(h == histories[0] for h in histories), "the ranks' histories differ"


def expect_error(fit, pattern, kind=ValueError):
    import re

    try:
        fit()
    except kind as error:
        assert re.search(pattern, str(error)), f"rank {comm.rank}: {error}"
        return
    raise AssertionError(f"rank {comm.rank}: no error (expected {pattern!r})")


def mismatches():
    """A disagreement, or an argument one rank refuses, raises the same clear error on
    every rank instead of a hang."""
    X, y = data()
    expect_error(lambda: network("float64").fit(X, y, epochs=2 + comm.rank, comm=comm),
                 r"^fit across ranks: the ranks disagree on epochs: rank 0 has 2, rank 1 has 3")
    mine = X.copy()
    mine[0, 0] += comm.rank  # other data on the other ranks
    expect_error(lambda: network("float64").fit(mine, y, comm=comm), r"the ranks disagree on X")
    bad = X.copy()
    if comm.rank == 1:
        bad[3, 2] = np.nan
    expect_error(lambda: network("float64").fit(bad, y, comm=comm),
                 r"^fit across ranks: rank 1: ValueError: X: expected finite values")
    if comm.size >= 3:  # (on 2 ranks, a batch of 1 is refused anyway)
        normed = network("float64", norm="batch", seed=comm.rank)
        before = normed.params.copy()
        expect_error(lambda: normed.fit(X, y, batch_size=67, comm=comm),
                     rf"rank 0: ValueError: batch norm across {comm.size} ranks needs a sample of every batch on "
                     r"every rank; 203 samples in batches of 67 leave a batch of 2")
        assert np.array_equal(normed.params, before), "a refused fit changed the network"
    shuffled = X[::-1].copy() if comm.rank == 1 else X  # the same values, another order
    expect_error(lambda: network("float64").fit(shuffled, y, comm=comm), r"the ranks disagree on X")
    missing = "/nonexistent/checkpoint.npz" if comm.rank == 1 else None
    expect_error(lambda: network("float64").fit(X, y, resume_from=missing, comm=comm),
                 r"^fit across ranks: rank 1: FileNotFoundError")
    # After the refusals the ranks still train together.
    network("float64").fit(X, y, epochs=1, comm=comm)


def guard():
    """Ranks whose parameters drift apart (here: rank 1's all-reduce adds a little) are
    caught after the epoch, with the same error on every rank."""

    class Skewed(fm.distributed.MPI):
        def allreduce_sum(self, array):
            super().allreduce_sum(array)
            if self.rank == 1 and array.size > 2:
                array[0] += 1e-3

    X, y = data()
    expect_error(lambda: network("float64").fit(X, y, epochs=3, comm=Skewed()),
                 r"^fit across ranks: after epoch 0 the parameters of rank\(s\) \[1\] differ from rank 0's",
                 RuntimeError)


def resume_killed(path):
    """Every rank dies (os._exit) after the second epoch; rank 0 has written checkpoints."""
    import os

    X, y = data()
    network("float64").fit(X, y, epochs=4, batch_size=50, checkpoint_every=1, checkpoint_path=path, comm=comm,
                           on_epoch_end=lambda epoch, logs: os._exit(3) if epoch == 1 else None)


def resume_finish(path):
    """Resumed from the killed run's checkpoint, the fit ends bit for bit as the
    uninterrupted run across the same ranks."""
    X, y = data()
    resumed, whole = network("float64"), network("float64")
    history = resumed.fit(X, y, epochs=4, batch_size=50, checkpoint_every=1, checkpoint_path=path,
                          resume_from=path, comm=comm)
    expected = whole.fit(X, y, epochs=4, batch_size=50, comm=comm)
    assert np.array_equal(resumed.params, whole.params), f"rank {comm.rank}: resumed differs"
    assert history.history == expected.history


CASES = {name: globals()[name] for name in ("equals_one_process", "dropout", "batch_norm", "weights_and_validation", "mismatches", "guard",
                                            "stops", "signal_handler_saves",
                                            "resume_killed", "resume_finish")}

if __name__ == "__main__":
    case = sys.argv[1]
    CASES[case](*sys.argv[2:])
    comm.comm.Barrier()
    if comm.rank == 0:
        print(f"ok {case} on {comm.size} ranks", flush=True)
