"""Training speed on a GPU: fastmlp's CUDA backend beside PyTorch CUDA, eager and torch.compile.

    python benchmarks/bench_gpu.py [--quick] [--repeats 5] [--only NAME,...] [--json PATH] [--out DIR]

Configurations (fastmlp bench's, fastmlp.bench; float32, MSE, plain SGD, fastmlp's initial weights):
  seed-demo   [1, 64, 32, 1] relu, the article's 100 samples, full batch, lr 0.01   target ≥ 10×
  tiny-batch  [64, 128, 128, 1] relu, batch 1 (steps/s), lr 0.001                  target ≥ 10×
  mnist-mlp   [784, 512, 256, 10] relu, batch 128, lr 0.01                          target ≥ 2×
  wide        [1024, 4096, 4096, 1024] relu, batch 256, lr 0.001                    target ≥ 1×
Each configuration trains on a fixed data set (fastmlp.bench.make_data; seed-demo's 100
samples, else STEPS_PER_EPOCH batches), and a block is a number of whole epochs over it.

Implementations (the targets are fastmlp's samples/s ÷ each PyTorch row's):
  fastmlp            fm.Network(sizes, "relu", dtype="float32", seed=0, device="cuda").fit(X, y,
                     epochs=E, batch_size=B, optimizer=fm.SGD(lr), shuffle=True), X and y NumPy;
                     the wall clock around fit (fit returns when the device is done). Each call
                     copies X and y to the device once, and that copy is part of the time.
  PyTorch eager      nn.Sequential(Linear, ReLU, ...) on the device (fastmlp.bench.torch_model),
                     nn.MSELoss, optim.SGD; X and y on the device; per epoch a randperm on the
                     device and gathered batches (full batch: no shuffle); loss.item() once a block
  PyTorch compiled   the same with torch.compile (default mode, dynamic=False: the shapes are
                     fixed) of model + loss; the optimizer step stays eager. Compiled first,
                     before anything is timed.
float32 is exact everywhere: torch.set_float32_matmul_precision("highest"), so
torch.backends.cuda.matmul.allow_tf32 stays False (fastmlp's default is float32 without TF32 too).

fastmlp runs in a worker process of its own (this script with --worker), driven over a pipe:
a crash or a hang of the CUDA backend costs only its rows (the row shows the error; the worker is
restarted for the next configuration), and PyTorch's CUDA context never shares a process with it.

Method: warm-up (torch.compile first), then a calibration per row (epochs doubled until a block
takes a quarter of --block-seconds, then scaled to --block-seconds), then blocks round-robin over
the rows, --repeats rounds, a --pause between blocks; the figure is the median block's samples/s
(steps/s at batch 1). --time-budget bounds the whole run: rounds are cut (at least one), and a
configuration that no longer fits is left out with a note. Every row that fails prints its error
and the run goes on. --device cpu runs the PyTorch rows on the CPU (a smoke test without a GPU).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import print_table  # noqa: E402
from fastmlp.bench import SEED, make_data, torch_model  # noqa: E402
from fastmlp.bench import TRAIN_CONFIGS as CONFIGS  # noqa: E402
from fastmlp.bench import TrainConfig as Config  # noqa: E402


def format_rate(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e4 else f"{value:.0f}"

import fastmlp as fm  # noqa: E402

# The targets (fastmlp ÷ PyTorch, eager and compiled alike) and each data set's size.
TARGETS = {"seed-demo": 10.0, "tiny-batch": 10.0, "mnist-mlp": 2.0, "wide": 1.0}
STEPS_PER_EPOCH = {"seed-demo": 1, "tiny-batch": 512, "mnist-mlp": 64, "wide": 8}
MAX_EPOCHS = {"seed-demo": 1_000_000, "tiny-batch": 20_000, "mnist-mlp": 10_000, "wide": 2_000}
GPU_CONFIGS = tuple(next(c for c in CONFIGS if c.name == name) for name in TARGETS)
IMPLEMENTATIONS = ("fastmlp", "PyTorch eager", "PyTorch compiled")


def log(message: str) -> None:
    """A progress line on stderr, flushed (the run is watched through a pipe)."""
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return " ".join(text.split())[:400]


def gpu_data(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The configuration's fixed float32 data set: one epoch of STEPS_PER_EPOCH batches."""
    return make_data(config, STEPS_PER_EPOCH[config.name])


def config_named(name: str) -> Config:
    return next(c for c in GPU_CONFIGS if c.name == name)


# ---- the fastmlp worker (a process of its own) -----------------------------------------------
def worker_main(device: str) -> int:
    """Answers one JSON line per request line: setup, run, quit. Nothing else goes to stdout."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # a stray print must not break the protocol

    def answer(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    hello = {"ok": True, "fastmlp": fm.__version__, "cuda_info": None}
    try:
        info = getattr(fm._core, "cuda_info", None)
        hello["cuda_info"] = info() if info is not None else "this build has no fastmlp._core.cuda_info"
    except Exception as error:  # noqa: BLE001  (reported, not fatal)
        hello["cuda_info"] = describe(error)
    answer(hello)

    net = config = X = y = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "quit":
                break
            if request["op"] == "setup":
                config = config_named(request["config"])
                X, y = gpu_data(config)
                options = {} if device == "cpu" else {"device": device}
                start = time.perf_counter()
                net = fm.Network(config.sizes, config.activation, dtype="float32", seed=SEED, **options)
                built = time.perf_counter() - start
                twin = fm.Network(config.sizes, config.activation, dtype="float32", seed=SEED)
                same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                           zip([*net.weights, *net.biases], [*twin.weights, *twin.biases]))
                path = None  # which device path a fit takes: "fused" (one kernel) or "layers"
                fit_path = getattr(getattr(net, "_core", None), "fit_path", None)
                if fit_path is not None and device != "cpu":
                    try:
                        path = fit_path(config.batch or len(X), "mse")
                    except Exception as error:  # noqa: BLE001  (a note, not a failure)
                        path = f"unknown ({describe(error)})"
                answer({"ok": True, "seconds": built, "device": str(getattr(net, "device", "cpu")),
                        "same_initial_weights": same, "fit_path": path})
            elif net is None:
                answer({"ok": False, "error": f"{request['op']!r} before a setup"})
            elif request["op"] == "run":
                epochs = int(request["epochs"])
                optimizer = fm.SGD(lr=config.lr)
                start = time.perf_counter()
                history = net.fit(X, y, epochs=epochs, batch_size=config.batch, optimizer=optimizer, shuffle=True)
                seconds = time.perf_counter() - start
                answer({"ok": True, "seconds": seconds, "loss": float(history.history["loss"][-1])})
            else:
                answer({"ok": False, "error": f"unknown request {request['op']!r}"})
        except Exception as error:  # noqa: BLE001  (the driver prints it in the row)
            for text in traceback.format_exc().splitlines():
                print(f"[fastmlp worker] {text}", file=sys.stderr, flush=True)
            answer({"ok": False, "error": describe(error)})
    return 0


class WorkerError(RuntimeError):
    pass


def exit_reason(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"signal {-code}"


class Worker:
    """The driver's end of the fastmlp worker: requests with a timeout; a dead or hung worker
    raises WorkerError (and is killed), the next request starts a fresh one."""

    def __init__(self, device: str):
        self.device = device
        self.process: subprocess.Popen | None = None
        self.hello: dict | None = None

    def start(self) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--fastmlp-device", self.device]
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            bufsize=1)
        except OSError as error:
            raise WorkerError(f"fastmlp worker did not start ({describe(error)})") from None
        self.hello = self._exchange(None, 120.0)

    def request(self, message: dict, timeout: float) -> dict:
        if self.process is not None and self.process.poll() is not None:
            code, self.process = self.process.returncode, None
            raise WorkerError(f"fastmlp worker had died ({exit_reason(code)}); a new one starts at the next request")
        if self.process is None:
            self.start()
        answer = self._exchange(message, timeout)
        if not answer.get("ok"):
            raise WorkerError(answer.get("error", "unknown error"))
        return answer

    def _exchange(self, message: dict | None, timeout: float) -> dict:
        """Sends the message (if any) and reads the answer. Anything unexpected on the way (an
        alarm, a broken line) kills the worker: a late answer must not be read as the next one's."""
        try:
            if message is not None:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
            return self._receive(timeout)
        except WorkerError:
            raise
        except OSError as error:
            self.kill()
            raise WorkerError(f"fastmlp worker gone ({describe(error)})") from None
        except ValueError as error:
            self.kill()
            raise WorkerError(f"fastmlp worker answered garbage ({describe(error)})") from None
        except BaseException:
            self.kill()
            raise

    def _receive(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], max(1.0, timeout))
        line = self.process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        if not ready:
            self.kill()
            raise WorkerError(f"fastmlp worker timed out after {timeout:.0f} s (killed)")
        code = self.process.wait(timeout=10)
        self.process = None
        raise WorkerError(f"fastmlp worker died: {exit_reason(code)} (its stderr is above)")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.process = None


# ---- rows -------------------------------------------------------------------------------------
@dataclass
class Row:
    config: str
    impl: str
    unit: str
    samples_per_epoch: int
    status: str = "ok"  # ok, error, skipped
    error: str = ""
    warmup_seconds: float | None = None  # the first call: torch.compile, CUDA graph capture, ...
    epochs: int = 0  # per block
    seconds: list[float] = field(default_factory=list)
    loss: float | None = None
    note: str = ""
    run: Callable[[int], tuple[float, float]] | None = field(default=None, repr=False)

    @property
    def rate(self) -> float | None:
        if self.status != "ok" or not self.seconds:
            return None
        return self.epochs * self.samples_per_epoch / statistics.median(self.seconds)

    def fail(self, error: BaseException | str) -> None:
        self.status = "error"
        self.error = error if isinstance(error, str) else describe(error)
        log(f"{self.config} / {self.impl}: {self.error}")

    def as_json(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "run"}
        data["rate"] = self.rate
        return data


def fastmlp_row(config: Config, worker: Worker, samples: int, timeout: Callable[[float], float]) -> Row:
    row = Row(config.name, "fastmlp", config.unit, samples)
    try:
        answer = worker.request({"op": "setup", "config": config.name}, timeout(120.0))
        row.note = f"device {answer['device']}" + (f", fit path {answer['fit_path']}" if answer.get("fit_path") else "")
        if not answer["same_initial_weights"]:
            row.note += "; initial weights differ from the CPU network's"
    except WorkerError as error:
        row.fail(error)
        return row

    def run(epochs: int) -> tuple[float, float]:
        answer = worker.request({"op": "run", "epochs": epochs}, timeout(60.0 + 20 * row_block_guess(row)))
        return answer["seconds"], answer["loss"]

    row.run = run
    return row


def row_block_guess(row: Row) -> float:
    return max(row.seconds[-3:], default=1.0)


def torch_row(torch, config: Config, compiled: bool, device: str, X: np.ndarray, y: np.ndarray) -> Row:
    impl = "PyTorch compiled" if compiled else "PyTorch eager"
    row = Row(config.name, impl, config.unit, len(X))
    try:
        weights_from = fm.Network(config.sizes, config.activation, dtype="float32", seed=SEED)
        model = torch_model(torch, weights_from)
        with torch.no_grad():  # fastmlp's initial weights (W is (out, in) in both)
            linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
            for layer, W, b in zip(linears, weights_from.weights, weights_from.biases):
                layer.weight.copy_(torch.from_numpy(np.array(W)))
                layer.bias.copy_(torch.from_numpy(np.array(b)))
        model.to(device)
        criterion = torch.nn.MSELoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
        X_t, y_t = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)

        def forward_loss(xb, yb):
            return criterion(model(xb), yb)

        # dynamic=False: each configuration's shapes are fixed, and compiled as such (with one
        # function compiled per configuration, automatic dynamic shapes would otherwise take the
        # second configuration's new sizes for varying ones and compile it shape-generic).
        loss_of = torch.compile(forward_loss, dynamic=False) if compiled else forward_loss
    except Exception as error:  # noqa: BLE001
        row.fail(error)
        return row
    n, batch = len(X), config.batch
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(xb, yb):
        optimizer.zero_grad()
        loss = loss_of(xb, yb)
        loss.backward()
        optimizer.step()
        return loss

    def run(epochs: int) -> tuple[float, float]:
        synchronize()
        start = time.perf_counter()
        for _ in range(epochs):
            if batch is None:
                loss = step(X_t, y_t)
                continue
            order = torch.randperm(n, device=device)
            for i in range(n // batch):
                index = order[i * batch:(i + 1) * batch]
                loss = step(X_t[index], y_t[index])
        value = loss.item()  # waits for the device
        return time.perf_counter() - start, value

    row.run = run
    return row


class Alarm:
    """Raises TimeoutError in the main thread after `seconds` (between Python bytecodes: a
    torch.compile that runs too long is stopped; a stuck device call is not)."""

    def __init__(self, seconds: float):
        self.seconds = max(1.0, seconds)

    def __enter__(self):
        def expire(signum, frame):
            raise TimeoutError(f"took longer than {self.seconds:.0f} s")

        self.previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        return False


def calibrate(row: Row, block_seconds: float, max_epochs: int, limit: float) -> None:
    """Epochs per block: doubled (or more) until a block takes a quarter of block_seconds, then
    scaled up to block_seconds, so a fixed cost per call (fit's setup, the data copy) is paid once
    a block, as in use."""
    epochs = 1
    while True:
        with Alarm(limit):
            seconds, row.loss = row.run(epochs)
        if seconds >= block_seconds / 4 or epochs >= max_epochs:
            for _ in range(2):  # the fastest of three: one slow probe must not cut the blocks short
                if seconds >= block_seconds:
                    break
                with Alarm(limit):
                    seconds = min(seconds, row.run(epochs)[0])
            break
        epochs = min(max_epochs, epochs * int(min(64, max(2, block_seconds / 4 / max(seconds, 1e-6)))))
    row.epochs = int(min(max_epochs, max(1, round(epochs * block_seconds / max(seconds, 1e-9)))))


# ---- the driver ---------------------------------------------------------------------------------
def driver_version() -> str:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                 "--format=csv,noheader"], check=False, capture_output=True, text=True, timeout=20)
        if result.returncode != 0:
            return f"nvidia-smi: exit status {result.returncode}"
        return result.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError) as error:
        return f"nvidia-smi: {describe(error)}"


def load_torch(device: str, notes: list[str]):
    try:
        import torch
    except ImportError as error:
        notes.append(f"PyTorch rows skipped: import torch failed ({error})")
        return None
    torch.set_float32_matmul_precision("highest")  # float32 exact: no TF32 in matmuls
    if hasattr(torch._dynamo.config, "recompile_limit"):  # one compiled function per configuration
        torch._dynamo.config.recompile_limit = 64
    else:
        torch._dynamo.config.cache_size_limit = 64
    if device.startswith("cuda") and not torch.cuda.is_available():
        notes.append("PyTorch rows fail: torch.cuda.is_available() is False")
    return torch


class Report:
    """Everything measured so far, written to --json (atomically) after each configuration."""

    def __init__(self, path: str | None, meta: dict):
        self.path, self.meta, self.rows, self.notes = path, meta, [], []
        self.compile_seconds: list[float] = []  # each torch.compile warm-up so far

    def save(self) -> None:
        if not self.path:
            return
        data = {"meta": self.meta, "notes": self.notes, "rows": [r.as_json() for r in self.rows],
                "summary": summary_records(self.rows)}
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(temporary, self.path)


def summary_records(rows: list[Row]) -> list[dict]:
    """fastmlp ÷ each PyTorch row of the same configuration, with the target and its verdict."""
    records = []
    for fast in (r for r in rows if r.impl == "fastmlp"):
        for peer in (r for r in rows if r.config == fast.config and r.impl != "fastmlp"):
            ratio = fast.rate / peer.rate if fast.rate and peer.rate else None
            target = TARGETS[fast.config]
            records.append({"config": fast.config, "peer": peer.impl, "ratio": ratio, "target": target,
                            "verdict": "n/a" if ratio is None else ("met" if ratio >= target else "MISSED")})
    return records


def measure_config(config: Config, args, torch, worker: Worker, report: Report, deadline: float,
                   configs_left: int) -> None:
    now = time.perf_counter()
    share_end = now + (deadline - now) / configs_left  # this configuration's part of the budget

    def remaining() -> float:
        return deadline - time.perf_counter()

    def timeout(default: float) -> float:
        return max(5.0, min(default, remaining() + 10))

    def spent(row: Row, stage: str) -> bool:
        """Past the deadline: the row is left out (not failed), nothing more is started."""
        if remaining() > 0:
            return False
        row.status, row.error = "skipped", f"time budget spent before its {stage}"
        log(f"{config.name} / {row.impl}: {row.error}")
        return True

    X, y = gpu_data(config)
    log(f"{config.name}: {len(X)} samples, batch {config.batch or 'full'}")
    rows: list[Row] = []
    if "fastmlp" not in args.skip:
        rows.append(fastmlp_row(config, worker, len(X), timeout))
    for compiled in (False, True):
        impl = IMPLEMENTATIONS[1 + compiled]
        if impl in args.skip:
            continue
        if torch is None:
            rows.append(Row(config.name, impl, config.unit, len(X), status="skipped", error="no PyTorch"))
            continue
        rows.append(torch_row(torch, config, compiled, args.device, X, y))
    report.rows.extend(rows)

    # Warm-up: the compiled row first (its compilation is the long one), then the others. A
    # compilation is started only when as much time is left as the longest one so far took.
    for row in sorted(rows, key=lambda r: r.impl != "PyTorch compiled"):
        if row.status != "ok" or spent(row, "warm-up"):
            continue
        if row.impl == "PyTorch compiled":
            needed = max([args.compile_reserve, *(s + 5 for s in report.compile_seconds)])
            if remaining() < needed:
                row.status = "skipped"
                row.error = f"time budget: {remaining():.0f} s left, compiling needs ≈ {needed:.0f} s"
                log(f"{config.name} / {row.impl}: {row.error}")
                continue
        log(f"{config.name} / {row.impl}: warm-up")
        try:
            start = time.perf_counter()
            with Alarm(timeout(args.compile_limit)):
                row.run(1)
            row.warmup_seconds = time.perf_counter() - start
            if row.impl == "PyTorch compiled":
                report.compile_seconds.append(row.warmup_seconds)
        except Exception as error:  # noqa: BLE001
            row.fail(error)
    for row in rows:
        if row.status != "ok" or spent(row, "calibration"):
            continue
        try:
            calibrate(row, args.block_seconds, MAX_EPOCHS[config.name], timeout(120.0))
            log(f"{config.name} / {row.impl}: {row.epochs} epochs a block")
        except Exception as error:  # noqa: BLE001
            row.fail(error)

    for round_index in range(args.repeats):
        live = [r for r in rows if r.status == "ok"]
        if not live:
            break
        if round_index > 0:  # a round's cost, from the last one: cut the rounds to the budget
            needed = sum(r.seconds[-1] for r in live if r.seconds) + len(live) * args.pause
            within = time.perf_counter() + needed <= min(share_end, deadline)
            if not within and (round_index >= args.min_repeats or remaining() <= 0):
                report.notes.append(f"{config.name}: {round_index} rounds of {args.repeats} (time budget)")
                break
        for row in live:
            try:
                with Alarm(timeout(60.0 + 20 * row_block_guess(row))):
                    seconds, row.loss = row.run(row.epochs)
                row.seconds.append(seconds)
            except Exception as error:  # noqa: BLE001
                row.fail(error)
            time.sleep(args.pause)
        log(f"{config.name}: round {round_index + 1} of {args.repeats}: " + ", ".join(
            f"{r.impl} {format_rate(r.epochs * r.samples_per_epoch / r.seconds[-1])}"
            for r in rows if r.status == "ok" and r.seconds))
    for row in rows:
        if row.status == "ok" and not row.seconds:
            row.status, row.error = "error", "no block was timed"


def print_report(report: Report, wall: float) -> None:
    rows = report.rows
    header = ("configuration", "implementation", "epochs / block", "median block", "speed", "fastmlp ÷ this",
              "target", "warm-up", "last loss")
    fast_rates = {r.config: r.rate for r in rows if r.impl == "fastmlp"}
    table = []
    for row in rows:
        if row.status != "ok":
            error = row.error if len(row.error) <= 70 else row.error[:69] + "…"
            table.append((row.config, row.impl, "—", "—", f"{row.status.upper()}: {error}", "—", "—",
                          "—" if row.warmup_seconds is None else f"{row.warmup_seconds:.1f} s", "—"))
            continue
        fast = fast_rates.get(row.config)
        ratio = fast / row.rate if fast and row.impl != "fastmlp" else None
        target = TARGETS[row.config]
        mark = "—" if ratio is None else f"≥ {target:g}× {'met' if ratio >= target else 'MISSED'}"
        table.append((row.config, row.impl, str(row.epochs), f"{statistics.median(row.seconds) * 1e3:.1f} ms",
                      f"{format_rate(row.rate)} {row.unit}", "—" if ratio is None else f"{ratio:.2f}×", mark,
                      "—" if row.warmup_seconds is None else f"{row.warmup_seconds:.1f} s",
                      "—" if row.loss is None else f"{row.loss:.4g}"))
    if table:
        print_table(header, table)
        print()
    records = summary_records(rows)
    if records:
        print_table(("configuration", "fastmlp ÷", "ratio", "target", "verdict"),
                    [(r["config"], r["peer"], "—" if r["ratio"] is None else f"{r['ratio']:.2f}×",
                      f"≥ {r['target']:g}×", r["verdict"]) for r in records])
        print()
    notes = [f"{r.config} / {r.impl}: {r.note}" for r in rows if r.note] + report.notes
    notes += [f"{r.config} / {r.impl}: {r.status}: {r.error}" for r in rows if r.status != "ok" and len(r.error) > 70]
    for note in notes:
        print(f"note: {note}")
    judged = [r for r in records if r["ratio"] is not None]
    met = sum(r["verdict"] == "met" for r in judged)
    print(f"targets: met {met} of {len(judged)} measured ({len(records) - len(judged)} not measured); "
          f"wall time {wall:.0f} s", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter blocks, 3 rounds: about a minute")
    parser.add_argument("--repeats", type=int, default=None, help="rounds; medians are shown (default 5, 3 with --quick)")
    parser.add_argument("--min-repeats", type=int, default=2, help="rounds kept even over the time budget (default 2)")
    parser.add_argument("--block-seconds", type=float, default=None, help="length of a block (default 0.4 s, 0.15 s with --quick)")
    parser.add_argument("--pause", type=float, default=0.05, help="sleep between blocks (default 0.05 s)")
    parser.add_argument("--only", default=None, help="comma-separated configurations: " + ", ".join(TARGETS))
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out: " + ", ".join(IMPLEMENTATIONS))
    parser.add_argument("--device", default="cuda", help="PyTorch's device (default cuda; cpu for a smoke test)")
    parser.add_argument("--fastmlp-device", default="cuda", help="fastmlp's device (default cuda)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for the whole run (default 200, 80 with --quick)")
    parser.add_argument("--compile-limit", type=float, default=150.0, help="seconds a warm-up (compile) may take")
    parser.add_argument("--compile-reserve", type=float, default=20.0,
                        help="skip torch.compile when less than this is left of the budget")
    parser.add_argument("--json", default=None, help="write every row, the summary and the machine here")
    parser.add_argument("--out", default=None, help="folder for bench_gpu.json and bench_gpu.txt (the report)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.fastmlp_device)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    args.block_seconds = args.block_seconds if args.block_seconds is not None else (0.15 if args.quick else 0.4)
    budget = args.time_budget if args.time_budget is not None else (80.0 if args.quick else 200.0)
    only = list(TARGETS) if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.repeats < 1 or args.block_seconds <= 0 or not set(only) <= set(TARGETS) \
            or not args.skip <= set(IMPLEMENTATIONS):
        parser.error(f"--repeats and --block-seconds must be positive, --only from {list(TARGETS)}, "
                     f"--skip from {list(IMPLEMENTATIONS)}")
    json_path = args.json or (os.path.join(args.out, "bench_gpu.json") if args.out else None)
    start = time.perf_counter()
    deadline = start + budget
    # The last resort against a stuck device call: print every thread's stack and exit.
    faulthandler.dump_traceback_later(budget + 45, exit=True)

    notes: list[str] = []
    torch = load_torch(args.device, notes)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv[1:], "python": platform.python_version(),
            "numpy": np.__version__, "fastmlp": fm.__version__, "nvidia_smi": driver_version(),
            "torch_device": args.device, "fastmlp_device": args.fastmlp_device, "block_seconds": args.block_seconds,
            "repeats": args.repeats, "time_budget": budget, "host": f"{platform.node()}, {os.cpu_count()} cores"}
    if torch is not None:
        meta["torch"] = torch.__version__
        meta["torch_cuda"] = torch.version.cuda
        meta["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        meta["allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        if args.device.startswith("cuda") and torch.cuda.is_available():
            meta["torch_device_name"] = torch.cuda.get_device_name(0)
            capability = torch.cuda.get_device_capability(0)
            meta["torch_capability"] = f"{capability[0]}.{capability[1]}"
    worker = Worker(args.fastmlp_device)
    if "fastmlp" not in args.skip:
        try:
            worker.start()
            meta["fastmlp_cuda_info"] = worker.hello.get("cuda_info")
        except WorkerError as error:
            notes.append(f"fastmlp worker did not start: {describe(error)}")
    report = Report(json_path, meta)
    report.notes.extend(notes)

    print("GPU benchmark: a full training step (forward, MSE backward, SGD update), float32, fastmlp beside PyTorch")
    print(f"device:   {meta['nvidia_smi']}" + (f"; torch sees {meta['torch_device_name']} (sm {meta['torch_capability']})"
                                             if "torch_device_name" in meta else ""))
    print(f"versions: fastmlp {fm.__version__}, Python {meta['python']}, NumPy {np.__version__}, "
          + (f"PyTorch {meta['torch']} (CUDA {meta['torch_cuda']}), float32 matmul precision "
             f"{meta['float32_matmul_precision']}, allow_tf32 {meta['allow_tf32']}" if torch is not None else "no PyTorch"))
    print(f"fastmlp:  device {args.fastmlp_device}; cuda_info {meta.get('fastmlp_cuda_info')}")
    print(f"method:   PyTorch on {args.device}; blocks of ≈ {args.block_seconds:g} s, {args.repeats} rounds "
          f"round-robin, median; time budget {budget:.0f} s", flush=True)
    print(flush=True)

    selected = [c for c in GPU_CONFIGS if c.name in only]
    for index, config in enumerate(selected):
        if time.perf_counter() > deadline - 10:
            report.notes.append(f"{config.name}: not run (time budget of {budget:.0f} s spent)")
            log(report.notes[-1])
            continue
        try:
            measure_config(config, args, torch, worker, report, deadline, len(selected) - index)
        except Exception as error:  # noqa: BLE001  (anything unforeseen: note it, go on)
            traceback.print_exc()
            report.notes.append(f"{config.name}: stopped by {describe(error)}")
        worker.stop()  # a fresh worker per configuration: device memory back, no state carried over
        report.save()
        if torch is not None and args.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
    faulthandler.cancel_dump_traceback_later()

    wall = time.perf_counter() - start
    report.meta["wall_seconds"] = round(wall, 1)
    report.save()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_gpu.txt"), "w", encoding="utf-8") as f, redirect_stdout(f):
            print_report(report, wall)
    print_report(report, wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
