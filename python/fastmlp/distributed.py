"""Data-parallel training across processes: the communicator ``Network.fit`` uses.

    # mpiexec -n 4 python -m mpi4py train.py
    import fastmlp as fm
    comm = fm.distributed.MPI()             # mpi4py's COMM_WORLD: pip install "fastmlp[mpi]"
    net.fit(X, y, batch_size=256, comm=comm)  # every rank: the same X, y (a memory-mapped file, say)
    net.fit(X_mine, y_mine, batch_size=256, comm=comm, shard=True)  # or: every rank its own rows

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
batch statistics need the other ranks' rows), and an all-reduce in buckets
overlapped with backward.

``shard=True``: each rank passes only its own rows (n_r of them, any count >= 1;
data that does not fit one machine). ``batch_size`` stays the global batch over
N = Σ n_r rows: each epoch runs ceil(N / batch_size) steps on every rank, and
step s takes the rows [s·B, min((s+1)·B, N)) of the epoch's interleave of the
ranks' rows, rank q's k-th row standing at (2k + 1) / (2 n_q) and the ranks'
rows merged by that position (a tie: the lower rank first; Webster's
apportionment, seat by seat). So every global batch holds exactly batch_size
rows, every row comes once an epoch, and each rank's part of a step is its
next rows, about n_r · B / N of them (within 1 + size · n_r / N); the ranks'
parts line up in rank order (equal shards and B divisible by the ranks: B /
size rows each, the data-parallel fit's cut). A rank's share of each step is
worked out by bisection from the counts alone (no list of rows), exactly for
any counts. With ``shuffle`` each rank shuffles its own rows each epoch, with a
generator seeded by one draw of the network's generator and its rank, so the
network's generator (dropout, checkpoints, the per-epoch digest) stays the same
on every rank; dropout's masks are drawn for the whole global batch and each
rank keeps those of its rows' place in it. The gradient is the mean over the
global batch: without sample weights its weight is its row count, known to
every rank; with them, the ranks' parts' weights are summed across the ranks
before the steps, one all-reduce for each 4096 steps (one a step would cost a
few microseconds, a tenth of a small step). What depends on every rank's rows
is computed across them: the epoch's loss and accuracy (over the total weight
of all ranks), ``class_weight="balanced"`` (class counts summed),
``validation_split`` (each rank holds out the last fraction of its rows) and
``validation_data`` (each rank its part): val_loss and val_accuracy are the
weighted means over every rank's validation samples (their sums all-reduced),
so early stopping and callbacks see the same figures on every rank. The ranks
compare their data's shapes past the first axis and dtypes (not its bytes, which
differ), and the options; a checkpoint's fingerprint holds every rank's data
digest, so resuming with other shards is refused. Without shuffling, the
sharded fit is one process's fit on the rows in the interleave's order, to
rounding (float64 rtol 1e-10 asserted); with equal shards cut as the
data-parallel fit cuts its global batches, it is that fit bit for bit.

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
