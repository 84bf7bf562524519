"""The sum of the ranks' gradients in shared memory: the kernel sum_into_each
against its NumPy twin, and the MPI communicator's shared-memory path under
``mpiexec -n 2``, ``-n 3`` and ``-n 4`` (four ranks playing two machines of two),
the cases of mpi_shared_cases.py; skipped when mpi4py or mpiexec is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import reference

from test_distributed import mpiexec

CASES = Path(__file__).with_name("mpi_shared_cases.py")

SIZES = [1, 3, 7, 33, 257, 16_385, 400_003]  # the last in several pieces, on every thread


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_sum_into_each_matches_its_twin(dtype, n, count):
    rng = np.random.default_rng(n * 10 + count)
    arrays = [(rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n)).astype(dtype) for _ in range(count)]
    start, stop = (0, n) if n < 3 else sorted(rng.integers(0, n + 1, 2))
    original = [a.copy() for a in arrays]
    expected = [a.copy() for a in arrays]
    reference.sum_into_each(expected, start, stop)
    fm.kernels.sum_into_each(arrays, start, stop)
    for got, want, before in zip(arrays, expected, original):
        assert np.array_equal(got, want)  # the same additions in the same order
        assert np.array_equal(got[:start], before[:start]) and np.array_equal(got[stop:], before[stop:])
        exact = np.sum(original, axis=0, dtype=np.float64)[start:stop]
        bound = count * np.finfo(dtype).eps * np.sum(np.abs(original), axis=0, dtype=np.float64)[start:stop]
        assert np.all(np.abs(got[start:stop] - exact) <= bound)  # a sum's rounding, nothing else


def test_sum_into_each_adds_in_list_order():
    big, small = np.float32(2.0**24), np.float32(1.0)
    arrays = [np.array([big], np.float32), np.array([small], np.float32), np.array([small], np.float32)]
    fm.kernels.sum_into_each(arrays)
    assert arrays[2][0] == np.float32(2.0**24)  # ((2^24 + 1) + 1) rounds each time; 2^24 + (1 + 1) would not


def test_sum_into_each_refuses_what_it_cannot_write():
    a, b = np.ones(8), np.ones(8)
    with pytest.raises(ValueError, match=r"^arrays\[1\]: expected a 1-D C-contiguous array"):
        fm.kernels.sum_into_each([a, np.ones(16)[::2]])
    with pytest.raises(ValueError, match=r"^arrays\[1\]: expected a 1-D array of 8 values"):
        fm.kernels.sum_into_each([a, np.ones(9)])
    with pytest.raises(TypeError, match=r"^arrays\[1\]: dtype float32, but arrays\[0\] has float64"):
        fm.kernels.sum_into_each([a, np.ones(8, np.float32)])
    with pytest.raises(TypeError, match=r"^arrays\[0\]: expected a float32 or float64 ndarray"):
        fm.kernels.sum_into_each([[1.0, 2.0], b])
    read_only = np.ones(8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"^arrays\[1\]: the array is read-only"):
        fm.kernels.sum_into_each([a, read_only])
    with pytest.raises(ValueError, match=r"^arrays\[1\] overlaps arrays\[0\]"):
        fm.kernels.sum_into_each([a, a])
    with pytest.raises(ValueError, match=r"^start: expected an integer >= 0 and <= 3"):
        fm.kernels.sum_into_each([a, b], 5, 3)
    with pytest.raises(ValueError, match=r"^stop: expected an integer >= 0 and <= 8"):
        fm.kernels.sum_into_each([a, b], 0, 9)
    with pytest.raises(TypeError, match=r"^arrays: expected a non-empty list"):
        fm.kernels.sum_into_each([])
    assert np.array_equal(a, np.ones(8)) and np.array_equal(b, np.ones(8))  # nothing written


def test_one_rank_has_no_shared_memory():
    pytest.importorskip("mpi4py")
    comm = fm.distributed.MPI()  # this process alone: COMM_WORLD of size 1
    with comm.gradient_memory(10, np.float32) as memory:
        assert memory is None
    with pytest.raises(TypeError, match=r"^shared_memory: expected True or False"):
        fm.distributed.MPI(shared_memory=1)


@pytest.mark.parametrize(("ranks", "case"), [(2, "sums"), (3, "sums"), (3, "sums_across_machines"),
                                             (4, "sums_across_machines"), (2, "fit_in_shared_memory"),
                                             (3, "fit_in_shared_memory"), (4, "fit_in_shared_memory"),
                                             (2, "one_rank_declines")])
def test_under_mpiexec(ranks, case):
    pytest.importorskip("mpi4py")
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("no mpiexec (pip install 'fastmlp[mpi]' brings mpich's)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([launcher, "-n", str(ranks), sys.executable, "-m", "mpi4py", str(CASES), case],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"ok {case} on {ranks} ranks" in result.stdout
