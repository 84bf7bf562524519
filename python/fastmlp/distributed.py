"""Data-parallel training across processes: the communicator ``Network.fit`` uses.

    # mpiexec -n 4 python -m mpi4py train.py
    import fastmlp as fm
    comm = fm.distributed.MPI()             # mpi4py's COMM_WORLD: pip install "fastmlp[mpi]"
    net.fit(X, y, batch_size=256, comm=comm)  # every rank: the same X, y (a memory-mapped file, say)

Every rank passes the same data and the same options; the network's parameters,
optimizer state and generator are rank 0's, broadcast when the fit starts. Each
global batch (``batch_size`` rows, drawn from the one shuffled order that every
rank's generator draws alike) is cut into ``size`` contiguous parts; each rank
runs forward and backward on its part, its gradient scaled for the whole batch's
mean, and one in-place all-reduce sums the flat gradient buffer across the ranks;
every rank then applies the same update. So the run is the single-process fit
with the same global batch, to rounding: the gradient's sum over the batch's rows
is taken in another order (per rank, then across ranks), so float64 agrees to
about 1e-15 relative per step, not bit for bit.

Before anything runs, the ranks compare what must agree (the data's shape and
dtype, the architecture, the loss, the optimizer and the fit's options): a rank
whose arguments are refused, or that disagrees, makes the fit raise the same
ValueError on every rank rather than leave the others waiting.

After every epoch the ranks compare a digest of their parameters: if they ever
differ, the fit stops with the same RuntimeError on every rank. Checkpoints
(``checkpoint_every``, ``checkpoint_path``) are written by rank 0, and every rank
resumes from the same file (``resume_from``).

Dropout works across ranks: every rank draws the whole global batch's masks and
keeps its rows' part, as one process would. Not yet across ranks: batch norm (its
batch statistics need the other ranks' rows), ``shard=True`` (each rank its own
rows), and an all-reduce in buckets overlapped with backward.

nothing in fastmlp imports mpi4py until :class:`MPI` is made.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Communicator", "MPI"]


class Communicator:
    """What data-parallel fit needs of a communicator. Subclass it for another
    transport; :class:`MPI` is the one fastmlp ships."""

    @property
    def rank(self) -> int:
        """This process's index, 0..size-1."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        """How many processes train together."""
        raise NotImplementedError

    def allreduce_sum(self, array: np.ndarray) -> None:
        """Replaces ``array`` (contiguous, float32 or float64) by its sum over the ranks, in place."""
        raise NotImplementedError

    def broadcast(self, value, root: int = 0):
        """``value`` of rank ``root`` (any picklable object), on every rank."""
        raise NotImplementedError

    def allgather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        raise NotImplementedError


class MPI(Communicator):
    """A communicator over MPI, through mpi4py (``comm``: an ``mpi4py.MPI.Comm``;
    None for ``COMM_WORLD``). Launch with ``mpiexec -n N python -m mpi4py script.py``,
    so that an exception on one rank aborts them all instead of leaving the others
    waiting in a collective."""

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI as mpi
        except ImportError as error:
            raise ImportError('fastmlp.distributed.MPI needs mpi4py: pip install "fastmlp[mpi]" '
                              f"(mpi4py and the mpich wheel) ({error})") from error
        self._mpi = mpi
        self.comm = mpi.COMM_WORLD if comm is None else comm
        if not isinstance(self.comm, mpi.Comm):
            raise TypeError(f"comm: expected an mpi4py.MPI.Comm, got {type(comm).__name__}")

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def allreduce_sum(self, array: np.ndarray) -> None:
        self.comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)

    def broadcast(self, value, root: int = 0):
        return self.comm.bcast(value, root=root)

    def allgather(self, value) -> list:
        return self.comm.allgather(value)

    def __repr__(self) -> str:
        return f"fastmlp.distributed.MPI(rank {self.rank} of {self.size})"
