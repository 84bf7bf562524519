"""The coordinator of ``fastmlp bench``: starts one worker process per implementation and thread
count, runs the configurations' blocks round-robin over them, re-runs a block that another
process slowed down, and gathers the figures into a Report."""

from __future__ import annotations

import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from . import _configs, _machine
from ._configs import GemmShape, PredictConfig, TrainConfig
from ._peers import Detection, Peer, detect_all
from ._report import Report, Result

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


MAX_BLOCK_SECONDS = 60.0  # a block must end well within a worker's timeout


def _unique(values) -> list:
    return list(dict.fromkeys(values))


@dataclass
class Options:
    """What ``fastmlp bench`` runs and how; checked and normalised on creation (ValueError
    naming the field): configuration aliases resolved, peers' spellings read, duplicates dropped."""

    configs: list[str] = field(default_factory=lambda: list(_configs.CONFIG_NAMES))
    peers: list[str] | None = None  # None: every peer found; fastmlp always runs
    threads: list[int] = field(default_factory=lambda: [min(_machine.cores(), 1024)])
    quick: bool = False  # shorter: repeats, block_seconds and noise_seconds default to 3, 0.1 and 0.25 s
    repeats: int | None = None  # default 5 (3 with quick)
    block_seconds: float | None = None  # default 0.5 s (0.1 s with quick)
    pause: float = 0.1
    gemm_set: str = "standard"
    dtypes: tuple[str, ...] = ("float32",)
    max_taken: float = 0.10  # a block that lost more than this share of its CPU is run again
    max_reruns: int = 2  # per block
    timeout: float = 600.0  # per request to a worker
    peak: bool = True
    noise_seconds: float | None = None  # default 0.5 s (0.25 s with quick)
    goals: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        if self.repeats is None:
            self.repeats = 3 if self.quick else 5
        if self.block_seconds is None:
            self.block_seconds = 0.1 if self.quick else 0.5
        if self.noise_seconds is None:
            self.noise_seconds = 0.25 if self.quick else 0.5

        def number(name: str, low: float, high: float, integer: bool = False) -> None:
            value = getattr(self, name)
            kind = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
                raise ValueError(f"Options.{name}: expected {'an integer' if integer else 'a number'} in "
                                 f"[{low:g}, {high:g}], got {value!r}")

        names = [_configs.ALIASES.get(name, name) for name in self.configs]
        unknown = [name for name in names if name not in _configs.CONFIG_NAMES]
        if unknown or not names:
            raise ValueError(f"Options.configs: unknown configuration {unknown[0] if unknown else 'list (empty)'!r}; "
                             f"expected some of {', '.join(_configs.CONFIG_NAMES)}")
        self.configs = _unique(names)
        if self.peers is not None:
            from ._peers import parse_peers

            self.peers = parse_peers(",".join(self.peers)) if self.peers else []
        if not self.threads or any(isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 1024
                                   for t in self.threads):
            raise ValueError(f"Options.threads: expected thread counts in [1, 1024], got {self.threads!r}")
        self.threads = _unique(self.threads)
        self.dtypes = tuple(_unique(self.dtypes))
        if not self.dtypes or any(d not in ("float32", "float64") for d in self.dtypes):
            raise ValueError(f"Options.dtypes: expected float32 and/or float64, got {self.dtypes!r}")
        if self.gemm_set not in ("standard", "default", "issue10"):
            raise ValueError(f"Options.gemm_set: expected standard, default or issue10, got {self.gemm_set!r}")
        number("repeats", 1, 1000, integer=True)
        number("max_reruns", 0, 10, integer=True)
        number("block_seconds", 1e-6, MAX_BLOCK_SECONDS)
        number("pause", 0, 60)
        number("max_taken", 0, 1)
        number("timeout", 1, 86400)
        number("noise_seconds", 1e-3, 10)


class WorkerError(RuntimeError):
    """A worker that failed to start, died, or did not answer in time."""


# The worker's first lines: the answers get a descriptor of their own and stdout becomes stderr
# before anything is imported, so that nothing a library prints, even while it imports, can
# reach the answers.
_WORKER_BOOT = ("import os, sys; answers = os.fdopen(os.dup(1), 'w', encoding='utf-8'); os.dup2(2, 1); "
                "from fastmlp.bench._worker import serve; sys.exit(serve(sys.argv[1:], answers))")


def worker_command(peer: Peer, threads: int) -> list[str]:
    return [sys.executable, "-c", _WORKER_BOOT, peer.key, str(threads)]


def worker_environment(peer: Peer, threads: int) -> dict[str, str]:
    """The worker's environment: ours, with every thread pool sized before it starts, and for
    NumPy's processes without the OpenBLAS workarounds (they slow a current OpenBLAS down)."""
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    if peer.uses_numpy_blas:
        for name in _machine.BLAS_VARIABLES:
            env.pop(name, None)
    return env


class Worker:
    """One implementation at one thread count, in a process of its own (fastmlp.bench._worker:
    ``command`` is for the tests). Every failure to start, to answer in time or to answer at all
    raises WorkerError, and a worker that failed is killed and its pipes closed."""

    def __init__(self, peer: Peer, threads: int, timeout: float, command: list[str] | None = None):
        self.peer, self.threads, self.timeout = peer, threads, timeout
        self.buffer = b""
        self.stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(command or worker_command(peer, threads), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=self.stderr,
                                            env=worker_environment(peer, threads), bufsize=0)
        except OSError as error:
            self.stderr.close()
            raise WorkerError(f"cannot start {sys.executable}: {error}") from None
        try:
            hello = self._read(self.timeout)
            if not hello.get("ok"):
                raise WorkerError(hello.get("error", "failed to start"))
        except BaseException:
            self.close()
            raise
        self.info = hello.get("info", {})

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _read(self, timeout: float) -> dict:
        """The next answer line, within ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise WorkerError(f"no answer within {timeout:g} s (killed)")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self.process.wait()
                raise WorkerError(f"the worker stopped (exit code {code}){self._stderr_tail()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            answer = json.loads(line)
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except ValueError:
            self._kill()
            raise WorkerError(f"bad answer {line[:80]!r} (killed){self._stderr_tail()}") from None
        return answer

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
        return f": {lines[-1].strip()}" if lines else ""

    def ask(self, request: dict) -> dict:
        """Sends a request, waits for its answer; a failed request raises WorkerError with its error."""
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError as error:
            self._kill()
            raise WorkerError(f"the worker is gone ({error}){self._stderr_tail()}") from None
        answer = self._read(self.timeout)
        if not answer.get("ok"):
            raise WorkerError(answer.get("error", "failed"))
        return answer

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Asks the worker to exit (kills it after 10 s) and closes its pipes."""
        try:
            if self.alive:
                try:
                    self.process.stdin.write(b'{"op": "exit"}\n')
                    self.process.stdin.flush()
                except OSError:
                    pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._kill()
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.stderr.close()


@dataclass(frozen=True)
class Task:
    """One configuration at one thread count: its id (the table's row name) and what it is."""

    id: str
    group: str
    spec: TrainConfig | PredictConfig | GemmShape

    @property
    def description(self) -> str:
        return self.spec.description

    def request(self, quick: bool, block_seconds: float) -> dict:
        request = {"op": "prepare", "id": self.id, "group": self.group, "name": self.spec.name, "quick": quick,
                   "block_seconds": block_seconds}
        if self.group == "gemm":
            spec = self.spec
            request["shape"] = {k: getattr(spec, k) for k in ("name", "layout", "m", "n", "k", "trans_a", "trans_b",
                                                              "dtype", "threads", "target_peak")}
        return request


def tasks(options: Options) -> list[Task]:
    """The configurations asked for, in the standard order; GEMM expands into its shapes."""
    out = []
    names = [_configs.ALIASES.get(n, n) for n in options.configs]
    for config in _configs.TRAIN_CONFIGS:
        if config.name in names:
            out.append(Task(config.name, "train", config))
    if "predict" in names:
        out.append(Task("predict", "predict", _configs.PREDICT))
    if "gemm" in names:
        for shape in _configs.gemm_shapes(options.gemm_set, options.quick, options.dtypes):
            out.append(Task(f"gemm {shape.name} {shape.dtype}", "gemm", shape))
    return out


def runs(peer: Peer, task: Task) -> bool:
    """Whether the peer can run the task (scikit-learn has no residual blocks or norms)."""
    if task.group not in peer.groups:
        return False
    return not (peer.key == "sklearn" and isinstance(task.spec, TrainConfig) and task.spec.network_options)


class Progress:
    """A progress bar on stderr, for a person at a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.start = max(1, total), 0, enabled, time.perf_counter()

    def step(self, what: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        filled = int(30 * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {self.done}/{self.total} {elapsed:4.0f} s "
                         f"{what[:40]:<40}")
        sys.stderr.flush()

    def skip(self, steps: int) -> None:
        """Steps that will not run (a peer that failed to start its job)."""
        self.done += steps

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def run(options: Options, progress: bool = False, detections: list[Detection] | None = None,
        sleep: Callable[[float], None] = time.sleep) -> Report:
    """Runs the benchmark and returns its Report (printing nothing but the progress bar)."""
    wall_start = time.perf_counter()
    if detections is None:
        detections = detect_all(options.peers)
    available = [d.peer for d in detections if d.available]
    todo = tasks(options)
    report = Report(machine=_machine_dict(), versions=_versions(detections),
                    settings=_settings(options, todo), peers=[_peer_dict(d) for d in detections])
    if any(d.peer.uses_numpy_blas and d.available for d in detections):
        set_vars = [f"{name}={os.environ[name]}" for name in _machine.BLAS_VARIABLES if name in os.environ]
        if set_vars:
            report.notes.append(f"{' '.join(set_vars)} unset for the processes of NumPy's BLAS (NumPy reference, "
                                "NumPy BLAS, scikit-learn): they slow a current OpenBLAS down")
    report.noise["start"] = _machine.noise(options.noise_seconds)
    if options.peak:
        _measure_peaks(report, options, todo)
    else:
        report.machine["peak_probe"] = "--no-peak"

    plan = [(threads, task, [p for p in available if runs(p, task)])
            for threads in options.threads for task in todo
            if not (isinstance(task.spec, GemmShape) and task.spec.threads not in (None, threads))]
    skipped = [t for t in todo if isinstance(t.spec, GemmShape) and t.spec.threads not in options.threads
               and t.spec.threads is not None]
    for task in skipped:
        report.notes.append(f"{task.id}: left out, its set runs it at {task.spec.threads} threads only")
    bar = Progress(sum(len(peers) * (options.repeats + 1) for _, _, peers in plan), progress)
    try:
        for threads in options.threads:
            workers: dict[str, Worker | str] = {}  # a peer's worker, or why it could not start
            try:
                for plan_threads, task, peers in plan:
                    if plan_threads == threads:
                        _run_task(report, options, task, threads, peers, workers, bar, sleep)
            finally:
                for worker in workers.values():
                    if isinstance(worker, Worker):
                        worker.close()
    finally:
        bar.close()
    report.noise["end"] = _machine.noise(options.noise_seconds)
    _add_peak_shares(report)
    if options.goals:
        report.goals = goals(report, todo)
    report.wall_seconds = time.perf_counter() - wall_start
    return report


def _worker(report: Report, workers: dict, peer: Peer, threads: int, options: Options) -> Worker | str:
    """The peer's worker at this thread count: started on first use, and started again when the
    last one died (a crash or a timeout costs that configuration's cells, not the next ones')."""
    worker = workers.get(peer.key)
    if isinstance(worker, Worker) and not worker.alive:
        worker.close()
        worker = None
    if worker is None:
        try:
            worker = Worker(peer, threads, options.timeout)
        except WorkerError as error:
            worker = f"could not start: {error}"
        else:
            entry = next((p for p in report.peers if p["key"] == peer.key), None)
            if entry is not None and not entry.get("runs_on"):
                entry["runs_on"] = _runs_on(peer.key, worker.info)
        workers[peer.key] = worker
    return worker


def _runs_on(key: str, info: dict) -> str:
    """What a worker said it computes with, in one line for the report's header."""
    if key == "torch":
        capability = f", CPU capability {info['cpu_capability']}" if info.get("cpu_capability") else ""
        return f"{info.get('version', '?')}, torch.matmul on {info.get('blas', '?')}{capability}"
    if key == "fastmlp":
        return f"GEMM kernel {info.get('gemm_kernel', '?')}"
    return f"BLAS {info.get('blas', '?')}"


def _run_task(report: Report, options: Options, task: Task, threads: int, peers: list[Peer], workers: dict,
              bar: Progress, sleep) -> None:
    results: list[tuple[Worker, Result]] = []
    for implementation in peers:
        result = Result(task.id, task.group, task.description, threads, implementation.key)
        report.results.append(result)
        worker = _worker(report, workers, implementation, threads, options)
        bar.step(f"{task.id}: {implementation.label} (warm-up)")
        if isinstance(worker, str):
            result.error = worker
            bar.skip(options.repeats)
            continue
        if not result.info:
            result.info.update(worker.info)
        try:
            answer = worker.ask(task.request(options.quick, options.block_seconds))
        except WorkerError as error:
            result.error = str(error)
            bar.skip(options.repeats)
            continue
        result.unit = answer["unit"]
        result.info.update(answer.get("info", {}))
        results.append((worker, result))
        sleep(options.pause)
    for round_index in range(options.repeats):
        shift = round_index % max(1, len(results))  # who goes first turns, so none always follows another
        for worker, result in results[shift:] + results[:shift]:
            bar.step(f"{task.id}: {report.label(result.peer)}")
            if result.error or "interrupted" in result.info:
                continue
            try:
                _time_block(worker, task, result, options, sleep)
            except WorkerError as error:
                _interrupted(report, result, str(error))
    for worker, result in results:
        if worker.alive and not result.error:
            try:
                worker.ask({"op": "drop", "id": task.id})
            except WorkerError as error:  # the figures are whole: only the note says so
                report.notes.append(f"{report.label(result.peer)}, {task.id}: freeing the job failed: {error}")


def _interrupted(report: Report, result: Result, error: str) -> None:
    """A block that failed: with no figure yet the cell says "failed"; after some blocks the
    figure is their median, and a note says what stopped the rest."""
    if not result.rates:
        result.error = error
        return
    result.info["interrupted"] = error
    report.notes.append(f"{report.label(result.peer)}, {result.config} at {result.threads} "
                        f"thread{'s' if result.threads > 1 else ''}: {error}; the figure is the median of the "
                        f"{len(result.rates)} blocks before")


def _time_block(worker: Worker, task: Task, result: Result, options: Options, sleep) -> None:
    """One block, run again (at most max_reruns times) while others took more than max_taken of
    the CPU it needed; the least disturbed attempt is kept, and counted in info["disturbed"]
    when even that one was over max_taken."""
    best = None
    for attempt in range(options.max_reruns + 1):
        answer = worker.ask({"op": "block", "id": task.id})
        sleep(options.pause)
        taken = answer.get("taken")
        if best is None or (taken or 0.0) < (best.get("taken") or 0.0):
            best = answer
        if taken is None or taken <= options.max_taken or attempt == options.max_reruns:
            break
        result.reruns += 1
    if (best.get("taken") or 0.0) > options.max_taken:
        result.info["disturbed"] = result.info.get("disturbed", 0) + 1
    result.rates.append(best["work"] / best["seconds"])
    result.taken.append(best.get("taken"))
    if best.get("loss") is not None:
        result.loss = best["loss"]


# ---- the machine ------------------------------------------------------------------------------------
def _machine_dict() -> dict:
    from fastmlp import _core

    return {"cpu": _machine.cpu_model(), "cores": _machine.cores(), "logical_cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "gemm_config": _machine.gemm_config_description(_core), "peak_gflops": {}, "peak_probe": None}


def _measure_peaks(report: Report, options: Options, todo: list[Task]) -> None:
    dtypes = sorted({t.spec.dtype for t in todo if isinstance(t.spec, GemmShape)} | {"float32"})
    thread_counts = sorted(options.threads)  # a shape set's own thread count outside them is skipped
    seconds = 0.1 if options.quick else 0.3
    for dtype in dtypes:
        for threads in thread_counts:
            probe = _machine.fma_peak(dtype, threads, seconds, 3 if options.quick else 5)
            if probe is None:
                report.machine["peak_probe"] = "this build has no peak probe (fastmlp._core.fma_peak)"
                return
            report.machine["peak_gflops"].setdefault(dtype, {})[str(threads)] = probe["gflops"]
            if dtype == "float32":  # float64 runs the same chains on half the lanes
                report.machine["peak_probe"] = (f"fastmlp's built-in probe, {probe['isa']}: {probe['chains']} chains "
                                                f"of {probe['lanes']}-lane FMAs, best of {len(probe['trials'])}")


def _add_peak_shares(report: Report) -> None:
    peaks = report.machine.get("peak_gflops") or {}
    for result in report.results:
        if result.group != "gemm" or not result.rates:
            continue
        dtype = result.config.rsplit(" ", 1)[-1]
        peak = peaks.get(dtype, {}).get(str(result.threads))
        if peak:
            result.percent_of_peak = 100 * result.median / peak


def _versions(detections: list[Detection]) -> dict:
    import numpy as np

    import fastmlp as fm

    versions = {"fastmlp": fm.__version__, "Python": platform.python_version(), "NumPy": np.__version__}
    for d in detections:
        if d.peer.key not in ("fastmlp", "numpy", "reference") and d.available:
            versions[d.peer.label] = d.version
    return versions


def _peer_dict(d: Detection) -> dict:
    return {"key": d.peer.key, "label": d.peer.label, "available": d.available, "version": d.version,
            "reason": d.reason or None, "hint": d.peer.hint}


def _settings(options: Options, todo: list[Task]) -> dict:
    return {"command": options.command, "quick": options.quick, "threads": options.threads,
            "repeats": options.repeats, "block_seconds": options.block_seconds, "pause": options.pause,
            "max_taken": options.max_taken, "max_reruns": options.max_reruns,
            "configs": [t.id for t in todo], "gemm_set": options.gemm_set, "dtypes": list(options.dtypes)}


def goals(report: Report, todo: list[Task]) -> list[dict]:
    """The project's targets for the configurations measured: fastmlp ÷ a peer at least so much,
    predict within so many µs, a GEMM shape at least such a share of the peak on 1 thread."""
    specs = {t.id: t.spec for t in todo}
    by_row = {(c["config"], c["threads"], c["peer"]): c["ratio"] for c in report.comparisons()}
    out = []

    def add(result: Result, peer_key: str | None, target: float, value: float, met: bool, text: str) -> None:
        out.append({"config": result.config, "threads": result.threads, "peer": peer_key, "target": target,
                    "value": value, "met": met, "text": f"{result.config} at {result.threads}t: {text} "
                                                        f"{'met' if met else 'MISSED'}"})

    for result in report.results:
        spec = specs.get(result.config)
        if result.peer != "fastmlp" or not result.rates or spec is None:
            continue
        for key, target in spec.targets:
            ratio = by_row.get((result.config, result.threads, key))
            if ratio is not None:
                add(result, key, target, ratio, ratio >= target,
                    f"fastmlp ÷ {report.label(key)} {ratio:.2f}× (≥ {target:g}×)")
        if isinstance(spec, PredictConfig):
            latency = 1e6 / result.median
            add(result, None, spec.target_us, latency, latency <= spec.target_us,
                f"{latency:.1f} µs a call (≤ {spec.target_us:g} µs)")
        if isinstance(spec, GemmShape) and spec.target_peak and result.threads == 1 \
                and result.percent_of_peak is not None:
            add(result, None, spec.target_peak, result.percent_of_peak / 100,
                result.percent_of_peak >= 100 * spec.target_peak,
                f"{result.percent_of_peak:.0f} % of the peak (≥ {100 * spec.target_peak:.0f} %)")
    return out
