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

On one machine the ranks sum their gradients in shared memory, without
copies: for the length of a fit, each rank's engine keeps its gradient in its
slot of an MPI shared-memory window (:meth:`Communicator.gradient_memory`), and
each rank adds up its own part of the slots and writes the sum into every slot,
between two barriers — half of the memory traffic of MPI's all-reduce through
its buffers; the machine's ranks' gradients are added in rank order. Across
machines, the sum of each machine goes through MPI's all-reduce among one rank
per machine (each machine's sum first, then MPI's sum of those, in MPI's order).

Dropout works across ranks: every rank draws the whole global batch's masks and
keeps its rows' part, as one process would. Batch norm too: its statistics are the
global batch's (each batch norm layer sums its column sums and centred squares
across the ranks going forward, and the sums its backward needs going back), so
every rank needs a row of every batch. Not yet across ranks: batch norm with
``shard=True`` (a rank may hold no row of a batch), and an all-reduce in buckets
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
sharded fit is one process's fit on the rows in the interleave's order, each
global batch's rows grouped by rank (dropout's masks follow that order), to
rounding (float64 rtol 1e-10 asserted); with equal shards cut as the
data-parallel fit cuts its global batches, it is that fit bit for bit.

nothing in fastmlp imports mpi4py until :class:`MPI` is made.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import kernels as _kernels

__all__ = ["Communicator", "MPI"]

SHARED_MEMORY_MIN_BYTES = 32 * 1024  # smaller gradients go through MPI_Allreduce (MPI.gradient_memory)


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

    @contextlib.contextmanager
    def gradient_memory(self, count: int, dtype):
        """Memory for a fit's gradient (``count`` values of ``dtype``, 1-D) where
        :meth:`allreduce_sum` sums it fastest, for the ``with`` block; None (this
        default): the network keeps its own. Every rank enters it together."""
        yield None

    def allgather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        raise NotImplementedError


class MPI(Communicator):
    """A communicator over MPI, through mpi4py (``comm``: an ``mpi4py.MPI.Comm``;
    None for ``COMM_WORLD``). Launch with ``mpiexec -n N python -m mpi4py script.py``,
    so that an exception on one rank aborts them all instead of leaving the others
    waiting in a collective."""

    def __init__(self, comm=None, *, shared_memory: bool = True):
        try:
            from mpi4py import MPI as mpi
        except ImportError as error:
            raise ImportError('fastmlp.distributed.MPI needs mpi4py: pip install "fastmlp[mpi]" '
                              f"(mpi4py and the mpich wheel) ({error})") from error
        self._mpi = mpi
        self.comm = mpi.COMM_WORLD if comm is None else comm
        if not isinstance(self.comm, mpi.Comm):
            raise TypeError(f"comm: expected an mpi4py.MPI.Comm, got {type(comm).__name__}")
        if not isinstance(shared_memory, bool):
            raise TypeError(f"shared_memory: expected True or False, got {shared_memory!r:.80}")
        self.shared_memory = shared_memory
        self._machine = None  # what _machine_comms finds, once
        self._slots = None    # while a gradient_memory block runs: every local rank's slot
        self._stale = []      # windows of blocks that ended in an exception: freed at the next block

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def allreduce_sum(self, array: np.ndarray) -> None:
        slots = self._slots
        if slots is not None and _same_memory(array, slots[self._machine[0].Get_rank()]):
            self._sum_slots(slots)
        else:
            self.comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)

    @contextlib.contextmanager
    def gradient_memory(self, count: int, dtype):
        """This rank's slot of a shared-memory window that holds one slot for every
        rank of this machine: :meth:`allreduce_sum` of the slot sums the machine's
        slots where they lie (and, across machines, the machines' sums through MPI).
        None when no machine holds two ranks, when a rank was made with
        ``shared_memory=False``, or for less than 32 KiB (MPI's all-reduce is
        quicker there). The window is freed when the block ends; after an
        exception, which the other ranks may not share (they would never come to
        free it), when the next block starts, since every rank enters that one
        together (a fit that raised on every rank, caught and followed by another,
        thus leaves nothing behind). Nothing may keep a view of the slot past the block."""
        dtype = np.dtype(dtype)
        if self.size == 1:
            yield None
            return
        shared = self.comm.allreduce(self.shared_memory, op=self._mpi.LAND)
        while self._stale:  # every rank is here: the windows of blocks that raised, freed together
            self._stale.pop(0).Free()
        # Below 32 KiB one MPI_Allreduce (5 µs for 2 ranks here) beats the two barriers
        # (13 µs); above, the slots win (16 K float32: 14 against 21 µs; 25 M: 7.6 against
        # 44 ms). count and dtype are the same on every rank: so is the choice.
        if not shared or count * dtype.itemsize < SHARED_MEMORY_MIN_BYTES:
            yield None
            return
        machine, _, _, crowded = self._machine_comms()
        if not crowded:  # one rank on every machine: nothing to share
            yield None
            return
        page = 4096  # whole pages: no two ranks' slots share a cache line
        window = self._mpi.Win.Allocate_shared(-(-max(count, 1) * dtype.itemsize // page) * page,
                                               dtype.itemsize, comm=machine)
        slots = []
        for rank in range(machine.Get_size()):
            memory, _ = window.Shared_query(rank)
            slots.append(np.frombuffer(memory, dtype=dtype, count=count))
        del memory
        self._slots = slots
        try:
            yield slots[machine.Get_rank()]
        except BaseException:
            self._slots = None
            self._stale.append(window)
            del slots  # no view of the window in this frame, which the traceback keeps
            raise
        self._slots = None
        del slots
        window.Free()

    def _machine_comms(self):
        """(the communicator of this machine's ranks, whether the ranks span machines,
        the communicator of each machine's first rank when they do (None on the
        other ranks), whether some machine holds two ranks or more): made once."""
        if self._machine is None:
            mpi = self._mpi
            machine = self._split_machine()
            largest = self.comm.allreduce(machine.Get_size(), op=mpi.MAX)
            spans = self.comm.allreduce(machine.Get_size() < self.size, op=mpi.LOR)
            leaders = None
            if spans:
                leaders = self.comm.Split(0 if machine.Get_rank() == 0 else mpi.UNDEFINED, key=self.rank)
                if leaders == mpi.COMM_NULL:
                    leaders = None
            self._machine = (machine, spans, leaders, largest > 1)
        return self._machine

    def _split_machine(self):
        """The ranks that share this machine's memory (tests split otherwise, to
        play several machines on one)."""
        return self.comm.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)

    def _sum_slots(self, slots: list[np.ndarray]) -> None:
        """The sum of the slots in every slot. Each rank of the machine adds up its
        part of the slots (whole cache lines) and writes it into all of them,
        between two barriers; across machines, the machine's first rank then sums
        the machines' totals with MPI and the others copy its slot."""
        machine, spans, leaders, _ = self._machine
        local, ranks, count = machine.Get_rank(), machine.Get_size(), slots[0].size
        machine.Barrier()  # every slot holds its rank's gradient
        start, stop = (count * part // ranks // 16 * 16 if part < ranks else count for part in (local, local + 1))
        _kernels.sum_into_each(slots, start, stop)
        machine.Barrier()  # every slot holds the machine's sum
        if spans:
            if leaders is not None:
                leaders.Allreduce(self._mpi.IN_PLACE, slots[0], op=self._mpi.SUM)
            machine.Barrier()
            if local != 0:
                np.copyto(slots[local], slots[0])
            machine.Barrier()  # slot 0 read: its rank may write its next gradient there

    def broadcast(self, value, root: int = 0):
        return self.comm.bcast(value, root=root)

    def allgather(self, value) -> list:
        return self.comm.allgather(value)

    def __repr__(self) -> str:
        return f"fastmlp.distributed.MPI(rank {self.rank} of {self.size})"


def _same_memory(array: np.ndarray, slot: np.ndarray) -> bool:
    """Whether ``array`` is exactly the memory of ``slot`` (another view of it)."""
    return (isinstance(array, np.ndarray) and array.dtype == slot.dtype and array.shape == slot.shape
            and array.ctypes.data == slot.ctypes.data and array.flags.c_contiguous)
