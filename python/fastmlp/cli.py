"""fastmlp's command line.

    fastmlp train DATA [--target COLUMN] [--layers 64,32] [--epochs N] [--out model.npz] [options]
    mpiexec -n N fastmlp train DATA ...      (data-parallel over MPI; pip install "fastmlp[mpi]")
    fastmlp predict MODEL DATA [--out predictions.csv] [--proba]
    fastmlp demo [article | deep] [--epochs N] [--seed S] [--out PATH | --no-plot]
    fastmlp info
    fastmlp bench [--quick] [--configs ...] [--peers ...] [--threads 1,2] [--json PATH] [--markdown PATH]
    fastmlp --version

``train`` fits a network to a data file (CSV with a header row, ``.npy`` or ``.npz``;
:mod:`fastmlp._datafiles` reads them) and saves it; ``predict`` loads one and writes
its predictions for another file as CSV. ``demo`` (or ``demo article``) runs the
article's demo ("Master Backpropagation", shared/seed): learn y = x² + noise with a
[1, 64, 32, 1] ReLU network, 5000 full-batch epochs of SGD at lr 0.01, through
:class:`fastmlp.NeuralNetwork`, and draws the article's two panels into a PNG. ``demo
deep`` trains a 20-hidden-layer sigmoid network (it stalls) and the same depth with
relu, residual blocks and layer norm (it trains), prints both diagnoses and draws
gradient norm by layer and the loss curves (:mod:`fastmlp.demos.deep`). ``info``
tells how this build was made and what it runs on.

Under an MPI launcher (``mpiexec -n N fastmlp train ...``) ``train`` runs data-parallel
through :class:`fastmlp.distributed.MPI` and ``fit(..., shard=True)``: every rank reads
only its block of the file's rows (:func:`fastmlp._datafiles.block`), what needs the
whole data (the task, the class labels, the standardization) is computed across the
ranks, each rank holds out its own fraction of its rows for --validation, rank 0's
seed is everyone's, and only rank 0 prints and writes the model ("train under mpiexec"
below tells how an error on one rank ends them all without a hang). Under a launcher
the other commands run on every rank alike, and only rank 0 prints.

Every error the user can fix (a bad option, a bad or missing data or model file, an
unwritable --out, a fit that diverges) ends in one line on stderr and exit status 2;
a problem in a data file names the file, the line and the column
(``fastmlp train: error: data.csv:17: column "age": "abc" is not a number``).

What ``train`` keeps for ``predict``: ``net.metadata["cli"]``, a dict saved in the
model file's header:

=============  =======================================================================
``task``       "classification" or "regression"
``features``   the CSV columns the network reads, in order; null when trained from
               arrays (.npy, .npz): then the file's columns are the features, in order
``target``     the target: a CSV column or .npz array name, or an .npy column index
``classes``    classification: the label of each output (str, int or float); null
               for regression
``x_mean``,    the network sees (x - x_mean) / x_scale, per feature; null with
``x_scale``    --no-standardize
``y_mean``,    regression: predictions are output * y_scale + y_mean, per output;
``y_scale``    null for classification or with --no-standardize
=============  =======================================================================

A model trained in Python and saved with ``net.save`` predicts too: without
``metadata["cli"]`` its inputs are every column of the file, in order, unscaled, and
a classifier's labels are 0..n_outputs-1. A model trained from an .npy (``target`` an
int), given a CSV or .npy with one column more than it has inputs, takes the file for
one like its training file and drops the column ``target``, from a CSV as from an .npy,
so that the training file predicts as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from . import _core
from . import _datafiles as datafiles
from ._files import write_atomically
from ._threads import get_num_threads, set_num_threads
from .architecture import NORMS
from .callbacks import EarlyStopping
from .article import NeuralNetwork
from .demos import deep as deep_demo
from .io import load as load_model
from .network import ACTIVATIONS, MAX_COUNT, Network
from .optimizers import SGD, Adam, AdamW, LAMB, Optimizer

__all__ = ["main"]

PLOT_HINT = 'pip install "fastmlp[plot]"'
DEMOS = ("article", "deep")
DEMO_DEFAULTS = {"article": (5000, "demo.png"), "deep": (deep_demo.DEFAULT_EPOCHS, "demo-deep.png")}
OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "lamb": LAMB}
TASKS = ("classification", "regression")
MAX_INFERRED_CLASSES = 20  # a target of at most this many distinct integers is taken for class labels
USER_ERROR = 2  # the exit status of every error the user can fix, as argparse's usage errors


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""


USER_ERRORS = (CommandError, OSError, ValueError, FloatingPointError, MemoryError)  # one line, exit 2


def _argument(convert: Callable[[str], float], accept: Callable[[float], bool], expected: str,
              in_range: str | None = None) -> Callable[[str], float]:
    """An argparse ``type``: ``convert(text)``, then ``accept(value)``; the errors say
    "expected <expected>" (for a value out of range, "expected <in_range>" when given)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {in_range or expected}, got {value}")
        return value

    return parse


_positive_int = _argument(int, lambda v: 1 <= v <= MAX_COUNT, "a positive integer",
                          "a positive integer up to 2**62")
_seed = _argument(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")  # np.random.seed's range
_fraction = _argument(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_positive_float = _argument(float, lambda v: v > 0.0 and math.isfinite(v), "a positive number")


def _layer_widths(text: str) -> list[int]:
    """"64,32" → [64, 32]; "" → [] (no hidden layer: a linear or logistic model)."""
    if not text.strip():
        return []
    try:
        return [_positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected hidden layer widths such as 64,32, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"column {twice!r} named twice in {text!r}")
    return names


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmlp",
        description="Dense neural networks trained by backpropagation, with multithreaded C++ kernels.",
    )
    parser.add_argument("--version", action="version", version=f"fastmlp {_core.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="the article's demo (learn x², write demo.png), or `demo deep`",
        description=(
            "article (the default): a [1, 64, 32, 1] ReLU network learns y = x² + N(0, 0.1²) "
            "on 100 points of [-2, 2] by full-batch SGD (lr 0.01), then plots the fit and the loss. "
            f"deep: a {deep_demo.DEPTH}-hidden-layer sigmoid network and the same depth with relu, "
            f"residual blocks and layer norm learn y = x₀² + noise ({deep_demo.N_INPUTS} inputs) with Adam; prints "
            "why the first stalls (its diagnosis) and plots both gradient norms by layer and loss curves."
        ),
    )
    demo.add_argument("which", nargs="?", choices=DEMOS, default="article",
                      help="which demo (default article)")
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help=f"training epochs (default 5000; deep: {deep_demo.DEFAULT_EPOCHS})")
    demo.add_argument("--seed", type=_seed, default=42,
                      help="seed for data and weights (default 42; the article's np.random.seed)")
    picture = demo.add_mutually_exclusive_group()
    picture.add_argument("--out", default=None, metavar="PATH",
                         help="where to write the picture (default demo.png; deep: demo-deep.png)")
    picture.add_argument("--no-plot", action="store_true", help="train and print only; write no picture")
    demo.set_defaults(run=_run_demo)

    train = commands.add_parser(
        "train",
        help="train a network on a CSV, .npy or .npz file and save it",
        description=(
            "Trains a network on DATA and saves it (net.save). DATA is a CSV file with a header row, "
            ".npy (one 2-D array; the target is a column) or .npz (arrays X and y). The task is "
            "classification when the target holds text or at most "
            f"{MAX_INFERRED_CLASSES} distinct integers, regression otherwise (--task decides instead). "
            "Features (and regression targets) are standardized with the training rows' mean and "
            "standard deviation, kept in the model for predict. A progress bar shows on a terminal. "
            "Under mpiexec (mpi4py installed) it trains data-parallel: every process reads its own block of "
            "DATA's rows (and holds out --validation of them), --batch-size is the global batch, rank 0 prints "
            "and writes the model."
        ),
    )
    train.add_argument("data", metavar="DATA", help="the training data: .csv, .npy or .npz")
    train.add_argument("--target", default=None, metavar="COLUMN",
                       help="CSV: the target column's name (required); .npy: its index (default -1, the last); "
                            ".npz: the target array's name (default y)")
    train.add_argument("--features", type=_names, default=None, metavar="A,B,...",
                       help="CSV: the feature columns (default: every column but the target)")
    train.add_argument("--task", choices=TASKS, default=None, help="default: chosen by the target's values")
    train.add_argument("--layers", type=_layer_widths, default=[64, 32], metavar="W1,W2,...",
                       help='hidden layer widths (default 64,32; "" for none)')
    train.add_argument("--activation", choices=list(ACTIVATIONS), default="relu",
                       help="of the hidden layers (default relu)")
    train.add_argument("--residual", action="store_true",
                       help="residual blocks (out = in + block(in)) where widths agree")
    train.add_argument("--norm", choices=NORMS, default=None, help="layer or batch norm in every hidden block")
    train.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                       help="dropout probability after every hidden activation (default 0)")
    train.add_argument("--epochs", type=_positive_int, default=100, help="default 100")
    train.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="default 32")
    train.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam", help="default adam")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default: the optimizer's, 0.001; sgd 0.01)")
    train.add_argument("--validation", type=_fraction, default=0.0, metavar="FRACTION",
                       help="hold out this fraction of the rows, drawn at random, to report on (default 0; "
                            "under mpiexec: of each process's rows)")
    train.add_argument("--patience", type=_positive_int, default=None, metavar="N",
                       help="stop when the validation loss has not improved for N epochs, keeping the best "
                            "epoch's weights (needs --validation)")
    train.add_argument("--no-standardize", action="store_true",
                       help="feed the features (and targets) as they are")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    train.add_argument("--seed", type=_seed, default=None,
                       help="seed for the weights, the shuffling and the validation split "
                            "(default: a fresh one, printed)")
    train.add_argument("--out", default="model.npz", metavar="PATH", help="the model file (default model.npz)")
    train.set_defaults(run=_run_train)

    predict = commands.add_parser(
        "predict",
        help="predict for a CSV, .npy or .npz file with a saved model",
        description=(
            "Loads MODEL (written by fastmlp train or net.save) and writes one prediction per row of DATA "
            "as CSV: a classifier's labels (--proba: a probability per class), a regressor's values. "
            "Features are picked from a CSV by name; other columns are ignored."
        ),
    )
    predict.add_argument("model", metavar="MODEL", help="the model file (.npz)")
    predict.add_argument("data", metavar="DATA", help="the data: .csv, .npy or .npz")
    predict.add_argument("--out", default=None, metavar="PATH", help="write the predictions here (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="classifiers: the probability of every class")
    predict.set_defaults(run=_run_predict)

    info = commands.add_parser("info", help="versions, build, threads, CPU and GPU of this installation",
                               description="How this fastmlp was built and what it runs on.")
    info.set_defaults(run=_run_info)

    bench = commands.add_parser(
        "bench", help="how fast fastmlp is on this machine, beside PyTorch, scikit-learn and NumPy",
        description="Times fastmlp's training, predict and GEMM on standard configurations beside every "
                    "peer installed here (PyTorch, scikit-learn, the NumPy reference, NumPy's BLAS), each in "
                    "its own process, and prints one table: samples/s, ± the spread, fastmlp ÷ each peer, "
                    "with the CPU and its measured FMA peak. A progress bar shows on a terminal.")
    from . import bench as bench_module

    bench_module.add_arguments(bench)
    bench.set_defaults(run=_run_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line with ``argv`` (default: sys.argv[1:]); returns the exit status.
    Under an MPI launcher (``mpiexec -n 2 fastmlp train ...``) train runs data-parallel and
    only rank 0 prints. The other commands ignore the launch: they run whole in every
    process, as a plain command run from inside an MPI job must."""
    words = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    command = next((word for word in words if not word.startswith("-")), None)
    rank = _launch()[0] if command == "train" else 0
    if rank == 0:
        return _main(argv)
    with open(os.devnull, "w", encoding="utf-8") as devnull, \
            contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = _build_parser()
    try:
        words = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
        args = parser.parse_args(words)
        args.words = words  # `fastmlp bench` repeats its command line in its report
    except SystemExit as stop:  # --help, --version, or argparse's usage error (2)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else USER_ERROR)
    try:
        return args.run(args)
    except BrokenPipeError:  # `fastmlp demo | head -3`: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except USER_ERRORS as error:
        # One line, whatever the message holds (a file name with a newline, say).
        print(f"fastmlp {args.command}: error: {_one_line(error)}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"fastmlp {args.command}: interrupted", file=sys.stderr)
        return 130
    return USER_ERROR


# ---- demo -----------------------------------------------------------------------------


def _check_writable(path: str) -> None:
    """Fails early, before training, when the picture could not be written."""
    if not path:
        raise CommandError("--out: expected a file name, got an empty string")
    if os.path.isdir(path):
        raise CommandError(f"cannot write {path}: it is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write {path}: no such directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write {path}: directory {folder} is not writable")


def _check_not_an_input(out: str, inputs: dict[str, str]) -> None:
    """Fails when --out names one of the command's input files (by another name too):
    writing it would destroy the input."""
    for role, path in inputs.items():
        try:
            same = os.path.samefile(out, path)
        except OSError:  # one of them does not exist (yet), or cannot be looked at: not the same file
            continue
        if same:
            raise CommandError(f"--out {out}: that is the {role} {path}; writing there would destroy it")


def _run_demo(args) -> int:
    default_epochs, default_out = DEMO_DEFAULTS[args.which]
    args.epochs = default_epochs if args.epochs is None else args.epochs
    args.out = default_out if args.out is None else args.out
    if not args.no_plot:
        _check_writable(args.out)
    return _run_demo_deep(args) if args.which == "deep" else _run_demo_article(args)


def _run_demo_article(args) -> int:
    plot = not args.no_plot

    # The article's data and network, in the article's order, so the seeded stream matches.
    np.random.seed(args.seed)
    X_train = np.linspace(-2, 2, 100).reshape(-1, 1)
    y_train = X_train**2 + np.random.normal(0, 0.1, X_train.shape)
    nn = NeuralNetwork(layer_sizes=[1, 64, 32, 1], learning_rate=0.01, activation="relu")

    start = time.perf_counter()
    losses = nn.train(X_train, y_train, epochs=args.epochs, verbose=True)
    seconds = time.perf_counter() - start
    print(f"Final training loss: {losses[-1]:.6f}")
    print(f"Training time: {_format_seconds(seconds)} ({args.epochs} epochs, "
          f"{get_num_threads()} thread{'s' if get_num_threads() != 1 else ''})")

    if plot:
        X_test = np.linspace(-2, 2, 50).reshape(-1, 1)
        y_pred = nn.forward(X_test)
        try:
            figure = _demo_figure(X_train, y_train, X_test, y_pred, losses)
        except ImportError:
            print(f"Picture skipped: matplotlib is not installed ({PLOT_HINT} to get {args.out})")
            return 0
        _save_png_atomically(figure, args.out)
    return 0


def _run_demo_deep(args) -> int:
    threads = get_num_threads()
    print(f"Two networks of {deep_demo.DEPTH} hidden layers × {deep_demo.WIDTH} learn y = x₀² + N(0, 0.1²) "
          f"from {deep_demo.N_SAMPLES} samples of {deep_demo.N_INPUTS} normal inputs: "
          f"Adam (lr {deep_demo.LEARNING_RATE:g}), batch {deep_demo.BATCH_SIZE}, {args.epochs} epochs, "
          f"seed {args.seed}, {threads} thread{'s' if threads != 1 else ''}.")
    demo = deep_demo.run(epochs=args.epochs, seed=args.seed)
    for deep_run in demo.runs:
        counts = {v: deep_run.diagnosis.verdicts.count(v) for v in dict.fromkeys(deep_run.diagnosis.verdicts)}
        print()
        print(f"{deep_run.name}: loss {deep_run.losses[0]:.4g} (epoch 1) → {deep_run.losses[-1]:.4g} "
              f"(epoch {len(deep_run.losses)}) in {_format_seconds(deep_run.seconds)}")
        print(f"Diagnosis after training ({', '.join(f'{n} {v}' for v, n in counts.items())}):")
        print(deep_run.diagnosis)
    print()
    print(f"Variance of y (the loss of predicting its mean): {demo.y_variance:.4g}")
    print("Final training loss: " + ", ".join(f"{r.name} {r.losses[-1]:.4g}" for r in demo.runs))

    if not args.no_plot:
        try:
            figure = deep_demo.figure(demo)
        except ImportError:
            print(f"Picture skipped: matplotlib is not installed ({PLOT_HINT} to get {args.out})")
            return 0
        _save_png_atomically(figure, args.out)
        print(f"Picture: {args.out}")
    return 0


def _format_seconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _demo_figure(X_train, y_train, X_test, y_pred, losses):
    """The article's two panels, side by side, on an Agg canvas (no screen, no pyplot)."""
    import matplotlib  # noqa: F401  (lazy: the plot extra is optional)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5))
    FigureCanvasAgg(figure)

    left = figure.add_subplot(1, 2, 1)
    left.scatter(X_train, y_train, alpha=0.7, label="Training Data", s=20)
    left.plot(X_test, y_pred, "r-", linewidth=2, label="Network Prediction")
    left.plot(X_test, X_test**2, "g--", alpha=0.8, label="True Function (x²)")
    left.set_xlabel("x")
    left.set_ylabel("y")
    left.set_title("Function Approximation with Backpropagation")
    left.legend()
    left.grid(True, alpha=0.3)

    right = figure.add_subplot(1, 2, 2)
    right.plot(losses)
    right.set_xlabel("Epoch")
    right.set_ylabel("Mean Squared Error Loss")
    right.set_title("Training Loss Over Time")
    right.set_yscale("log")
    right.grid(True, alpha=0.3)

    figure.tight_layout()
    return figure


def _save_png_atomically(figure, path: str) -> None:
    """path is either the old file or the whole new picture, never half of one."""
    write_atomically(path, lambda stream: figure.savefig(stream, format="png"))


# ---- info -----------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n / 1024:g} KiB"


def _cpu_rows() -> list[tuple[str, str]]:
    cpu = _core.cpu_info()
    if cpu["vendor"]:
        ident = f"{cpu['vendor']} family {cpu['family']} model {cpu['model']} stepping {cpu['stepping']}"
        model = f"{cpu['brand'] or '(no brand string)'} ({ident})"
    else:
        model = "(no CPUID: not x86-64)"
    caches = "; ".join(
        f"L{c['level']}{'' if c['unified'] else 'd'} {_size(c['size'])} {c['ways']}-way, {c['line']} B lines"
        + (f", shared by {c['shared_by']}" if c["shared_by"] > 1 else "")
        for c in cpu["caches"]
    )
    return [("cpu", model), ("caches", f"{caches or '(unknown)'} (from {cpu['cache_source']})")]


def _gemm_config_rows() -> list[tuple[str, str]]:
    config = _core.gemm_config()

    def blocking(b) -> str:
        return f"{b['mr']}×{b['nr']} tiles, KC {b['kc']}, NC {b['nc']}, prefetch {'on' if b['prefetch'] else 'off'}"

    return [
        ("gemm config", f"{config['name']} ({config['source']}): {config['reason']}"),
        ("  float32", blocking(config["float32"])),
        ("  float64", blocking(config["float64"])),
        ("  override", "FASTMLP_GEMM_CONFIG=NAME[,kc=N,nc=N,prefetch=0|1] "
                       f"(names: {', '.join(_core.gemm_configs())})"),
    ]


def _cuda_version(version: int) -> str:
    """A CUDA version number as CUDA writes it: 13000 → "13.0", 12080 → "12.8"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def _cuda_rows() -> list[tuple[str, str]]:
    """The CUDA backend: whether this build has it, the GPU it sees and which GEMM it uses."""
    from ._cuda import load_cublas

    load_cublas()  # where fastmlp finds it: its GEMM row below says which
    cuda = _core.cuda_info()
    if not cuda["built"]:
        return [("cuda", "not built (device='cuda' needs pip install . -Ccmake.define.FASTMLP_CUDA=ON, with nvcc)")]
    if cuda["error"] or not cuda["devices"]:
        versions = f"runtime {_cuda_version(cuda['runtime_version'])}" if cuda["runtime_version"] else ""
        return [("cuda", f"built{f' ({versions})' if versions else ''}; "
                         f"{cuda['error'] or 'no usable GPU: the CUDA runtime sees no device'}")]
    gpus = f", {cuda['devices']} GPUs (uses device 0)" if cuda["devices"] > 1 else ""
    device = (f"{cuda['name']} (capability {cuda['capability']}, {cuda['memory'] / 2**30:.1f} GiB, "
              f"{cuda['multiprocessors']} multiprocessors){gpus}")
    if os.environ.get("FASTMLP_CUDA_GEMM") == "own":
        gemm = "fastmlp's own kernels (FASTMLP_CUDA_GEMM=own)"
    elif cuda["cublas"]:
        gemm = f"cuBLAS for large products, {cuda['cublas']} (loaded at run time; FASTMLP_CUDA_GEMM=own: never)"
    else:
        gemm = "fastmlp's own kernels (no libcublas found; FASTMLP_CUBLAS=/path/libcublas.so names one)"
    return [
        ("cuda", f"built, runtime {_cuda_version(cuda['runtime_version'])}, "
                 f"driver {_cuda_version(cuda['driver_version'])}"),
        ("gpu", device),
        ("gpu gemm", gemm),
    ]


def _run_info(args) -> int:
    build = _core.build_info()
    threads = get_num_threads()
    omp_env = os.environ.get("OMP_NUM_THREADS")
    rows = [
        ("fastmlp", _core.__version__),
        ("location", os.path.dirname(os.path.abspath(__file__))),
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("numpy", np.__version__),
        ("platform", platform.platform()),
        ("compiler", build["compiler"]),
        ("build type", build["build_type"]),
        ("build flags", " ".join(build["build_flags"].split()) or "(none)"),
        ("threads", f"{threads}" + (f" (OMP_NUM_THREADS={omp_env})" if omp_env else "")),
        ("thread pool", "fastmlp's work-claiming pool on std::thread (no barrier waits)"),
        ("architecture", build["architecture"]),
        ("cpu features", ", ".join(build["cpu_features"]) or "(none detected)"),
        ("gemm kernel", f"{build['gemm_kernel']} (available: {', '.join(_core.gemm_available_kernels())})"),
        *_cpu_rows(),
        *_gemm_config_rows(),
        *_cuda_rows(),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0


# ---- bench --------------------------------------------------------------------------------


def _run_bench(args) -> int:
    from . import bench

    words = args.words
    return bench.command(args, words[words.index("bench") + 1:] if "bench" in words else [],
                         progress=_progress_wanted())


# ---- train --------------------------------------------------------------------------------


def _progress_wanted() -> bool:
    """A progress bar only for a person watching: when stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _class_labels(values: np.ndarray) -> list:
    """The sorted distinct labels as JSON values: str, int (for whole numbers) or float."""
    unique = np.unique(values)
    if unique.dtype.kind == "f":
        if np.array_equal(unique, np.round(unique)) and np.abs(unique).max() < 2**53:
            return [int(v) for v in unique]
        return [float(v) for v in unique]
    return [str(v) for v in unique]


def _choose_task(samples: datafiles.Samples, task: str | None) -> str:
    """--task, or the target's values: text or a few distinct integers make labels."""
    y = samples.y
    text = y.dtype.kind == "U"
    whole = not text and y.ndim == 1 and bool(np.array_equal(y, np.round(y)))
    return _task_rule(samples, task, text=text, problem=samples.y_problem, mixed=text and samples.y_mixed,
                      whole=whole, labels=np.unique(y), n_rows=y.shape[0])


def _task_rule(samples: datafiles.Samples, task: str | None, *, text: bool, problem: str | None, mixed: bool,
               whole: bool, labels: np.ndarray | None, n_rows: int) -> str:
    """The task (--task, or the rule: text or a few distinct whole numbers make
    labels), or a CommandError, from what is known of the target of all ``n_rows``
    rows: text, its first problem, whether it mixes text and numbers, whether every
    value is a whole number, and its distinct values (None: more than the rule counts)."""
    y = samples.y
    n_labels = None if labels is None else labels.size
    if task == "regression" and text:
        raise CommandError(problem or f"{samples.target}: holds text, not numbers; a regression target must be "
                                      "numbers")
    if task is None:
        if text and problem and mixed:
            raise CommandError(f"{problem} (the other values are numbers; --task classification takes every "
                               "value for a label)")
        few = y.ndim == 1 and n_labels is not None and n_labels <= MAX_INFERRED_CLASSES
        task = "classification" if text or (whole and few) else "regression"
        if text and not few and (n_labels is None or n_labels > n_rows // 2):
            shown = "more than half" if n_labels is None else str(n_labels)
            raise CommandError(f"{samples.path}: target {_target_name(samples)}: {shown} different labels in "
                               f"{n_rows} rows, not a classification target? (--task classification trains on "
                               "it anyway)")
    if task == "classification":
        if y.ndim != 1:
            raise CommandError(f"{samples.path}: target {_target_name(samples)} has {y.shape[1]} columns; "
                               "classification needs one label per row")
        if n_labels < 2:
            raise CommandError(f"{samples.path}: target {_target_name(samples)}: every row has the label "
                               f"{datafiles.quote(str(_class_labels(labels)[0]))}; a classifier needs two "
                               "classes or more")
    return task


def _target_name(samples: datafiles.Samples) -> str:
    if isinstance(samples.target, int):
        return f"column {samples.target}"
    return datafiles.quote(samples.target)


def _split(n: int, fraction: float, seed: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices: a seeded random ``fraction`` held out."""
    order = np.random.default_rng(seed).permutation(n)
    if not fraction:
        return np.sort(order), order[:0]
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise CommandError(f"--validation {fraction}: of the {n} rows of {path}, {n_val} for validation and "
                           f"{n - n_val} for training; both need at least one")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _standardization(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per column: the mean and the standard deviation (1 for a constant column).
    Both are taken in units of the column's largest magnitude, so that a column of
    values near 1e200, whose squares overflow float64, has them too."""
    magnitude = np.abs(values).max(axis=0)
    magnitude[~(magnitude > 0)] = 1.0
    units = values / magnitude
    mean = units.mean(axis=0) * magnitude
    scale = units.std(axis=0) * magnitude
    scale[~(scale > 0)] = 1.0
    return [float(v) for v in mean], [float(v) for v in scale]


def _scaled(values: np.ndarray, mean, scale) -> np.ndarray:
    return values if mean is None else (values - np.asarray(mean)) / np.asarray(scale)


def _network_values(values: np.ndarray, mean, scale, dtype: np.dtype, cells: datafiles.Cells,
                    training: bool) -> np.ndarray:
    """``values`` standardized (unless ``mean`` is None) and cast to the network's
    dtype; an error naming the first cell whose value does not fit the dtype (1e39
    in float32), or whose distance to the mean overflows float64, before NumPy would
    warn and the network refuse an infinity naming no file."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = _scaled(values, mean, scale)
        fits = np.abs(scaled) <= np.finfo(dtype).max  # false for inf and nan too
    if fits.all():
        return scaled.astype(dtype)
    i, j = np.argwhere(~fits)[0]
    value = f"{values[i, j]:.6g}"
    if mean is not None:
        value += f" standardized (mean {mean[j]:.6g}, scale {scale[j]:.6g})"
    if not np.isfinite(scaled[i, j]):  # the values are finite: only standardizing overflows
        problem = f"{value} overflows float64; rescale the column"
    else:
        problem = (f"{value} does not fit {dtype.name}" if mean is None else
                   f"{value} is {scaled[i, j]:.6g}, which does not fit {dtype.name}")
        problem += ("; use --dtype float64" if dtype == np.float32 else "") if training else ", the model's dtype"
    raise CommandError(f"{cells.at(i, j)}: {problem}")


@dataclass
class _Training:
    """What ``train`` fits. Across ranks, X_net, y_net, y and the rows are this rank's
    own; the rest is the same on every rank."""

    X_net: np.ndarray        # (n, inputs): the features as the network sees them
    y_net: np.ndarray        # the targets as the network sees them: class indices, or standardized values
    y: np.ndarray            # class indices, or the values in the target's units
    classes: list | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    batch_size: int
    batch_note: str
    x_mean: list | None
    x_scale: list | None
    y_mean: list | None
    y_scale: list | None
    net: Network
    optimizer: Optimizer


def _run_train(args) -> int:
    comm = _launch_communicator()
    if comm is None:
        return _train(args, None)
    try:
        return _train(args, comm)
    except _OnEveryRank:
        raise
    except USER_ERRORS as error:  # on this rank alone, outside the agreed steps: end them all
        status, message = USER_ERROR, f"fastmlp train: error: rank {comm.rank}: {_one_line(error)}\n"
    except Exception:  # a bug: the other ranks would wait for this one forever; say what and end them all
        status, message = 1, traceback.format_exc()
    # In one write, straight to the file descriptor, and a pause for the launcher to
    # forward it: MPICH's Hydra drops what it has not forwarded when the abort arrives
    # (printed line by line, the traceback came out cut short; without the pause, now
    # and then not at all: 1 run in about 60).
    sys.__stderr__.flush()
    os.write(sys.__stderr__.fileno(), message.encode("utf-8", "replace"))
    time.sleep(ABORT_PAUSE)
    # As `python -m mpi4py` does. MPICH's Abort may return before the launcher ends this
    # process: leave at once, without MPI's exit handlers (they would wait for the others).
    comm.comm.Abort(status)
    os._exit(status)


def _train(args, comm) -> int:
    """train, alone (``comm`` None) or as one process of an MPI launch (``comm`` a
    fastmlp.distributed.MPI): then every rank reads its own block of the file's rows,
    what needs the whole data (the task, the class labels, the standardization) is
    agreed across the ranks, the seed is rank 0's, the fit is data-parallel with
    ``shard=True``, and only rank 0 writes the model and reports."""
    first = comm is None or comm.rank == 0
    threads = _share_cores(comm) if comm is not None else get_num_threads()
    # Reading its own rows, each rank reports the first problem in them: the first rank's
    # is the one a process reading the whole file would report.
    samples, task = _together(comm, lambda: _read_for_training(args, comm, first), named=1)
    if comm is not None:
        _check_same_file(comm, args.data, samples)
        task, labels = _choose_task_across(comm, samples, args.task)
    seed = int(np.random.SeedSequence().entropy % 2**32) if args.seed is None else args.seed
    if comm is not None:  # rank 0's: the same weights and shuffling on every rank
        seed = comm.broadcast(seed)
        t = _shard_setup(args, comm, samples, task, labels, seed)
    else:
        t = _training_setup(args, samples, task, seed)
    net, optimizer = t.net, t.optimizer

    features = samples.feature_names
    X = samples.X
    # The rows of each rank: read, for training, for validation (one process: its own).
    rows = [(X.shape[0], t.train_rows.size, t.val_rows.size)] if comm is None else \
        comm.allgather((X.shape[0], t.train_rows.size, t.val_rows.size))
    n_rows, n_train, n_val = (sum(counts) for counts in zip(*rows))
    if first:
        print(f"Data: {args.data}, {n_rows} rows"
              + (f" ({n_train} for training, {n_val} for validation)" if n_val else "")
              + f", {X.shape[1]} features"
              + (f" ({_listing(features)})" if features else "") + f"; target {_target_name(samples)}: {task}"
              + (f", {len(t.classes)} classes ({_listing(t.classes)})" if t.classes else "") + ".", flush=True)
        print(f"Network: {list(net.layer_sizes)} {args.activation}"
              + (", residual" if args.residual else "") + (f", {args.norm} norm" if args.norm else "")
              + (f", dropout {args.dropout:g}" if args.dropout else "")
              + f"; {type(optimizer).__name__} lr {optimizer.lr:g}, batch {t.batch_size}{t.batch_note}, "
              f"{args.epochs} epochs, seed {seed}.", flush=True)
        if comm is not None:
            print(f"Processes: {comm.size} (MPI, data-parallel: each read its own block of rows "
                  f"({_listing([read for read, _, _ in rows])}) and computes the gradient of its share of every "
                  f"batch of {t.batch_size} rows, summed across them), {threads} thread{'s' if threads != 1 else ''} "
                  "each.", flush=True)

    progress = first and _progress_wanted()
    validation = (t.X_net[t.val_rows], t.y_net[t.val_rows]) if t.val_rows.size else None
    start = time.perf_counter()
    # The library's progress bar (verbose=2) writes to stdout; the command's stdout is for results.
    with contextlib.redirect_stdout(sys.stderr) if progress else contextlib.nullcontext():
        try:
            history = net.fit(t.X_net[t.train_rows], t.y_net[t.train_rows], epochs=args.epochs,
                              batch_size=t.batch_size, optimizer=optimizer, verbose=2 if progress else 0,
                              validation_data=validation,
                              early_stopping=None if args.patience is None else EarlyStopping(patience=args.patience),
                              **({} if comm is None else {"comm": comm, "shard": True}))
        except (ValueError, FloatingPointError, RuntimeError) as error:
            if comm is None:
                raise
            # Across ranks fit raises these alike on every rank (it compares the arguments
            # first, the loss and gradient it checks are the summed ones, and it tells every
            # rank of a divergence or of a failure on one).
            raise _OnEveryRank(_one_line(error)) from error
    seconds = time.perf_counter() - start

    net.metadata = {**net.metadata, "cli": {
        "task": task, "features": features, "target": samples.target, "classes": t.classes,
        "x_mean": t.x_mean, "x_scale": t.x_scale, "y_mean": t.y_mean, "y_scale": t.y_scale,
    }}
    _together(comm, lambda: net.save(args.out) if first else None)
    # Every rank measures its rows; the figures are those of all the rows together.
    figures = [_report(net, t, task, t.train_rows)] + ([_report(net, t, task, t.val_rows)] if n_val else [])
    if comm is not None:
        figures = [_merge_reports(parts) for parts in zip(*comm.allgather(figures))]
    if not first:
        return 0

    losses = history.history["loss"]
    epochs = len(losses)
    # With --patience the network keeps the weights of the best epoch on validation, even when it ran to the end.
    kept = epochs - 1 if history.best_epoch is None else history.best_epoch
    notes = (["stopped early"] if epochs < args.epochs else []) + \
        ([f"the weights of epoch {kept + 1}, the best on validation"] if kept != epochs - 1 else [])
    stopped = f" ({'; '.join(notes)})" if notes else ""
    print(f"Trained {epochs} epochs{stopped} in {_format_seconds(seconds)}: loss {losses[kept]:.6g}, "
          f"{_report_text(figures[0])} (training)"
          + (f"; {_report_text(figures[1])} (validation)" if n_val else "") + ".")
    print(f"Model: {args.out}")
    return 0


def _report(net, t: _Training, task: str, rows: np.ndarray) -> tuple:
    """What the summary reports of ``rows``, in parts that add across ranks:
    ("accuracy", correct, count), or ("RMSE", largest error, Σ (error / largest)², count)."""
    if task == "classification":
        return "accuracy", int(np.sum(net.predict(t.X_net[rows]) == t.y[rows])), int(rows.size)
    errors = _unscaled(net.predict(t.X_net[rows]), t.y_mean, t.y_scale) - t.y[rows]
    largest = float(np.abs(errors).max()) if errors.size else 0.0
    units = float(np.sum((errors / largest) ** 2)) if largest > 0 and math.isfinite(largest) else 0.0
    return "RMSE", largest, units, int(errors.size)


def _merge_reports(parts) -> tuple:
    """One _report of the rows of every rank from each rank's."""
    if parts[0][0] == "accuracy":
        return "accuracy", sum(p[1] for p in parts), sum(p[2] for p in parts)
    largest = max(p[1] for p in parts)
    if not (largest > 0 and math.isfinite(largest)):
        return "RMSE", largest, 0.0, sum(p[3] for p in parts)
    return "RMSE", largest, sum(p[2] * (p[1] / largest) ** 2 for p in parts if p[1] > 0), sum(p[3] for p in parts)


def _report_text(figure: tuple) -> str:
    if figure[0] == "accuracy":
        _, correct, count = figure
        return f"accuracy {correct / count:.4f}"
    _, largest, units, count = figure
    rms = largest * math.sqrt(units / count) if largest > 0 and math.isfinite(largest) else largest
    return f"RMSE {rms:.6g}"


def _read_for_training(args, comm, first: bool) -> tuple[datafiles.Samples, str | None]:
    """The options checked, --out checked (by the process that writes it), the data
    file read (across ranks: this rank's block of its rows) and its task chosen
    (across ranks: None, chosen by _choose_task_across)."""
    if args.target is not None and not args.target.strip():
        raise CommandError("--target: expected a column name, got an empty string")
    if args.patience is not None and not args.validation:
        raise CommandError("--patience: needs --validation (early stopping watches the validation loss)")
    if comm is not None and args.norm == "batch":
        raise CommandError("--norm batch: not supported across MPI processes yet (each reads its own rows, and "
                           "fit(shard=True) refuses batch norm: a process may hold no row of a batch); run without "
                           "mpiexec")
    if first:
        _check_writable(args.out)
        _check_not_an_input(args.out, {"data file": args.data})
    if comm is not None:
        return datafiles.read_training_data(args.data, args.target, args.features, (comm.rank, comm.size)), None
    samples = datafiles.read_training_data(args.data, args.target, args.features)
    return samples, _choose_task(samples, args.task)


def _training_setup(args, samples: datafiles.Samples, task: str, seed: int) -> _Training:
    """The labels, the validation split, the standardization and the network, from
    the data and the seed alone, so that every process makes the same."""
    X, y = samples.X, samples.y
    if task == "classification":
        classes = _class_labels(y)
        lookup = np.array(classes, dtype=y.dtype) if y.dtype.kind == "U" else np.array(classes, dtype=np.float64)
        y = np.searchsorted(lookup, y).astype(np.int64)
        n_outputs, loss = len(classes), "cross_entropy"
    else:
        classes = None
        y = y.reshape(y.shape[0], -1)
        n_outputs, loss = y.shape[1], "mse"
    train_rows, val_rows = _split(X.shape[0], args.validation, seed, args.data)
    batch_size, batch_note = _batch_size(args, train_rows.size)

    x_mean = x_scale = y_mean = y_scale = None
    if not args.no_standardize:
        x_mean, x_scale = _standardization(X[train_rows])
        if task == "regression":
            y_mean, y_scale = _standardization(y[train_rows])
    return _training(args, samples, X, y, task, n_outputs, loss, seed, classes, train_rows, val_rows, batch_size,
                     batch_note, (x_mean, x_scale, y_mean, y_scale))


def _training(args, samples: datafiles.Samples, X: np.ndarray, y: np.ndarray, task: str, n_outputs: int,
              loss: str, seed: int, classes, train_rows: np.ndarray, val_rows: np.ndarray, batch_size: int,
              batch_note: str, standardization: tuple) -> _Training:
    """The network, its optimizer and the values it trains on: X and y (class indices
    for a classifier) standardized as ``standardization`` = (x_mean, x_scale, y_mean,
    y_scale) says (None: as they are)."""
    x_mean, x_scale, y_mean, y_scale = standardization
    dtype = np.dtype(args.dtype)
    X_net = _network_values(X, x_mean, x_scale, dtype, samples.X_cells, training=True)
    y_net = y if task == "classification" else _network_values(y, y_mean, y_scale, dtype, samples.y_cells,
                                                               training=True)
    net = Network([X.shape[1], *args.layers, n_outputs], activation=args.activation, residual=args.residual,
                  norm=args.norm, dropout=args.dropout, loss=loss, dtype=dtype, seed=seed)
    optimizer = OPTIMIZERS[args.optimizer]() if args.lr is None else OPTIMIZERS[args.optimizer](lr=args.lr)
    return _Training(X_net, y_net, y, classes, train_rows, val_rows, batch_size, batch_note,
                     x_mean, x_scale, y_mean, y_scale, net, optimizer)


def _batch_size(args, n_train: int) -> tuple[int, str]:
    """--batch-size, and a note for the summary when it had to change: batch norm
    cannot normalize a batch of one row, and with --validation the user cannot
    foresee how many training rows there are, so a size that would leave a last batch
    of one is lowered until it does not (as fastmlp.sklearn does), or made the whole set."""
    if args.norm != "batch":
        return args.batch_size, ""
    if args.batch_size < 2:
        raise CommandError(f"--batch-size {args.batch_size}: batch norm (--norm batch) needs batches of 2 rows or more")
    if n_train < 2:
        raise CommandError(f"--norm batch: {args.data} leaves {n_train} row for training; batch norm needs 2 or more")
    size = min(args.batch_size, n_train)
    if n_train % size != 1:
        return args.batch_size, ""
    size = next((s for s in range(size - 1, 1, -1) if n_train % s != 1), n_train)
    return size, (f" (not {args.batch_size}: {n_train} training rows would leave a last batch of one row, "
                  "which batch norm cannot normalize)")


def _listing(values, limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


def _unscaled(values: np.ndarray, mean, scale) -> np.ndarray:
    values = values.astype(np.float64)
    with np.errstate(over="ignore"):  # a prediction beyond float64 is written as inf, without a warning
        return values if mean is None else values * np.asarray(scale) + np.asarray(mean)


# ---- train under mpiexec ------------------------------------------------------------------
#
# `mpiexec -n N fastmlp train ...` starts N processes of the same command. Each finds its
# rank from the launcher (_launch), reads its block of the file's rows, agrees with the
# others on what needs the whole data (_check_same_file, _choose_task_across,
# _standardization_across), trains data-parallel through fastmlp.distributed.MPI with
# shard=True, and only rank 0 prints (main silences the others) and writes the model. Every step that
# can fail on one rank and not another (reading the file, writing the model) runs through
# _together, which makes the failure every rank's: one line from rank 0, exit 2 everywhere,
# and no rank left waiting in a collective for one that has stopped.

# The launchers' variables, (size, rank): MPICH's and Intel MPI's Hydra, and Slurm's srun
# --mpi=pmi2, set PMI_*; Open MPI's mpirun sets OMPI_COMM_WORLD_*.
LAUNCH_VARIABLES = (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"))
ABORT_PAUSE = 0.5  # seconds between a rank's last words and its MPI_Abort (see _run_train)
MAX_RANKS_NAMED = 4  # an error on more ranks than this names the first ones and counts the rest


class _OnEveryRank(CommandError):
    """A failure that every rank of the launch raises alike (so none needs ending)."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).splitlines())


def _launch() -> tuple[int, int]:
    """(rank, size) of this process when an MPI launcher started several, else (0, 1):
    from mpi4py when it is already initialized (``python -m mpi4py -m fastmlp``), else
    from the launcher's environment variables, without importing mpi4py."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()
    for size_name, rank_name in LAUNCH_VARIABLES:
        try:
            size, rank = int(os.environ[size_name]), int(os.environ.get(rank_name, "0"))
        except (KeyError, ValueError):
            continue
        if size > 1 and 0 <= rank < size:
            return rank, size
    return 0, 1


def _launch_communicator():
    """A fastmlp.distributed.MPI over COMM_WORLD when an MPI launcher started several
    processes; None when this process runs alone."""
    rank, size = _launch()
    if size == 1:
        tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "1"
        if "PMIX_RANK" in os.environ and tasks.isdigit() and int(tasks) > 1:
            # srun --mpi=pmix sets no PMI_SIZE: without this, every task would train alone.
            raise CommandError(f"started as one of {tasks} tasks by srun with PMIx, which fastmlp train cannot read "
                               "its rank from: run `python -m mpi4py -m fastmlp train ...` (or srun --mpi=pmi2)")
        return None
    from .distributed import MPI

    try:
        comm = MPI()
    except ImportError:
        raise CommandError(f"started as {size} processes by an MPI launcher, but mpi4py is not installed: "
                           'pip install "fastmlp[mpi]", or run without mpiexec') from None
    if comm.size != size:  # each process sees a world of its own: N separate trainings writing one file
        raise CommandError(f"started as {size} processes by an MPI launcher, but mpi4py's MPI sees {comm.size}: "
                           "mpi4py is built against another MPI than the launcher's; use the mpiexec of "
                           "mpi4py's MPI (the mpich wheel's is in the environment's bin/)")
    return comm


def _share_cores(comm) -> int:
    """The threads of this process: OMP_NUM_THREADS when set, else the CPUs that the
    processes on this machine may run on, divided among them (at least one, at most
    this process's own), rather than every process taking every CPU. Every rank calls it."""
    from mpi4py import MPI as mpi

    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    local = comm.comm.Split_type(mpi.COMM_TYPE_SHARED)
    try:
        together = set().union(*local.allgather(usable))
        share = len(together) // local.Get_size()
    finally:
        local.Free()
    if "OMP_NUM_THREADS" not in os.environ:
        set_num_threads(max(1, min(len(usable), share)))
    return get_num_threads()


def _check_same_file(comm, path: str, samples: datafiles.Samples) -> None:
    """Every rank must have read a block of the same file (one on a shared file
    system, or identical copies on each machine): the same count of rows, the same
    columns (names, or shapes and dtypes) and the same size in bytes; an
    _OnEveryRank naming what each saw otherwise."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    mine = (samples.file_rows, samples.layout, size, path, platform.node())
    everyone = comm.allgather(mine)
    if all(seen[:3] == everyone[0][:3] for seen in everyone):
        return

    def columns(layout) -> str:
        if layout[0] == "csv":
            return f"columns {_listing(layout[1], 6)}"
        if layout[0] == "npy":
            return f"an array {tuple(layout[1])} of {np.dtype(layout[2]).name}"
        return ", ".join(f"{name} {tuple(shape)} of {np.dtype(dtype).name}"
                         for name, (shape, dtype) in layout[1].items())

    seen = "; ".join(f"rank {rank} ({host}): {where}, {rows} rows, {columns(layout)}, {size} bytes"
                     for rank, (rows, layout, size, where, host) in enumerate(everyone[:MAX_RANKS_NAMED]))
    raise _OnEveryRank(f"{path}: the processes read different files ({seen}); every process reads its own rows of "
                       "the same file: one on a shared file system, or identical copies")


def _choose_task_across(comm, samples: datafiles.Samples, task: str | None) -> tuple[str, list | None]:
    """_choose_task and the class labels for the rows of every rank together (each
    holds a block of them), the same on every rank; an _OnEveryRank when refused.
    A rank whose target cells are all numbers takes them as text (samples.y becomes
    them) when another rank's are not: the file's target is then text, as read whole."""
    y = samples.y
    text = y.dtype.kind == "U"
    n_rows = sum(comm.allgather(y.shape[0]))
    whole = not text and y.ndim == 1 and bool(np.array_equal(y, np.round(y)))
    mine = {"text": text, "problem": samples.y_problem,
            "numbers": not text or samples.y_mixed, "whole": whole}
    everyone = comm.allgather(mine)
    text = any(seen["text"] for seen in everyone)
    if text and samples.y.dtype.kind != "U":
        samples.y = samples.y_texts
    y = samples.y
    # The distinct values, where they are needed: labels (text, or --task classification),
    # or whole numbers that may be few; None from a rank that holds too many to matter.
    if text or task == "classification" or (task is None and all(seen["whole"] for seen in everyone)):
        unique = np.unique(y) if y.ndim == 1 else None
        limit = None if task is not None else n_rows // 2 if text else MAX_INFERRED_CLASSES
        distinct = comm.allgather(unique if unique is None or limit is None or unique.size <= limit else None)
        labels = None if any(d is None for d in distinct) else np.unique(np.concatenate(distinct))
    else:
        labels = None
    problem = next((seen["problem"] for seen in everyone if seen["problem"]), None)
    try:
        task = _task_rule(samples, task, text=text, problem=problem,
                          mixed=text and any(seen["numbers"] for seen in everyone),
                          whole=all(seen["whole"] for seen in everyone), labels=labels, n_rows=n_rows)
    except CommandError as error:
        raise _OnEveryRank(str(error)) from None
    return task, None if task == "regression" else _class_labels(labels)


def _standardization_across(comm, values: np.ndarray) -> tuple[list[float], list[float]]:
    """_standardization of the rows of every rank together (each holds some of them,
    at least one): the same figures on every rank, equal to those of the rows read
    in one place to rounding (sums taken per rank, then across the ranks in rank
    order). Two passes, as NumPy's std: the mean, then the squares about it."""
    magnitude = np.max(comm.allgather(np.abs(values).max(axis=0)), axis=0)
    magnitude[~(magnitude > 0)] = 1.0
    units = values / magnitude
    count = sum(comm.allgather(values.shape[0]))
    mean = np.sum(comm.allgather(units.sum(axis=0)), axis=0) / count
    variance = np.sum(comm.allgather(((units - mean) ** 2).sum(axis=0)), axis=0) / count
    scale = np.sqrt(variance) * magnitude
    scale[~(scale > 0)] = 1.0
    return [float(v) for v in mean * magnitude], [float(v) for v in scale]


def _shard_setup(args, comm, samples: datafiles.Samples, task: str, classes: list | None, seed: int) -> _Training:
    """_training_setup for this rank's block of rows: its own validation split (the
    fraction of its rows, drawn by a generator seeded with the seed and the rank),
    the standardization of every rank's training rows together, and the network,
    the same on every rank."""
    X, y = samples.X, samples.y

    def split() -> tuple[np.ndarray, np.ndarray]:
        n = X.shape[0]
        order = np.random.default_rng([seed, comm.rank]).permutation(n)
        n_val = int(round(n * args.validation))
        if args.validation and (n_val < 1 or n_val >= n):
            raise CommandError(f"--validation {args.validation}: each process holds out that fraction of the rows it "
                               f"reads; of its {n} rows of {args.data}, {n_val} for validation and {n - n_val} for "
                               "training; both need at least one")
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    train_rows, val_rows = _together(comm, split)
    if task == "classification":
        lookup = np.array(classes, dtype=str) if y.dtype.kind == "U" else np.array(classes, dtype=np.float64)
        y = np.searchsorted(lookup, y).astype(np.int64)
        n_outputs, loss = len(classes), "cross_entropy"
    else:
        y = y.reshape(y.shape[0], -1)
        n_outputs, loss = y.shape[1], "mse"

    x_mean = x_scale = y_mean = y_scale = None
    if not args.no_standardize:
        x_mean, x_scale = _standardization_across(comm, X[train_rows])
        if task == "regression":
            y_mean, y_scale = _standardization_across(comm, y[train_rows])

    return _together(comm, lambda: _training(args, samples, X, y, task, n_outputs, loss, seed, classes, train_rows,
                                             val_rows, args.batch_size, "", (x_mean, x_scale, y_mean, y_scale)))


_T = TypeVar("_T")


def _together(comm, step: Callable[[], _T], named: int = MAX_RANKS_NAMED) -> _T:
    """``step()`` on every rank of ``comm`` (alone: just ``step()``); when it fails
    with a user error on any rank, the same _OnEveryRank on every rank, naming the
    first ``named`` failed ranks (and their machines) and counting the others,
    unless they all failed alike."""
    if comm is None:
        return step()
    result, problem = None, None
    try:
        result = step()
    except USER_ERRORS as error:
        problem = _one_line(error)
    everyone = comm.allgather((problem, platform.node()))
    failed = [(rank, message, host) for rank, (message, host) in enumerate(everyone) if message is not None]
    if not failed:
        return result
    if len(failed) == comm.size and all(message == failed[0][1] for _, message, _ in failed):
        raise _OnEveryRank(failed[0][1])
    told = "; ".join(f"rank {rank} ({host}): {message}" for rank, message, host in failed[:named])
    more = len(failed) - named
    raise _OnEveryRank(told + (f"; and {more} more rank{'s' if more > 1 else ''}" if more > 0 else ""))


# ---- predict ------------------------------------------------------------------------------


def _model_settings(net, path: str) -> dict:
    """``net.metadata["cli"]`` checked against the network (see the module docstring);
    the defaults of a model saved from Python when it has none."""
    settings = {"task": "classification" if net.is_classifier else "regression", "features": None, "target": None,
                "classes": list(range(net.n_outputs)) if net.is_classifier else None,
                "x_mean": None, "x_scale": None, "y_mean": None, "y_scale": None}
    saved = net.metadata.get("cli")
    if saved is None:
        return settings
    if not isinstance(saved, dict) or set(saved) - set(settings):
        raise CommandError(f"{path}: metadata \"cli\": expected an object with the keys {', '.join(settings)}")
    settings.update(saved)

    def problem(key: str, expected: str) -> CommandError:
        return CommandError(f"{path}: metadata \"cli\" {key}: expected {expected}, got {settings[key]!r:.100}")

    if settings["task"] not in TASKS or (settings["task"] == "classification") != net.is_classifier:
        raise problem("task", f"{'classification' if net.is_classifier else 'regression'} (the network's loss is "
                              f"{net.loss})")
    numbers = (int, float)
    for key, length, kinds in (("features", net.n_inputs, str), ("x_mean", net.n_inputs, numbers),
                               ("x_scale", net.n_inputs, numbers), ("y_mean", net.n_outputs, numbers),
                               ("y_scale", net.n_outputs, numbers), ("classes", net.n_outputs, (str, *numbers))):
        value = settings[key]
        if value is not None and not (isinstance(value, list) and len(value) == length
                                      and all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)):
            raise problem(key, f"null or a list of {length}")
        if key.endswith("_scale") and value is not None and not all(v > 0 and math.isfinite(v) for v in value):
            raise problem(key, "positive numbers")
    if (settings["x_mean"] is None) != (settings["x_scale"] is None) or \
            (settings["y_mean"] is None) != (settings["y_scale"] is None):
        raise CommandError(f"{path}: metadata \"cli\": a mean without its scale, or a scale without its mean")
    if not isinstance(settings["target"], (str, int, type(None))) or isinstance(settings["target"], bool):
        raise problem("target", "a name, a column index or null")
    if net.is_classifier and settings["classes"] is None:
        raise problem("classes", f"the {net.n_outputs} class labels")
    return settings


def _load_model(path: str):
    """fm.load, with one-line messages for a path that is missing or a directory (fm.load
    names a file that is no model itself: "not a fastmlp model file (not an .npz ...")."""
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a directory, not a model file")
    try:
        return load_model(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None


def _format_value(dtype: np.dtype) -> Callable[[float], str]:
    """Numbers as text: float32 to its 9 significant digits (all it holds), float64 exactly."""
    if dtype == np.float32:
        return lambda v: f"{v:.9g}"
    return lambda v: repr(float(v))


def _run_predict(args) -> int:
    if args.out is not None:
        _check_writable(args.out)
        _check_not_an_input(args.out, {"model": args.model, "data file": args.data})
    net = _load_model(args.model)
    settings = _model_settings(net, args.model)
    if args.proba and not net.is_classifier:
        raise CommandError(f"--proba: {args.model} is a regression model; it predicts values, not classes")
    X, cells = datafiles.read_features(args.data, settings["features"], net.n_inputs, settings["target"])
    X = _network_values(X, settings["x_mean"], settings["x_scale"], net.dtype, cells, training=False)

    text = _format_value(net.dtype)
    target = settings["target"] if isinstance(settings["target"], str) else None
    # A binary_cross_entropy network (saved from Python; train makes softmax classifiers)
    # says 0 or 1 for each output: its labels and probabilities are per output.
    per_output = net.loss == "binary_cross_entropy"
    if args.proba:
        probabilities = net.predict_proba(X)
        header = [f"output_{j}" for j in range(net.n_outputs)] if per_output else [str(c) for c in settings["classes"]]
        rows = ([text(v) for v in row] for row in probabilities.astype(np.float64))
    elif net.is_classifier:
        predicted = net.predict(X)
        if per_output:
            header = [target or "class"] if predicted.ndim == 1 else [f"output_{j}" for j in range(net.n_outputs)]
            rows = ([str(v) for v in np.atleast_1d(row)] for row in predicted)
        else:
            header = [target or "class"]
            rows = ([str(settings["classes"][i])] for i in predicted)
    else:
        values = _unscaled(net.predict(X), settings["y_mean"], settings["y_scale"])
        header = [target or "prediction"] if values.shape[1] == 1 else \
            [f"{target or 'prediction'}_{j}" for j in range(values.shape[1])]
        rows = ([text(v) for v in row] for row in values)

    def write(stream) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)

    if args.out is None:
        write(sys.stdout)
        sys.stdout.flush()
    else:
        def write_file(binary) -> None:
            stream = io.TextIOWrapper(binary, encoding="utf-8", newline="")
            write(stream)
            stream.flush()
            stream.detach()  # leave the file to write_atomically, which syncs and closes it

        write_atomically(args.out, write_file)
    return 0
