"""``fastmlp bench``: how fast fastmlp trains and predicts on this machine, beside what is
installed here — PyTorch, scikit-learn, fastmlp's NumPy reference and NumPy's BLAS.

    fastmlp bench [--quick] [--configs demo,mnist-mlp,...] [--peers torch,sklearn,...]
                  [--threads 1,2] [--json PATH] [--markdown PATH]

Every implementation runs in a process of its own (so one's thread pools never spin on the
cores another needs, and NumPy's BLAS runs without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE), from
the same initial weights on the same data. A configuration's blocks run round-robin over the
implementations after a warm-up; the figures are medians, ± half the blocks' range, and a block
that another process slowed down is run again. The ratios are fastmlp's speed ÷ the peer's.

From Python: ``report = fastmlp.bench.run(fastmlp.bench.Options(quick=True))``, then
``report.text()``, ``report.markdown()`` or ``report.to_json()``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from . import _configs
from ._configs import (
    MNIST,
    PREDICT,
    SEED,
    TRAIN_CONFIGS,
    GemmShape,
    TrainConfig,
    gemm_shapes,
    make_data,
)
from ._jobs import torch_model, trainer
from ._peers import PEERS, Detection, detect, detect_all, parse_peers
from ._report import Report, Result
from ._run import Options, run

__all__ = [
    "CONFIG_NAMES",
    "MNIST",
    "PEERS",
    "PREDICT",
    "SEED",
    "TRAIN_CONFIGS",
    "Detection",
    "GemmShape",
    "Options",
    "Report",
    "Result",
    "TrainConfig",
    "add_arguments",
    "command",
    "detect",
    "detect_all",
    "gemm_shapes",
    "main",
    "make_data",
    "options_from",
    "run",
    "torch_model",
    "trainer",
]

CONFIG_NAMES = _configs.CONFIG_NAMES


def _list_of(convert, what: str):
    def parse(text: str) -> list:
        try:
            values = [convert(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}")
        return list(dict.fromkeys(values))  # "1,1" is one pass

    return parse


def _thread_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1024:
        raise ValueError(text)
    return value


def _config_name(text: str) -> str:
    name = _configs.ALIASES.get(text, text)
    if name not in CONFIG_NAMES:
        raise argparse.ArgumentTypeError(f"unknown configuration {text!r}; expected some of {', '.join(CONFIG_NAMES)}")
    return name


def _configs_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected configurations separated by commas, got {text!r}")
    return list(dict.fromkeys(_config_name(n) for n in names))


def _peers_list(text: str) -> list[str]:
    try:
        return parse_peers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--peers: ")) from None


def _argument_in(convert, low: float, high: float, what: str):
    """An argparse type: ``convert(text)`` in [low, high] (the command line's own helper)."""
    from ..cli import _argument

    return _argument(convert, lambda value: low <= value <= high, what)


def _dtypes(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names or any(n not in ("float32", "float64") for n in names):
        raise argparse.ArgumentTypeError(f"expected float32 and/or float64, got {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastmlp bench`` (shared by the command line and benchmarks/ scripts)."""
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of 0.1 s blocks and fewer GEMM shapes (two of the standard set): under a minute")
    parser.add_argument("--configs", type=_configs_list, default=None, metavar="NAMES",
                        help=f"comma-separated configurations (default all: {', '.join(CONFIG_NAMES)})")
    parser.add_argument("--peers", type=_peers_list, default=None, metavar="NAMES",
                        help="comma-separated peers to compare with (default every one installed: torch, sklearn, "
                             "reference, numpy); fastmlp always runs")
    parser.add_argument("--threads", type=_list_of(_thread_count, "thread counts (1 to 1024)"), default=None,
                        metavar="N[,N...]", help="thread counts, each a pass over every configuration "
                        "(default: the cores this process may use)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--markdown", default=None, metavar="PATH",
                        help="also write the report as Markdown (between the markers <!-- fastmlp bench: begin --> "
                             "and <!-- fastmlp bench: end --> when the file has them)")
    parser.add_argument("--repeats", type=_argument_in(int, 1, 1000, "an integer in [1, 1000]"), default=None,
                        metavar="N",
                        help="blocks per implementation; the median is shown (default 5, 3 with --quick)")
    parser.add_argument("--block-seconds", type=_argument_in(float, 1e-6, 60, "a number of seconds in (0, 60]"),
                        default=None, metavar="SECONDS",
                        help="length of a block (default 0.5 s, 0.1 s with --quick); a training block of a fast "
                             "implementation runs the configuration's steps and can be shorter")
    parser.add_argument("--pause", type=_argument_in(float, 0, 60, "a number of seconds in [0, 60]"), default=0.1,
                        metavar="SECONDS", help="sleep between blocks, for idle BLAS threads to stop spinning (default 0.1 s)")
    parser.add_argument("--gemm-set", choices=("standard", "default", "issue10"), default="standard",
                        help="GEMM shapes: standard (squares and a layer's products), or the project's sets "
                             "default (the Speed issue's) and issue10")
    parser.add_argument("--dtypes", type=_dtypes, default=("float32",), metavar="float32[,float64]", help="GEMM dtypes (default float32)")
    parser.add_argument("--max-taken", type=_argument_in(float, 0, 1, "a share in [0, 1]"), default=0.10,
                        metavar="SHARE", help="run a block again when other processes took more than this share of the CPU it "
                             "needed (default 0.10)")
    parser.add_argument("--no-peak", action="store_true", help="do not measure the FMA peak")
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="run nothing: print the report a --json file holds (and write --markdown from it); "
                             "the options of a run do not apply")
    parser.add_argument("--goals", action="store_true", help="also print the project's speed targets, met or missed")


def _check_output(option: str, path: str) -> None:
    """Fails before the run, not after it, when the file could not be written."""
    from ._report import markers_problem

    folder = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path or os.path.isdir(path) or not os.path.isdir(folder):
        raise ValueError(f"{option}: cannot write {path!r} (a directory, or its folder does not exist)")
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        raise ValueError(f"{option}: cannot write {path!r} (permission denied)")
    if option == "--markdown" and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                problem = markers_problem(f.read())
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        if problem is not None:
            raise ValueError(f"--markdown: will not write {path}: {problem}")


def options_from(args: argparse.Namespace, argv: list[str] | None = None) -> Options:
    """The run's Options from the parsed command line; ValueError names a bad one."""
    from ._machine import cores

    for option, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path is not None:
            _check_output(option, path)
    if args.json is not None and args.markdown is not None and \
            os.path.abspath(args.json) == os.path.abspath(args.markdown):
        raise ValueError(f"--json and --markdown name the same file, {args.json!r}")
    return Options(
        configs=list(args.configs or CONFIG_NAMES), peers=args.peers, threads=args.threads or [min(cores(), 1024)],
        quick=args.quick, repeats=args.repeats, block_seconds=args.block_seconds, pause=args.pause,
        gemm_set=args.gemm_set, dtypes=args.dtypes, max_taken=args.max_taken, peak=not args.no_peak,
        goals=args.goals,
        command="fastmlp bench" + ("" if not argv else " " + shlex.join(argv)))


def _run_options(args: argparse.Namespace) -> list[tuple[str, object, object]]:
    """(option, value, default) of the options that only a run uses."""
    return [("--quick", args.quick, False), ("--configs", args.configs, None), ("--peers", args.peers, None),
            ("--threads", args.threads, None), ("--repeats", args.repeats, None),
            ("--block-seconds", args.block_seconds, None), ("--pause", args.pause, 0.1),
            ("--gemm-set", args.gemm_set, "standard"), ("--dtypes", args.dtypes, ("float32",)),
            ("--max-taken", args.max_taken, 0.10), ("--no-peak", args.no_peak, False), ("--goals", args.goals, False)]


def command(args: argparse.Namespace, argv: list[str] | None = None, progress: bool | None = None) -> int:
    """Runs ``fastmlp bench`` with parsed arguments: writes the files asked for, then prints the
    report on stdout (so that `fastmlp bench --json x | head` still writes x)."""
    if args.from_json is not None:
        given = [option for option, value, default in _run_options(args) if value != default]
        if given:
            raise ValueError(f"--from-json runs nothing: {', '.join(given)} would not apply")
        for option, path in (("--json", args.json), ("--markdown", args.markdown)):
            if path is not None:
                _check_output(option, path)
                if os.path.abspath(path) == os.path.abspath(args.from_json):
                    raise ValueError(f"{option} names the --from-json file itself, {path!r}")
        with open(args.from_json, encoding="utf-8") as f:
            try:
                document = json.load(f)
            except ValueError as error:
                raise ValueError(f"--from-json: {args.from_json} is not JSON ({error})") from None
        try:
            report = Report.from_json(document)
        except ValueError as error:
            raise ValueError(f"--from-json: {args.from_json}: {error}") from None
    else:
        options = options_from(args, argv)
        if progress is None:
            try:
                progress = sys.stderr.isatty()
            except (AttributeError, ValueError):
                progress = False
        report = run(options, progress=progress)
    failures = []
    for option, path, write in (("--json", args.json, report.write_json),
                                ("--markdown", args.markdown, report.write_markdown)):
        if path:
            try:
                write(path)
            except (OSError, ValueError) as error:  # the table is still printed
                failures.append(f"{option}: {path} not written: {error}")
    sys.stdout.write(report.text())
    if failures:
        raise OSError("; ".join(failures))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``fastmlp bench`` on its own (the benchmarks/ scripts call this); see ``fastmlp bench --help``."""
    from ..cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])
