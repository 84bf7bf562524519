"""Data-parallel training over MPI, measured: samples/s of mnist-mlp and wide across processes
and threads, the all-reduce's share of a step, and the MPI latency and bandwidth that the ring
all-reduce cost model (benchmarks/README.md) needs.

    python benchmarks/bench_distributed.py [--quick] [--repeats 3] [--only mnist-mlp,wide] [--tcp ofi|ucx]

Needs mpi4py and an MPI (pip install "fastmlp[mpi]": mpi4py and the mpich wheel, whose mpiexec
lands beside the venv's python). The script itself is the driver: it starts every measurement in
a fresh process (or a fresh pair under mpiexec) and prints the tables.

Configurations: fastmlp bench's mnist-mlp ([784, 512, 256, 10] relu, batch 128, lr 0.01) and
wide ([1024, 4096, 4096, 1024] relu, batch 256, lr 0.001): float32, MSE, plain SGD, shuffled,
the same synthetic data; ``batch_size`` is the global batch in every row.

Rows:
  1 process × 1 thread        fm.set_num_threads(1); net.fit(X, y, batch_size=B)
  1 process × 2 threads       fm.set_num_threads(2); the same
  2 processes × 1 thread,     two independent processes at once, each fit on batch B/2 and no MPI:
    no MPI                    the compute part of the 2-rank rows, apart from the all-reduce
  2 ranks × 1 thread, shm     mpiexec -n 2 ... python -m mpi4py: each rank fm.set_num_threads(1) and
                              net.fit(X, y, batch_size=B, comm=TimedMPI()); each rank computes B/2 rows
                              a step; the gradient summed where it lies, in the ranks' shared slots
                              (fastmlp.distributed.MPI's default on one machine)
  2 ranks × 1 thread, shm     the same with MPI(shared_memory=False): MPICH's Allreduce, through its
    through MPI               own shared-memory buffers
  2 ranks × 1 thread, TCP     MPI(shared_memory=False) with MPI forced onto TCP loopback, the path
                              between machines:
                              MPIR_CVAR_NOLOCAL=1 (no shared memory between ranks of one host) and the
                              netmod's transport set to TCP: --tcp ofi (default) MPIR_CVAR_CH4_NETMOD=ofi
                              FI_PROVIDER=tcp FI_TCP_IFACE=lo (libfabric's tcp provider on 127.0.0.1; MPICH
                              names it, printed under the network table), or --tcp ucx
                              MPIR_CVAR_CH4_NETMOD=ucx UCX_TLS=tcp,self (slower here). MPIR_CVAR_NOLOCAL=1
                              alone is not enough: the wheel's default netmod, UCX, then takes its own
                              shared-memory transports. The network table's latencies show the path changed.

TimedMPI is fastmlp.distributed.MPI whose allreduce_sum notes when each call starts and ends.
The engine calls it twice a step (the flat gradient, then the step's two figures: loss and right
predictions), so the gradient calls mark the steps: an MPI row's step time is the time between
the first and the last gradient all-reduce ÷ (steps − 1), which leaves out fit's once-per-call
setup (the ranks' agreement and rank 0's state broadcast, shown apart as "setup"); a
one-process row's is the fit's wall time ÷ steps. The all-reduce's share of a step is the time
inside both calls over those steps ÷ their time, per rank; it includes waiting for the slower
rank. "alone" is the same all-reduce of the gradient's size timed after the fit, after a barrier
(median): the transfer itself, without the wait.

Network: ping-pong of 8 bytes (latency: half the round trip) and of 16 MiB (bandwidth), and
Allreduce (in place, float32 sum) of 4 B to the wide gradient's 96 MiB; a least-squares fit of
T = α + S / β over the sizes from 1 MiB up gives the 2-rank all-reduce's per-byte cost, and its
8-byte time the latency. Then the ring all-reduce model,

    T(N) = 2 (N − 1) · α + 2 (N − 1) / N · S / β,

predicts the all-reduce of each configuration's gradient (S bytes) on 8 and 64 nodes at 10 and
100 Gb/s (β the link rate, α the TCP latency measured here), beside the measured compute time of
one node (1 process × 2 threads, as here) at the per-node batch: B / N (strong scaling: the
global batch fixed, as fit's batch_size is) and B (weak scaling: the global batch N · B).

Method: every (row, round) is a fresh process or pair that builds the network (seed 0), runs a
warm-up fit (so fastmlp's thread choice and MPI's connections are settled) and then one timed
fit; rows run round-robin, --repeats rounds, with --pause between; medians are shown. The
machines are shared: the last line says how much CPU other processes took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import OtherLoad, cpu_model, print_table  # noqa: E402

from fastmlp.distributed import MPI  # noqa: E402  (mpi4py is imported only when an MPI is made)

SCRIPT = os.path.abspath(__file__)
CONFIG_NAMES = ("mnist-mlp", "wide")
RESULT_TAG = "BENCH_RESULT "
TARGET_RATIO = 0.85  # issue 13: 2 ranks × 1 thread ≥ 0.85 × 1 process × 2 threads
NODES = (8, 64)
LINKS_GBIT = (10, 100)
TCP_PRESETS = {  # MPIR_CVAR_DEBUG_SUMMARY=1 makes MPICH name the libfabric provider it took (ofi)
    "ofi": {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "lo",
            "MPIR_CVAR_DEBUG_SUMMARY": "1"},
    "ucx": {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ucx", "UCX_TLS": "tcp,self"},
}
# Steps per timed fit (and per warm-up fit): nominal, --quick.
STEPS = {"mnist-mlp": (200, 60), "wide": (8, 4)}
WARMUP_STEPS = {"mnist-mlp": 20, "wide": 1}


# ==== the worker: one measurement, in its own process (or under mpiexec) =======================
def config_by_name(name: str):
    from fastmlp.bench import TRAIN_CONFIGS as CONFIGS

    return next(c for c in CONFIGS if c.name == name)


def train_worker(args) -> None:
    """Builds the configuration's network, warms up, times one fit of args.steps steps and
    prints one result line (rank 0; every rank's figures gathered)."""
    import numpy as np

    import fastmlp as fm
    from fastmlp.bench import SEED, make_data

    config = config_by_name(args.config)
    batch = args.batch or config.batch
    fm.set_num_threads(args.threads)
    comm = None
    if args.mpi:
        comm = TimedMPI(shared_memory=not args.no_shared_memory)
    steps, warmup = args.steps, WARMUP_STEPS[config.name]
    X, y = make_data(config, max(steps, warmup) * batch // config.batch + 1)
    net = fm.Network(config.sizes, config.activation, dtype="float32", seed=SEED)
    optimizer = fm.SGD(lr=config.lr)

    def fit(count: int):
        n = count * batch
        return net.fit(X[:n], y[:n], epochs=1, batch_size=batch, optimizer=optimizer, shuffle=True, comm=comm)

    fit(warmup)
    if comm is not None:
        comm.calls.clear()
        comm.comm.Barrier()
    start = time.perf_counter()
    history = fit(steps)
    wall = time.perf_counter() - start
    result = {"wall": wall, "steps": steps, "batch": batch, "loss": history.history["loss"][-1],
              "threads": fm.get_num_threads(), "parameters": int(net.params.size)}
    if comm is None:
        result["step"] = wall / steps
        print(RESULT_TAG + json.dumps({"ranks": [result]}), flush=True)
        return
    grads = [c for c in comm.calls if c[2] > 2]
    first, last = grads[0][0], grads[-1][0]
    inside = sum(end - begin for begin, end, _ in comm.calls if first <= begin < last)
    result["step"] = (last - first) / (len(grads) - 1)
    result["allreduce_share"] = inside / (last - first)
    result["allreduce_per_step"] = inside / (len(grads) - 1)
    result["setup"] = max(0.0, first - start - (result["step"] - result["allreduce_per_step"]))
    alone = []
    with comm.gradient_memory(net.params.size, np.float32) as slot:  # as in the fit
        buffer = np.zeros(net.params.size, dtype=np.float32) if slot is None else slot
        for _ in range(args.alone_reps):
            buffer[:] = 1  # a gradient written anew, as backward writes it
            comm.comm.Barrier()
            t0 = time.perf_counter()
            comm.allreduce_sum(buffer)
            alone.append(time.perf_counter() - t0)
    result["allreduce_alone"] = statistics.median(alone)
    everyone = comm.comm.gather(result, root=0)
    if comm.rank == 0:
        print(RESULT_TAG + json.dumps({"ranks": everyone, "library": comm.library()}), flush=True)


class TimedMPI(MPI):
    """fastmlp.distributed.MPI whose allreduce_sum records (start, end, elements) of each call."""

    def __init__(self, comm=None, *, shared_memory=True):
        super().__init__(comm, shared_memory=shared_memory)
        self.calls: list[tuple[float, float, int]] = []

    def allreduce_sum(self, array) -> None:
        start = time.perf_counter()
        super().allreduce_sum(array)
        self.calls.append((start, time.perf_counter(), array.size))

    def library(self) -> str:
        from mpi4py import MPI as mpi

        return mpi.Get_library_version().splitlines()[0].strip()


def network_worker(args) -> None:
    """Ping-pong latency and bandwidth, and Allreduce times over sizes, between 2 ranks."""
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    peer = 1 - rank
    quick = args.quick

    def pingpong(nbytes: int, reps: int) -> float:
        buffer = np.zeros(nbytes, dtype=np.uint8)
        times = []
        for _ in range(3):  # three batches of reps; the best batch's mean half round trip
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(reps):
                if rank == 0:
                    comm.Send(buffer, peer)
                    comm.Recv(buffer, peer)
                else:
                    comm.Recv(buffer, peer)
                    comm.Send(buffer, peer)
            times.append((time.perf_counter() - start) / reps / 2)
        return min(times)

    def allreduce(elements: int, reps: int) -> float:
        buffer = np.ones(elements, dtype=np.float32)
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times = []
        for _ in range(reps):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    pingpong(8, 100)  # warm-up: connections
    result = {"latency": pingpong(8, 500 if quick else 2000),
              "pingpong_bytes": 16 << 20,
              "pingpong_bandwidth": (16 << 20) / pingpong(16 << 20, 3 if quick else 6)}
    sizes = [1, 256, 16 << 10, 256 << 10, 1 << 20, 4 << 20]
    sizes += [config_elements(name) for name in CONFIG_NAMES]
    allreduce_times = {}
    for elements in sorted(set(sizes)):
        reps = 200 if elements <= 16 << 10 else (20 if elements <= 1 << 20 else 5)
        allreduce_times[elements * 4] = allreduce(elements, max(3, reps // (3 if quick else 1)))
    result["allreduce"] = allreduce_times
    result["library"] = MPI.Get_library_version().splitlines()[0].strip()
    if rank == 0:
        print(RESULT_TAG + json.dumps(result), flush=True)


def config_elements(name: str) -> int:
    """Parameters (= gradient elements) of a plain dense stack."""
    sizes = config_by_name(name).sizes
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


# ==== the driver ===============================================================================
@dataclass
class Row:
    config: str
    label: str
    processes: int
    threads: int
    transport: str  # "—" one process, "none" (apart, no MPI), "shm" (shared slots), "shm-mpi" or "tcp"
    batch: int | None = None  # None: the configuration's; else a per-node batch for the cost model
    results: list | None = None

    def __post_init__(self):
        self.results = []


def launch(command: list[str], env: dict, timeout: float) -> dict:
    """Runs one worker and returns its result line's JSON; raises RuntimeError with its output
    when it fails or prints none."""
    full_env = dict(os.environ, **env)
    try:
        done = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{' '.join(command)}: no result within {timeout:.0f} s") from error
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            providers = {p.strip() for p in (done.stdout + done.stderr).splitlines() if "libfabric provider:" in p}
            if providers:
                result["provider"] = "; ".join(sorted(providers))
            return result
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    raise RuntimeError(f"{' '.join(command)} (exit {done.returncode}) printed no result:\n  " + "\n  ".join(tail))


def launch_together(commands: list[list[str]], timeout: float) -> list[dict]:
    """Runs the commands at once (independent processes) and returns their result lines' JSON."""
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = []
    try:
        for command, process in zip(commands, processes):
            out, err = process.communicate(timeout=timeout)
            lines = [line for line in out.splitlines() if line.startswith(RESULT_TAG)]
            if not lines:
                raise RuntimeError(f"{' '.join(command)} (exit {process.returncode}) printed no result:\n  "
                                   + "\n  ".join((out + err).strip().splitlines()[-15:]))
            results.append(json.loads(lines[0][len(RESULT_TAG):]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def transport_env(transport: str, tcp: str) -> dict:
    return dict(TCP_PRESETS[tcp]) if transport == "tcp" else {}


def mpi_command(mpiexec: str, ranks: int, worker_args: list[str]) -> list[str]:
    return [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", SCRIPT, *worker_args]


def run_row(row: Row, args, steps: int) -> dict:
    worker = ["--worker", "train", "--config", row.config, "--threads", str(row.threads), "--steps", str(steps),
              "--alone-reps", str(5 if row.config == "wide" else 30)]
    if row.batch is not None:
        worker += ["--batch", str(row.batch)]
    if row.processes == 1:
        return launch([sys.executable, SCRIPT, *worker], {}, args.timeout)
    if row.transport == "none":  # independent processes, each its share of the batch: compute only
        share = config_by_name(row.config).batch // row.processes
        results = launch_together([[sys.executable, SCRIPT, *worker, "--batch", str(share)]] * row.processes,
                                  args.timeout)
        return {"ranks": [r["ranks"][0] for r in results]}
    if row.transport != "shm":
        worker.append("--no-shared-memory")
    return launch(mpi_command(args.mpiexec, row.processes, [*worker, "--mpi"]),
                  transport_env(row.transport, args.tcp), args.timeout)


def fmt_rate(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e4 else f"{value:.0f}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else (f"{ms:.2f}" if ms < 100 else f"{ms:.0f}")


def ring_allreduce(nodes: int, nbytes: float, latency: float, bandwidth: float) -> float:
    """The ring all-reduce's time: 2(N − 1) steps, each a latency and a 1/N slice of the bytes."""
    return 2 * (nodes - 1) * latency + 2 * (nodes - 1) / nodes * nbytes / bandwidth


def fit_alpha_beta(times: dict) -> tuple[float, float]:
    """Least squares T = α + S / β over the sizes of 1 MiB and up: (α, β in bytes/s)."""
    points = [(float(s), t) for s, t in times.items() if float(s) >= 1 << 20]
    n = len(points)
    mean_s = sum(s for s, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    slope = sum((s - mean_s) * (t - mean_t) for s, t in points) / sum((s - mean_s) ** 2 for s, _ in points)
    return mean_t - slope * mean_s, 1.0 / slope


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one round fewer: about 2 minutes")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds; medians are shown (default 3, 2 with --quick)")
    parser.add_argument("--only", default=",".join(CONFIG_NAMES), help="comma-separated: mnist-mlp, wide")
    parser.add_argument("--tcp", choices=sorted(TCP_PRESETS), default="ofi",
                        help="how MPI is forced onto TCP loopback: ofi (default; libfabric's tcp provider on lo) "
                        "or ucx (UCX's tcp transport)")
    parser.add_argument("--mpiexec", default=None, help="mpiexec to use (default: the one beside this python, "
                        "else the one on PATH)")
    parser.add_argument("--pause", type=float, default=0.2, help="sleep between measurements (default 0.2 s)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one measurement may take (default 300)")
    parser.add_argument("--no-model", action="store_true", help="leave out the cost model's compute rows")
    # worker options (the driver passes them)
    parser.add_argument("--worker", choices=("train", "network"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--alone-reps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-shared-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "train":
        train_worker(args)
        return 0
    if args.worker == "network":
        network_worker(args)
        return 0

    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if repeats < 1 or not only or not set(only) <= set(CONFIG_NAMES):
        parser.error(f"--repeats must be positive, --only from {CONFIG_NAMES}")
    if args.mpiexec is None:
        beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        args.mpiexec = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        parser.error('needs mpi4py: pip install "fastmlp[mpi]"')
    if args.mpiexec is None:
        parser.error("no mpiexec found: pip install mpich, or give --mpiexec")
    import fastmlp as fm

    wall_start = time.perf_counter()
    print("Data-parallel training over MPI: samples/s, the all-reduce's share, and the network's cost")
    print(f"machine:  {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"versions: fastmlp {fm.__version__}, Python {platform.python_version()}, mpi4py {mpi4py.__version__}, "
          f"mpiexec {args.mpiexec}")
    print(f"TCP:      {' '.join(f'{k}={v}' for k, v in TCP_PRESETS[args.tcp].items())} (--tcp {args.tcp})")
    print(f"method:   each measurement a fresh process (pair), warm-up fit then one timed fit; "
          f"median of {repeats} rounds, round-robin, {args.pause:g} s pause")
    print()

    total_load = OtherLoad()
    # ---- the network: latency and bandwidth per transport ----
    network = {}
    for transport in ("shm", "tcp"):
        worker = ["--worker", "network"] + (["--quick"] if args.quick else [])
        network[transport] = launch(mpi_command(args.mpiexec, 2, worker), transport_env(transport, args.tcp),
                                    args.timeout)
        time.sleep(args.pause)
    print(f"MPI: {network['shm']['library']}")
    header = ("path (2 ranks)", "latency µs (8 B)", "ping-pong GB/s (16 MiB)", "all-reduce α µs", "all-reduce β GB/s",
              *[f"all-reduce {name} ms" for name in CONFIG_NAMES])
    table = []
    for transport, result in network.items():
        alpha, beta = fit_alpha_beta(result["allreduce"])
        result["alpha"], result["beta"] = alpha, beta
        cells = [fmt_ms(result["allreduce"][str(config_elements(n) * 4)]) for n in CONFIG_NAMES]
        table.append((transport if transport == "shm" else f"tcp ({args.tcp})", f"{result['latency'] * 1e6:.2f}",
                      f"{result['pingpong_bandwidth'] / 1e9:.2f}", f"{result['allreduce']['4'] * 1e6:.1f}",
                      f"{beta / 1e9:.2f}", *cells))
    print_table(header, table)
    sizes = ", ".join(f"{int(s) / 4:.0f}" for s in network["shm"]["allreduce"])
    print(f"all-reduce sizes (float32 elements): {sizes}; α: the 1-element all-reduce; β: the least-squares "
          f"slope over 1 MiB and up")
    if "provider" in network["tcp"]:
        print(f"TCP path: MPICH reports {network['tcp']['provider']}")
    if network["tcp"]["latency"] <= 1.5 * network["shm"]["latency"]:
        print("WARNING: the TCP path's latency is not above shared memory's: the TCP settings may not have "
              "taken effect")
    print()

    # ---- training rows ----
    rows: list[Row] = []
    for name in only:
        rows += [Row(name, "1 process × 1 thread", 1, 1, "—"), Row(name, "1 process × 2 threads", 1, 2, "—"),
                 Row(name, "2 processes × 1 thread, no MPI", 2, 1, "none"),
                 Row(name, "2 ranks × 1 thread, shm", 2, 1, "shm"),
                 Row(name, "2 ranks × 1 thread, shm through MPI", 2, 1, "shm-mpi"),
                 Row(name, "2 ranks × 1 thread, TCP", 2, 1, "tcp")]
    model_rows: list[Row] = []
    if not args.no_model:
        for name in only:
            batch = config_by_name(name).batch
            for nodes in NODES:
                model_rows.append(Row(name, f"1 process × 2 threads, batch {max(1, batch // nodes)}", 1, 2, "—",
                                      batch=max(1, batch // nodes)))
    loads = {}
    for name in only:
        load = OtherLoad()
        steps = STEPS[name][1 if args.quick else 0]
        these = [r for r in rows + model_rows if r.config == name]
        batch = config_by_name(name).batch
        for round_index in range(repeats):
            for row in these:
                if row.batch is not None and round_index > 0 and args.quick:
                    continue
                row_steps = steps if row.batch is None else max(steps, steps * batch // row.batch // 4)
                row.results.append(run_row(row, args, row_steps))
                time.sleep(args.pause)
        loads[name] = load.share()

    def median(row: Row, key: str, rank: int | None = None) -> float:
        values = []
        for result in row.results:
            ranks = result["ranks"]
            picked = ranks if rank is None else [ranks[rank]]
            values.append(statistics.mean(r[key] for r in picked))
        return statistics.median(values)

    header = ("configuration", "row", "ms / step", "samples/s", "÷ 1 × 2 threads", "all-reduce share (rank 0 / 1)",
              "all-reduce ms / step (alone)", "setup ms", "last loss")
    table, verdicts = [], []
    for name in only:
        these = [r for r in rows if r.config == name]
        batch = config_by_name(name).batch
        base = batch / median(these[1], "step")
        for row in these:
            rate = batch / median(row, "step")
            if row.processes > 1 and row.transport != "none":
                share = " / ".join(f"{100 * median(row, 'allreduce_share', rank):.1f} %" for rank in (0, 1))
                reduce = f"{fmt_ms(median(row, 'allreduce_per_step'))} ({fmt_ms(median(row, 'allreduce_alone'))})"
                setup = fmt_ms(median(row, "setup"))
                verdicts.append((name, row.label, rate / base))
            else:
                share, reduce, setup = "—", "—", "—"
            table.append((name, row.label, fmt_ms(median(row, "step")), fmt_rate(rate), f"{rate / base:.2f}×",
                          share, reduce, setup, f"{median(row, 'loss'):.6g}"))
    print_table(header, table)
    print("no MPI: two independent processes at once, each half the batch a step and no all-reduce (the step time "
          "is their mean; samples/s counts the whole batch): the compute that 2 ranks could reach on this machine")
    print("share: time inside allreduce_sum (gradient + the step's 2 figures) ÷ step time, waiting for the other "
          "rank included; alone: the gradient's all-reduce after a barrier; setup: fit's once-per-call agreement "
          "and broadcast (left out of ms / step)")
    print()

    if model_rows:
        print("Ring all-reduce model: T(N) = 2(N − 1)·α + 2(N − 1)/N · S/β; α the TCP latency measured above "
              f"({network['tcp']['latency'] * 1e6:.1f} µs), β the link rate; one node = 1 process × 2 threads as here")
        header = ("configuration", "gradient MB", "nodes", "link Gb/s", "all-reduce ms",
                  "strong: node batch", "compute ms", "samples/s", "÷ 1 node", "all-reduce share",
                  "weak: samples/s", "÷ 1 node ")
        table = []
        alpha = network["tcp"]["latency"]
        for name in only:
            batch = config_by_name(name).batch
            nbytes = config_elements(name) * 4
            one_node_step = median([r for r in rows if r.config == name][1], "step")
            for nodes in NODES:
                row = next(r for r in model_rows if r.config == name and r.batch == max(1, batch // nodes))
                compute = median(row, "step")
                for link in LINKS_GBIT:
                    reduce = ring_allreduce(nodes, nbytes, alpha, link * 1e9 / 8)
                    strong = batch / (compute + reduce)
                    weak = nodes * batch / (one_node_step + reduce)
                    table.append((name, f"{nbytes / 1e6:.1f}", str(nodes), str(link), fmt_ms(reduce), str(row.batch),
                                  fmt_ms(compute), fmt_rate(strong), f"{strong * one_node_step / batch:.2f}×",
                                  f"{100 * reduce / (compute + reduce):.0f} %", fmt_rate(weak),
                                  f"{weak * one_node_step / batch:.1f}×"))
        print_table(header, table)
        print(f"the measured TCP loopback path carried {network['tcp']['beta'] / 1e9:.2f} GB/s "
              f"({8 * network['tcp']['beta'] / 1e9:.1f} Gb/s) in a 2-rank all-reduce: above that the model's link "
              f"rate is not reached by this MPI over TCP")
        print()

    for name in only:
        these = {r.transport: r for r in rows if r.config == name and r.processes == 2}
        step_none, step_shm = median(these["none"], "step"), median(these["shm"], "step")
        print(f"{name}, 2 ranks over shm: {fmt_ms(step_shm)} ms a step = {fmt_ms(step_none)} computing apart "
              f"(the no-MPI row) + {fmt_ms(step_shm - step_none)} more, of which the all-reduce alone is "
              f"{fmt_ms(median(these['shm'], 'allreduce_alone'))}")
    for name, label, ratio in verdicts:
        if label.endswith("shm"):
            print(f"{name}: {label} ÷ 1 process × 2 threads = {ratio:.2f} "
                  f"(target ≥ {TARGET_RATIO:g}: {'met' if ratio >= TARGET_RATIO else 'MISSED'})")
        else:
            print(f"{name}: {label} ÷ 1 process × 2 threads = {ratio:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}; wall time {time.perf_counter() - wall_start:.0f} s; "
          f"other processes used {total_load.describe()} during the run"
          + "".join(f"; {k} {100 * v:.0f} %" for k, v in loads.items() if v is not None)
          + " (above ~5 %, the figures are suspect)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
