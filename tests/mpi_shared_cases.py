"""Cases run under ``mpiexec -n N python -m mpi4py tests/mpi_shared_cases.py CASE`` by
test_shared_memory.py: the MPI communicator's sum in shared memory. Each rank
asserts; rank 0 prints "ok CASE" at the end; an exception on any rank aborts all."""

from __future__ import annotations

import sys

import numpy as np

import fastmlp as fm

DEFAULT_MIN_BYTES = fm.distributed.SHARED_MEMORY_MIN_BYTES
fm.distributed.SHARED_MEMORY_MIN_BYTES = 0  # the awkward small sizes through the slots too


class PairsOfRanks(fm.distributed.MPI):
    """Plays machines of two ranks each on one machine: the sum across machines runs
    as it would between hosts (shared memory within a pair, MPI between pairs)."""

    def _split_machine(self):
        return self.comm.Split(self.rank // 2, key=self.rank)


def check_sums(comm):
    """allreduce_sum of the slot: every rank gets the sum of the ranks' arrays, added in
    rank order, bit for bit (the NumPy twin's sum of the gathered arrays); any other
    array goes through MPI."""
    rng = np.random.default_rng(comm.rank)
    for dtype in (np.float32, np.float64):
        for count in (1, 3, 7, 33, 257, 100_003):
            with comm.gradient_memory(count, dtype) as slot:
                assert slot is not None and slot.shape == (count,) and slot.dtype == dtype
                assert slot.flags.writeable
                if comm._machine[0].Get_size() > 1:  # whole pages: the slots share no cache line
                    assert slot.ctypes.data % 4096 == 0
                for _ in range(3):  # reused step after step
                    mine = (rng.standard_normal(count) * 10.0 ** rng.integers(-3, 4, count)).astype(dtype)
                    slot[:] = mine
                    comm.allreduce_sum(slot)
                    everyone = [a.copy() for a in comm.comm.allgather(mine)]
                    if comm._machine[1]:  # across machines: each machine's sum, then MPI's sum of those
                        np.testing.assert_allclose(slot, np.sum(everyone, axis=0, dtype=np.float64),
                                                   rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-3)
                    else:
                        fm.reference.sum_into_each(everyone)
                        assert np.array_equal(slot, everyone[0]), (dtype, count)
                    gathered = comm.comm.allgather(slot.copy())
                    assert all(np.array_equal(gathered[0], g) for g in gathered), "the ranks' sums differ"
                    figures = np.array([1.0, comm.rank])  # not the slot: through MPI
                    comm.allreduce_sum(figures)
                    assert figures[0] == comm.size and figures[1] == comm.size * (comm.size - 1) / 2
            assert comm._slots is None


def sums():
    comm = fm.distributed.MPI()
    check_sums(comm)
    fm.distributed.SHARED_MEMORY_MIN_BYTES = DEFAULT_MIN_BYTES  # by default a small gradient goes through MPI
    try:
        with comm.gradient_memory(DEFAULT_MIN_BYTES // 4 - 1, np.float32) as slot:
            assert slot is None
        with comm.gradient_memory(DEFAULT_MIN_BYTES // 4, np.float32) as slot:
            assert slot is not None
    finally:
        fm.distributed.SHARED_MEMORY_MIN_BYTES = 0


def sums_across_machines():
    """Machines of two ranks (and, on 3 ranks, one machine of one: its rank takes part
    in the sum across machines alike)."""
    comm = PairsOfRanks()
    check_sums(comm)
    assert comm._machine[1] and (comm._machine[2] is not None) == (comm.rank % 2 == 0)


def one_rank_declines():
    """A rank made with shared_memory=False: no rank uses shared memory (a choice that
    differed across ranks would leave some ranks in collectives the others skip)."""
    comm = fm.distributed.MPI(shared_memory=comm_size() == 1 or fm.distributed.MPI().rank != 1)
    with comm.gradient_memory(100, np.float32) as slot:
        assert slot is None
    X, y = np.random.default_rng(0).standard_normal((64, 3)), np.arange(64) % 2
    net = fm.Network([3, 5, 2], loss="cross_entropy", seed=0)
    net.fit(X, y, epochs=2, batch_size=16, comm=comm)
    gathered = comm.allgather(net.params.copy())
    assert all(np.array_equal(gathered[0], p) for p in gathered)


def fit_in_shared_memory():
    """A fit whose gradient lives in the shared slots equals the fit through MPI's
    all-reduce (to rounding; bit for bit on two ranks, where both add a + b), the
    network's grads hold the last gradient afterwards, and a failure inside the block
    leaves the communicator usable."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((301, 9)), rng.integers(0, 4, 301)
    kinds = {"shared": fm.distributed.MPI(), "mpi": fm.distributed.MPI(shared_memory=False)}
    if comm_size() == 4:
        kinds["pairs"] = PairsOfRanks()
    results = {}
    for name, comm in kinds.items():
        for dtype in ("float32", "float64"):
            net = fm.Network([9, 24, 24, 4], loss="cross_entropy", dtype=dtype, seed=3, dropout=0.2)
            history = net.fit(X, y, epochs=3, batch_size=37, optimizer=fm.Adam(lr=1e-2), comm=comm)
            results[name, dtype] = (net.params.copy(), net.grads.copy(), history["loss"])
    alone = {}
    for dtype in ("float32", "float64"):
        net = fm.Network([9, 24, 24, 4], loss="cross_entropy", dtype=dtype, seed=3, dropout=0.2)
        history = net.fit(X, y, epochs=3, batch_size=37, optimizer=fm.Adam(lr=1e-2))
        alone[dtype] = (net.params.copy(), net.grads.copy(), history["loss"])
    for (name, dtype), (params, grads, loss) in results.items():
        rtol = 1e-10 if dtype == "float64" else 2e-4
        np.testing.assert_allclose(params, alone[dtype][0], rtol=rtol, atol=rtol * 1e-2, err_msg=f"{name} {dtype}")
        np.testing.assert_allclose(grads, alone[dtype][1], rtol=rtol, atol=rtol * 1e-2, err_msg=f"{name} {dtype}")
        np.testing.assert_allclose(loss, alone[dtype][2], rtol=rtol, err_msg=f"{name} {dtype}")
        assert np.any(grads != 0)
        if comm_size() == 2:
            same = results["mpi", dtype]
            assert np.array_equal(params, same[0]) and np.array_equal(grads, same[1]), f"{name} {dtype}"
    comm = kinds["shared"]
    try:
        with comm.gradient_memory(10, np.float64):
            raise KeyError("inside")
    except KeyError:
        pass
    assert comm._slots is None
    # A fit that fails on every rank (its loss overflows), caught: its window, as the block
    # above's, is freed when the next block starts (every rank is there), not left to
    # MPI's finalize, so that a search that catches failed fits does not fill the memory.
    first = list(comm._stale)
    assert len(first) == 1
    try:
        fm.Network([9, 8, 4], loss="cross_entropy", seed=1).fit(X * 1e30, y, epochs=1, batch_size=64, comm=comm)
    except FloatingPointError:
        pass
    stale = list(comm._stale)
    assert len(stale) == 1 and first[0] == comm._mpi.WIN_NULL  # the block's freed as the fit began
    net = fm.Network([9, 8, 4], loss="cross_entropy", seed=1)
    net.fit(X, y, epochs=1, batch_size=64, comm=comm)
    assert not comm._stale and stale[0] == comm._mpi.WIN_NULL
    gathered = comm.allgather(net.params.copy())
    assert all(np.array_equal(gathered[0], p) for p in gathered)


def comm_size() -> int:
    return fm.distributed.MPI().size


if __name__ == "__main__":
    case = sys.argv[1]
    globals()[case]()
    world = fm.distributed.MPI()
    world.comm.Barrier()
    if world.rank == 0:
        print(f"ok {case} on {world.size} ranks", flush=True)
