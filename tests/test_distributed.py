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
                                  "mismatches", "guard", "stops"])
def test_under_mpiexec(case, ranks):
    result = run_case(ranks, case)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"ok {case} on {ranks} ranks" in result.stdout


def test_a_signal_handler_that_saves_the_network_during_a_distributed_fit(tmp_path):
    result = run_case(2, "signal_handler_saves", str(tmp_path / "saved.npz"))
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_killed_run_resumed_across_ranks_ends_as_the_uninterrupted_one(ranks, tmp_path):
    path = str(tmp_path / "checkpoint.npz")
    killed = run_case(ranks, "resume_killed", path)
    assert killed.returncode != 0 and (tmp_path / "checkpoint.npz").exists()
    result = run_case(ranks, "resume_finish", path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"ok resume_finish on {ranks} ranks" in result.stdout


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
