"""fastmlp's command line.

    fastmlp demo [article | deep] [--epochs N] [--seed S] [--out PATH | --no-plot]
    fastmlp info
    fastmlp --version

``demo`` (or ``demo article``) runs the article's demo ("Master Backpropagation",
shared/seed): learn y = x² + noise with a [1, 64, 32, 1] ReLU network, 5000
full-batch epochs of SGD at lr 0.01, through :class:`fastmlp.NeuralNetwork`, and
draws the article's two panels into a PNG. ``demo deep`` trains a 20-hidden-layer
sigmoid network (it stalls) and the same depth with relu, residual blocks and layer
norm (it trains), prints both diagnoses and draws gradient norm by layer and the loss
curves (:mod:`fastmlp.demos.deep`). ``info`` tells how this build was made and what
it runs on.

Errors the user can fix (an unwritable --out, bad input) end in one line on
stderr and exit status 1; bad options are argparse's usual error (status 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from . import _core
from ._files import write_atomically
from ._threads import get_num_threads
from .article import NeuralNetwork
from .demos import deep as deep_demo
from .network import MAX_COUNT

__all__ = ["main"]

PLOT_HINT = 'pip install "fastmlp[plot]"'
DEMOS = ("article", "deep")
DEMO_DEFAULTS = {"article": (5000, "demo.png"), "deep": (deep_demo.DEFAULT_EPOCHS, "demo-deep.png")}


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to 2**62, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}") from None
    if not 0 <= value < 2**32:  # np.random.seed's range
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {value}")
    return value


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

    info = commands.add_parser("info", help="versions, build, threads and CPU of this installation",
                               description="How this fastmlp was built and what it runs on.")
    info.set_defaults(run=_run_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(None if argv is None else [os.fspath(a) for a in argv])
    except SystemExit as stop:  # --help, --version, or argparse's usage error (2)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    try:
        return args.run(args)
    except CommandError as error:
        print(f"fastmlp {args.command}: error: {error}", file=sys.stderr)
    except BrokenPipeError:  # `fastmlp demo | head -3`: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, FloatingPointError, MemoryError) as error:
        print(f"fastmlp {args.command}: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"fastmlp {args.command}: interrupted", file=sys.stderr)
        return 130
    return 1


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
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0
