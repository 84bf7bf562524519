"""Training and inference speed on the Speed issue's configurations, fastmlp beside its peers.

    python benchmarks/bench_configs.py [--quick] [--threads 2] [--repeats 5] [--only NAME,...]
                                       [--skip PEER,...] [any other option of `fastmlp bench`]

A thin caller of `fastmlp bench` (fastmlp.bench is the one implementation): it runs the training
configurations and predict latency — seed-demo, mnist-mlp, wide, deep-narrow, deep-residual,
tiny-batch, predict — with the project's targets (`--goals`), at 2 threads unless told otherwise.
The old options map onto the command's: --only NAME,... is --configs, --skip PEER,... leaves those
peers out (fastmlp.reference, PyTorch, scikit-learn), --threads N. Everything else passes through,
e.g. --json PATH or --markdown benchmarks/RESULTS.md.

Run it with NumPy's BLAS unhindered (fastmlp bench also unsets these for NumPy's processes):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_configs.py
"""

from __future__ import annotations

import argparse
import sys

from fastmlp import bench
from fastmlp.bench._peers import parse_peers

TRAIN_AND_PREDICT = [c.name for c in bench.TRAIN_CONFIGS] + ["predict"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--only", default=None)
    parser.add_argument("--skip", default="")
    parser.add_argument("--threads", default="2")
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        return 0
    words = ["--configs", known.only or ",".join(TRAIN_AND_PREDICT), "--threads", known.threads, "--goals"]
    if known.skip:
        try:
            skipped = set(parse_peers(known.skip))
        except ValueError as error:
            parser.error(str(error).replace("--peers", "--skip"))
        words += ["--peers", ",".join(p for p in ("torch", "sklearn", "reference") if p not in skipped) or "none"]
    return bench.main([*words, *rest])


if __name__ == "__main__":
    sys.exit(main())
