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

    # A stop asked on the last rank alone is the one rank 0's checkpoint records: resumed
    # from it, the fit stays stopped, as the uninterrupted one did.
    folder = comm.broadcast(tempfile.mkdtemp() if comm.rank == 0 else None)
    stop_on_last = (lambda epoch, logs: comm.rank == comm.size - 1 and epoch == 1)
    path = os.path.join(folder, "stopped.npz")
    stopped = network("float64")
    history = stopped.fit(X, y, epochs=5, batch_size=50, on_epoch_end=stop_on_last, checkpoint_every=1,
                          checkpoint_path=path, comm=comm)
    assert history.stopped_epoch == 1 and fm.load(path).metadata["fastmlp.fit"]["stopped"] is True
    resumed = network("float64")
    again = resumed.fit(X, y, epochs=5, batch_size=50, on_epoch_end=stop_on_last, checkpoint_every=1,
                        checkpoint_path=os.path.join(folder, "again.npz"), resume_from=path, comm=comm)
    assert np.array_equal(resumed.params, stopped.params) and again.history == history.history
    assert again.stopped_epoch == 1
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
    """fit raises ``kind`` matching ``pattern`` on this rank, within the issue's 30 s
    (a hang-guard, not a speed test: the error comes in well under a second)."""
    import re
    import time

    start = time.monotonic()
    try:
        fit()
    except kind as error:
        assert re.search(pattern, str(error)), f"rank {comm.rank}: {error}"
        assert time.monotonic() - start < 30, f"rank {comm.rank}: the error took {time.monotonic() - start:.0f} s"
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
    # An early stopping monitor that this fit does not record: refused before rank 0's
    # parameters are broadcast, so that no rank's network changes.
    other = network("float64", seed=comm.rank)
    before = other.params.copy()
    expect_error(lambda: other.fit(X, y, epochs=2, early_stopping=fm.EarlyStopping(monitor="val_loss"), comm=comm),
                 r"^fit across ranks: rank 0: ValueError: EarlyStopping: monitor 'val_loss' is not recorded")
    assert np.array_equal(other.params, before), f"rank {comm.rank}: a refused fit changed the network"
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


# ---- shard=True: each rank passes only its own rows --------------------------------------


def interleave(rows):
    """A sharded epoch's global order without shuffling, written plainly (the engine
    bisects instead): (rank, local row) pairs, rank q's k-th row at (2k + 1) / (2 n_q),
    merged by that position, a tie to the lower rank."""
    from fractions import Fraction

    return [(q, k) for _, q, k in sorted((Fraction(2 * k + 1, 2 * n), q, k) for q, n in enumerate(rows)
                                         for k in range(n))]


def one_process_order(rows, batch):
    """The rows (rank, local row) in the order one process must see them to run the
    sharded fit's global batches (shuffle=False): each batch of the interleave with
    its rows grouped by rank, as the ranks' parts line up in the global batch."""
    merged = interleave(rows)
    return [pair for start in range(0, len(merged), batch) for pair in sorted(merged[start : start + batch])]


def shards_of(X, y, cuts, rank, w=None):
    """Rank ``rank``'s shard: rows [cuts[rank], cuts[rank + 1]) of the data."""
    part = slice(cuts[rank], cuts[rank + 1])
    return (X[part], y[part]) if w is None else (X[part], y[part], w[part])


def unequal_cuts(n):
    """Shards of unequal sizes (each >= 1), one per rank."""
    sizes = {2: [0.35, 0.65], 3: [0.2, 0.35, 0.45]}[comm.size]
    return [0] + [int(round(n * sum(sizes[: i + 1]))) for i in range(comm.size)]


def shard_equals_data_parallel():
    """(a) Equal shards cut so that every global batch is the ranks' parts side by side
    (batch_size divisible by the ranks, the rows divisible by batch_size): the sharded
    fit is the data-parallel fit on the whole data bit for bit (the same rows, masks
    and sums on every rank), and so one process to rounding (float64 1e-10)."""
    n, batch = 240, 48
    X, y = data(n=n)
    part = batch // comm.size
    mine = np.concatenate([np.arange(start + comm.rank * part, start + (comm.rank + 1) * part)
                           for start in range(0, n, batch)])
    for dtype in ("float64", "float32"):
        for optimizer in (fm.SGD(lr=0.05, momentum=0.9), fm.Adam(lr=1e-2)):
            for dropout in (0.0, 0.3):
                what = f"{dtype} {type(optimizer).__name__} dropout={dropout}"
                sharded, whole = network(dtype, dropout=dropout), network(dtype, dropout=dropout)
                got = sharded.fit(X[mine], y[mine], epochs=3, batch_size=batch, optimizer=optimizer, shuffle=False,
                                  comm=comm, shard=True)
                expected = whole.fit(X, y, epochs=3, batch_size=batch, optimizer=optimizer, shuffle=False, comm=comm)
                assert np.array_equal(sharded.params, whole.params), f"{what}: differs from the data-parallel fit"
                assert got.history == expected.history, what
                if dtype == "float64":
                    alone = network(dtype, dropout=dropout)
                    alone.fit(X, y, epochs=3, batch_size=batch, optimizer=optimizer, shuffle=False)
                    np.testing.assert_allclose(sharded.params, alone.params, rtol=1e-10, atol=1e-13, err_msg=what)


def shard_equals_one_process():
    """(a) Unequal shards and a last batch that does not divide evenly: without
    shuffling the sharded fit is one process's fit on the rows in the interleave's
    order (each global batch of batch_size rows the ranks' parts side by side), to
    float64 rtol 1e-10, dropout and sample weights included; a second fit continues
    alike (the generators moved alike)."""
    n, batch = 203, 50
    X, y = data(n=n)
    w = np.random.default_rng(5).uniform(0.5, 2, n)
    cuts = unequal_cuts(n)
    rows = [cuts[q + 1] - cuts[q] for q in range(comm.size)]
    order = np.array([cuts[q] + k for q, k in one_process_order(rows, batch)])
    for optimizer in (fm.SGD(lr=0.05, momentum=0.9), fm.Adam(lr=1e-2)):
        for weights in (None, w):
            what = f"{type(optimizer).__name__} weights={weights is not None}"
            sharded, alone = network("float64", dropout=0.3), network("float64", dropout=0.3)
            mine = shards_of(X, y, cuts, comm.rank, weights)
            got = sharded.fit(*mine[:2], epochs=3, batch_size=batch, optimizer=optimizer, shuffle=False, comm=comm,
                              shard=True, sample_weight=None if weights is None else mine[2])
            expected = alone.fit(X[order], y[order], epochs=3, batch_size=batch, optimizer=optimizer, shuffle=False,
                                 sample_weight=None if weights is None else weights[order])
            np.testing.assert_allclose(sharded.params, alone.params, rtol=1e-10, atol=1e-13, err_msg=what)
            np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-10, err_msg=what)
            np.testing.assert_allclose(got["accuracy"], expected["accuracy"], rtol=1e-12, err_msg=what)
            sharded.fit(*mine[:2], epochs=1, batch_size=64, shuffle=False, comm=comm, shard=True)
            order_64 = np.array([cuts[q] + k for q, k in one_process_order(rows, 64)])
            alone.fit(X[order_64], y[order_64], epochs=1, batch_size=64, shuffle=False)
            np.testing.assert_allclose(sharded.params, alone.params, rtol=1e-9, atol=1e-13, err_msg=what)


def shard_many_steps():
    """Sample weights over more steps than the engine sums in one all-reduce (4096
    global batches' weights at a time): still one process's fit on the interleave's
    order."""
    n = 4200
    X, y = data(n=n)
    w = np.random.default_rng(6).uniform(0.5, 2, n)
    cuts = unequal_cuts(n)
    rows = [cuts[q + 1] - cuts[q] for q in range(comm.size)]
    order = np.array([cuts[q] + k for q, k in one_process_order(rows, 1)])
    X_mine, y_mine, w_mine = shards_of(X, y, cuts, comm.rank, w)
    sharded, alone = network("float64"), network("float64")
    got = sharded.fit(X_mine, y_mine, sample_weight=w_mine, batch_size=1, shuffle=False, comm=comm, shard=True)
    expected = alone.fit(X[order], y[order], sample_weight=w[order], batch_size=1, shuffle=False)
    np.testing.assert_allclose(sharded.params, alone.params, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-10)


def shard_shuffled():
    """(b) Unequal shards, shuffled within each shard, dropout and Adam: the ranks end
    with the same parameters and generator, and the loss falls. With a step too small
    to move the network (lr 1e-300), each epoch's loss is the mean over every rank's
    rows: each row counted once an epoch."""
    n = 203
    X, y = data(n=n)
    cuts = unequal_cuts(n)
    mine = shards_of(X, y, cuts, comm.rank)
    net = network("float64", dropout=0.2)
    history = net.fit(*mine, epochs=8, batch_size=16, optimizer=fm.Adam(lr=1e-2), comm=comm, shard=True)
    snapshots = comm.allgather((net.params.copy(), net._core.snapshot()[4], history.history))
    assert all(np.array_equal(snapshots[0][0], p) and snapshots[0][1] == g and snapshots[0][2] == h
               for p, g, h in snapshots), "the ranks differ"
    assert history["loss"][-1] < 0.9 * history["loss"][0], history["loss"]
    still = network("float64")
    history = still.fit(*mine, epochs=2, batch_size=16, optimizer=fm.SGD(lr=1e-300), comm=comm, shard=True)
    expected = network("float64").evaluate(X, y)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-12)
    np.testing.assert_allclose(history["accuracy"], expected["accuracy"], rtol=1e-12)
    # The shuffle is the shard's own: another order than without shuffling, the same on a rerun.
    again = network("float64", dropout=0.2)
    again.fit(*mine, epochs=8, batch_size=16, optimizer=fm.Adam(lr=1e-2), comm=comm, shard=True)
    assert np.array_equal(again.params, net.params)
    unshuffled = network("float64", dropout=0.2)
    unshuffled.fit(*mine, epochs=8, batch_size=16, optimizer=fm.Adam(lr=1e-2), comm=comm, shard=True, shuffle=False)
    assert not np.array_equal(unshuffled.params, net.params)


def shard_weights_and_validation():
    """(c) Sample weights, class_weight="balanced" and validation_split held out of each
    shard: the figures are the same on every rank and are the global weighted means,
    computed here by hand from every rank's rows; validation_data (each rank its
    part) and early stopping as in one process."""
    n, split = 211, 0.2
    X, y = data(n=n)
    w = np.random.default_rng(2).uniform(0, 3, n)
    cuts = unequal_cuts(n)
    X_mine, y_mine, w_mine = shards_of(X, y, cuts, comm.rank, w)
    net = network("float64")
    history = net.fit(X_mine, y_mine, epochs=2, batch_size=32, optimizer=fm.SGD(lr=1e-300), comm=comm, shard=True,
                      sample_weight=w_mine, class_weight="balanced", validation_split=split, shuffle=True)
    histories = comm.allgather(history.history)
    assert all(h == histories[0] for h in histories), "the ranks' figures differ"
    # By hand: each shard's last round(n_r · split) rows held out; the class weights
    # from every rank's training rows.
    train, held = [], []
    for q in range(comm.size):
        rows = np.arange(cuts[q], cuts[q + 1])
        n_val = int(round(len(rows) * split))
        train.append(rows[:-n_val])
        held.append(rows[-n_val:])
    train, held = np.concatenate(train), np.concatenate(held)
    counts = np.array([w[train][y[train] == c].sum() for c in range(3)])
    per_class = w[train].sum() / (3 * counts)
    start = network("float64")  # the network lr 1e-300 leaves as it was
    expected_train = start.evaluate(X[train], y[train], sample_weight=w[train] * per_class[y[train]])
    expected_val = start.evaluate(X[held], y[held], sample_weight=w[held] * per_class[y[held]])
    np.testing.assert_allclose(history["loss"], expected_train["loss"], rtol=1e-12)
    np.testing.assert_allclose(history["accuracy"], expected_train["accuracy"], rtol=1e-12)
    np.testing.assert_allclose(history["val_loss"], expected_val["loss"], rtol=1e-12)
    np.testing.assert_allclose(history["val_accuracy"], expected_val["accuracy"], rtol=1e-12)
    # validation_data: each rank its part; with early stopping, as one process with all the parts.
    X_val, y_val = data(n=60, seed=9)
    val_cuts = unequal_cuts(60)
    rows = [cuts[q + 1] - cuts[q] for q in range(comm.size)]
    order = np.array([cuts[q] + k for q, k in one_process_order(rows, 40)])
    stop = dict(early_stopping=fm.EarlyStopping(patience=1, min_delta=1.0), epochs=6, batch_size=40, shuffle=False,
                optimizer=fm.Adam(lr=1e-2))
    sharded, alone = network("float64"), network("float64")
    got = sharded.fit(X_mine, y_mine, sample_weight=w_mine, class_weight="balanced", comm=comm, shard=True,
                      validation_data=shards_of(X_val, y_val, val_cuts, comm.rank), **stop)
    expected = alone.fit(X[order], y[order], sample_weight=w[order], class_weight="balanced",
                         validation_data=(X_val, y_val), **dict(stop, early_stopping=fm.EarlyStopping(
                             patience=1, min_delta=1.0)))
    assert len(got) == len(expected) < 6 and got.stopped_epoch == expected.stopped_epoch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(sharded.params, alone.params, rtol=1e-10, atol=1e-13)


def shard_mismatches():
    """(e) What the ranks' shards must agree on, and refusals on one rank: the same
    clear error on every rank, no hang."""
    X, y = data(n=120)
    cuts = unequal_cuts(120)
    X_mine, y_mine = shards_of(X, y, cuts, comm.rank)
    narrow = X_mine[:, :5] if comm.rank == 1 else X_mine
    expect_error(lambda: network("float64").fit(narrow, y_mine, comm=comm, shard=True),
                 r"^fit across ranks: rank 1: ValueError: X: expected 6 features")
    expect_error(lambda: network("float64").fit(X_mine, y_mine, comm=comm, shard=comm.rank != 1),
                 r"^fit across ranks: the ranks disagree on shard: rank 0 has True, rank 1 has False")
    expect_error(lambda: network("float64").fit(X_mine, y_mine, comm=comm, shard=True,
                                                validation_split=0.1 + 0.1 * (comm.rank == 1)),
                 r"^fit across ranks: the ranks disagree on validation: rank 0 has 0.1, rank 1 has 0.2")
    weights = np.ones(len(X_mine)) if comm.rank != 1 else None
    expect_error(lambda: network("float64").fit(X_mine, y_mine, sample_weight=weights, comm=comm, shard=True),
                 r"^fit across ranks: the ranks disagree on sample weights")
    zero = np.zeros(len(X_mine))
    expect_error(lambda: network("float64").fit(X_mine, y_mine, sample_weight=zero, comm=comm, shard=True),
                 r"^sample_weight: every training sample's weight is zero, on every rank")
    # A rank whose own weights are all zero is fine: the others' rows weigh.
    network("float64").fit(X_mine, y_mine, sample_weight=np.ones(len(X_mine)) * (comm.rank != 1), comm=comm,
                           shard=True)
    tiny = (X_mine[:1], y_mine[:1]) if comm.rank == 1 else (X_mine, y_mine)
    expect_error(lambda: network("float64").fit(*tiny, validation_split=0.3, comm=comm, shard=True),
                 r"^fit across ranks: rank 1: ValueError: validation_split: 0.3 of 1 samples")
    expect_error(lambda: network("float64", norm="batch").fit(X_mine, y_mine, batch_size=40, comm=comm, shard=True),
                 r"batch norm is not supported with shard=True across ranks yet")
    # A rank of one row trains with the others.
    one = network("float64").fit(*tiny, epochs=2, batch_size=7, comm=comm, shard=True)
    assert len(one) == 2
    # Resuming, each rank checks the checkpoint it read against the fit: one rank's refusal
    # (here rank 1 read the checkpoint of a fit on other shards) is every rank's.
    import os
    import tempfile

    folder = comm.broadcast(tempfile.mkdtemp() if comm.rank == 0 else None)
    for name, rows in (("mine.npz", X_mine), ("other.npz", X_mine + 1.0)):
        network("float64").fit(rows, y_mine, epochs=1, checkpoint_every=1, comm=comm, shard=True,
                               checkpoint_path=os.path.join(folder, name))
    read = os.path.join(folder, "other.npz" if comm.rank == 1 else "mine.npz")
    expect_error(lambda: network("float64").fit(X_mine, y_mine, epochs=1, resume_from=read, comm=comm, shard=True),
                 r"^fit across ranks: rank 1: ValueError: resume_from: .*other.npz is a checkpoint of a fit with "
                 r"another shards")


def shard_resume_killed(path):
    """Every rank dies (os._exit) after the second epoch of a sharded fit."""
    import os

    X, y = data()
    mine = shards_of(X, y, unequal_cuts(len(X)), comm.rank)
    network("float64", dropout=0.2).fit(*mine, epochs=4, batch_size=32, checkpoint_every=1, checkpoint_path=path,
                                        comm=comm, shard=True, optimizer=fm.Adam(lr=1e-2), validation_split=0.2,
                                        early_stopping=fm.EarlyStopping(patience=10, restore_best_weights=True),
                                        on_epoch_end=lambda epoch, logs: os._exit(3) if epoch == 1 else None)


def shard_resume_finish(path):
    """(d) Resumed from the killed sharded run's checkpoint (validation held out of each
    shard, early stopping), the fit ends bit for bit as the uninterrupted one; resuming
    with another rank's shard changed is refused."""
    X, y = data()
    mine = shards_of(X, y, unequal_cuts(len(X)), comm.rank)
    options = dict(epochs=4, batch_size=32, comm=comm, shard=True, optimizer=fm.Adam(lr=1e-2), validation_split=0.2)

    def stopping():
        return fm.EarlyStopping(patience=10, restore_best_weights=True)

    other = (mine[0] + (comm.rank == comm.size - 1), mine[1])
    expect_error(lambda: network("float64", dropout=0.2).fit(*other, resume_from=path, early_stopping=stopping(),
                                                             **options),
                 r"^fit across ranks: rank 0: ValueError: resume_from: .* is a checkpoint of a fit with another shards")
    unsharded = dict(options, shard=False)
    expect_error(lambda: network("float64", dropout=0.2).fit(X, y, resume_from=path, early_stopping=stopping(),
                                                             **unsharded),
                 r"resume_from: .* is a checkpoint of a fit with another X")
    resumed, whole = network("float64", dropout=0.2), network("float64", dropout=0.2)
    history = resumed.fit(*mine, checkpoint_every=1, checkpoint_path=path, resume_from=path,
                          early_stopping=stopping(), **options)
    expected = whole.fit(*mine, early_stopping=stopping(), **options)
    assert np.array_equal(resumed.params, whole.params), f"rank {comm.rank}: resumed differs"
    assert history.history == expected.history


CASES = {name: globals()[name] for name in ("equals_one_process", "dropout", "batch_norm", "weights_and_validation",
                                            "mismatches", "guard",
                                            "stops", "signal_handler_saves",
                                            "resume_killed", "resume_finish", "shard_equals_data_parallel",
                                            "shard_equals_one_process", "shard_shuffled",
                                            "shard_many_steps", "shard_weights_and_validation", "shard_mismatches",
                                            "shard_resume_killed", "shard_resume_finish")}

if __name__ == "__main__":
    case = sys.argv[1]
    CASES[case](*sys.argv[2:])
    comm.comm.Barrier()
    if comm.rank == 0:
        print(f"ok {case} on {comm.size} ranks", flush=True)
