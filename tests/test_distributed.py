"""Data-parallel fit across processes (fastmlp.distributed): the cases of mpi_cases.py
under ``mpiexec -n 2`` and ``-n 3`` (the mpich wheel's, in the test extra), each in a
subprocess with a timeout; skipped when mpi4py or mpiexec is not installed. And what
can be checked in this process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp as fm

CASES = Path(__file__).with_name("mpi_cases.py")


def mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # the mpich wheel puts it in the venv's bin/
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run_case(ranks: int, *args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mpi4py")
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("no mpiexec (pip install 'fastmlp[mpi]' brings mpich's)")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # ranks × threads within the 2 cores
    return subprocess.run([launcher, "-n", str(ranks), sys.executable, "-m", "mpi4py", str(CASES), *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("case", ["equals_one_process", "dropout", "batch_norm", "weights_and_validation",
                                  "mismatches", "guard", "stops", "shard_equals_data_parallel",
                                  "shard_equals_one_process", "shard_shuffled", "shard_many_steps",
                                  "shard_weights_and_validation", "shard_mismatches"])
def test_under_mpiexec(case, ranks):
    result = run_case(ranks, case)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"ok {case} on {ranks} ranks" in result.stdout


def test_a_signal_handler_that_saves_the_network_during_a_distributed_fit(tmp_path):
    result = run_case(2, "signal_handler_saves", str(tmp_path / "saved.npz"))
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("prefix", ["", "shard_"])  # every rank the same rows; each its own (shard=True)
def test_a_killed_run_resumed_across_ranks_ends_as_the_uninterrupted_one(prefix, ranks, tmp_path):
    path = str(tmp_path / "checkpoint.npz")
    killed = run_case(ranks, f"{prefix}resume_killed", path)
    assert killed.returncode != 0 and (tmp_path / "checkpoint.npz").exists()
    result = run_case(ranks, f"{prefix}resume_finish", path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"ok {prefix}resume_finish on {ranks} ranks" in result.stdout


class OneRank(fm.distributed.Communicator):
    """A communicator of one process: the sums are the values themselves."""

    rank, size = 0, 1

    def allreduce_sum(self, array):
        pass

    def broadcast(self, value, root=0):
        return value

    def allgather(self, value):
        return [value]


def test_a_single_rank_communicator_is_the_plain_fit():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 2, 64)
    a = fm.Network([4, 8, 2], loss="cross_entropy", seed=1)
    b = fm.Network([4, 8, 2], loss="cross_entropy", seed=1)
    ha = a.fit(X, y, epochs=3, batch_size=16, comm=OneRank())
    hb = b.fit(X, y, epochs=3, batch_size=16)
    assert np.array_equal(a.params, b.params) and ha.history == hb.history


@pytest.mark.parametrize("comm", [None, OneRank()])
def test_shard_in_one_process_is_the_plain_fit(comm):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 2, 64)
    a = fm.Network([4, 8, 2], loss="cross_entropy", dropout=0.2, seed=1)
    b = fm.Network([4, 8, 2], loss="cross_entropy", dropout=0.2, seed=1)
    options = dict(epochs=3, batch_size=16, validation_split=0.25, class_weight="balanced")
    ha = a.fit(X, y, comm=comm, shard=True, **options)
    hb = b.fit(X, y, **options)
    assert np.array_equal(a.params, b.params) and ha.history == hb.history


class Mirror(fm.distributed.Communicator):
    """Rank 0 of two whose other rank holds the same: every sum is twice the value.
    The ``fail``-th all-reduce raises, as a failed one would."""

    rank, size = 0, 2

    def __init__(self, fail=None):
        self.calls, self.fail = 0, fail

    def allreduce_sum(self, array):
        self.calls += 1
        if self.calls == self.fail:
            raise OSError("the all-reduce failed")
        array *= 2

    def broadcast(self, value, root=0):
        return value

    def allgather(self, value):
        return [value, value]


def test_a_failed_reduce_leaves_batch_norms_running_statistics_as_they_were():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    counting = Mirror()
    fm.Network([6, 16, 8, 3], loss="cross_entropy", norm="batch", seed=1).fit(X, y, epochs=1, comm=counting)
    assert counting.calls == 8  # a step: 2 batch norms: 2 sums forward, 1 back; the gradient; the figures
    for fail in range(1, counting.calls + 1):
        net = fm.Network([6, 16, 8, 3], loss="cross_entropy", norm="batch", seed=1)
        net.fit(X, y, epochs=1, comm=Mirror())
        params, state = net.params.copy(), net.state.copy()
        with pytest.raises(OSError, match="the all-reduce failed"):
            net.fit(X, y, epochs=1, comm=Mirror(fail))
        assert np.array_equal(net.params, params) and np.array_equal(net.state, state), f"failed at call {fail}"


BATCH_NORM_SCRIPT = """
import numpy as np, fastmlp as fm
from test_distributed import Mirror

class Busy(Mirror):  # Python that runs other kernels on this thread mid-sum (a signal handler's, say)
    def allreduce_sum(self, array):
        wide.predict(np.ones((2, 4), np.float32))  # a wider batch norm: the thread's scratch grows
        super().allreduce_sum(array)

wide = fm.Network([4, 4096, 2], loss="cross_entropy", norm="batch", seed=0)
rng = np.random.default_rng(0)
X, y = rng.standard_normal((40, 6)).astype(np.float32), rng.integers(0, 3, 40)
a, b = (fm.Network([6, 16, 8, 3], loss="cross_entropy", norm="batch", seed=1) for _ in range(2))
a.fit(X, y, epochs=2, comm=Busy())
b.fit(X, y, epochs=2, comm=Mirror())
assert np.array_equal(a.params, b.params) and np.array_equal(a.state, b.state)
for _ in range(100):  # small allocations: a freed block written to would abort here
    [np.empty(k) for k in range(1, 64)]
print("ok")
"""


def test_batch_norms_sums_across_ranks_survive_python_that_runs_kernels_meanwhile():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", BATCH_NORM_SCRIPT], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_a_communicators_gradient_memory_must_be_an_array():
    import contextlib

    class ListMemory(Mirror):
        @contextlib.contextmanager
        def gradient_memory(self, count, dtype):
            yield [0.0] * count  # not an array: a copy made of it would be freed under the fit

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    net = fm.Network([6, 16, 3], loss="cross_entropy", dtype="float64", seed=1)
    params = net.params.copy()
    with pytest.raises(TypeError, match=r"^gradient_memory: expected a NumPy array .*got list"):
        net.fit(X, y, epochs=2, comm=ListMemory())
    assert np.array_equal(net.params, params)


def test_shard_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^shard: expected True or False"):
        fm.Network([2, 1]).fit(np.zeros((4, 2)), np.zeros(4), shard="yes")


def interleave(rows):
    """The sharded epoch's interleave written plainly: rank q's k-th row at (2k + 1) / (2 n_q), merged, ties to
    the lower rank; the rank of each position."""
    from fractions import Fraction

    return [q for _, q, _ in sorted((Fraction(2 * k + 1, 2 * n), q, k) for q, n in enumerate(rows) for k in range(n))]


@pytest.mark.parametrize("rows", [[1], [5, 5], [1, 9], [7, 3, 11], [2, 1, 1, 30], [13, 17, 19, 23, 1]])
def test_the_shard_interleave_gives_each_rank_its_share_of_every_prefix(rows):
    ranks = np.array(interleave(rows))
    total = sum(rows)
    for q in range(len(rows)):
        prefix = [fm._core.shard_prefix(rows, q, e) for e in range(total + 1)]
        assert prefix == [int((ranks[:e] == q).sum()) for e in range(total + 1)]
        assert prefix[-1] == rows[q] and all(b - a in (0, 1) for a, b in zip(prefix, prefix[1:]))
        assert all(abs(p - rows[q] * e / total) < 1 + rows[q] * len(rows) / (2 * total) for e, p in enumerate(prefix))


@pytest.mark.parametrize("batch", [1, 3, 7, 50])
def test_a_ranks_part_of_a_sharded_batch_stays_within_the_engines_bound(batch):
    # The engine sizes a rank's buffers for n (B + ranks) / N + 2 rows (fit's plan).
    rng = np.random.default_rng(batch)
    for _ in range(20):
        rows = [int(r) for r in rng.integers(1, 60, rng.integers(2, 7))]
        total = sum(rows)
        for q, n in enumerate(rows):
            ends = [fm._core.shard_prefix(rows, q, min(e, total)) for e in range(0, total + batch, batch)]
            assert max(b - a for a, b in zip(ends, ends[1:])) <= int(n * (batch + len(rows)) / total) + 2


def test_the_shard_interleave_of_huge_shards_is_exact():
    rows = [3 * 2**60, 2**60 + 1]  # products beyond 64 bits
    total = sum(rows)
    for e in (0, 1, 2, 2**61, total // 2, total - 1, total):
        parts = [fm._core.shard_prefix(rows, q, e) for q in range(2)]
        assert sum(parts) == e and abs(parts[0] - rows[0] * e / total) <= 2
    with pytest.raises(ValueError, match="e must be in"):
        fm._core.shard_prefix([2, 3], 0, 6)


def test_comm_must_be_a_communicator():
    net = fm.Network([2, 1])
    with pytest.raises(TypeError, match=r"^comm: expected a fastmlp.distributed.Communicator"):
        net.fit(np.zeros((4, 2)), np.zeros(4), comm="world")


def test_the_engine_refuses_ranks_without_a_reduce():
    net = fm.Network([2, 1])
    config = fm.SGD()._config()
    with pytest.raises(ValueError, match="training across ranks needs a gradient reduce"):
        net._core.fit(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), 1, 0, False, "mse", 1.0, config,
                      None, False, False, 0, None, 0, 2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, ranks\)"):
        net._core.fit(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), 1, 0, False, "mse", 1.0, config,
                      None, False, False, 0, None, 2, 2, lambda g, f: None)


def test_fastmlp_does_not_import_mpi4py():
    code = "import sys, fastmlp; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
