"""fastmlp's GEMM beside NumPy's BLAS (OpenBLAS) and PyTorch's (MKL): GFLOP/s, % of the
machine's FMA peak, ratios.

    python benchmarks/bench_gemm.py [--set default|issue10] [--quick] [--threads 1,2]
                                    [--dtypes float32,float64] [--config NAME] [--kernel NAME]
                                    [--skip-torch] [any other option of `fastmlp bench`]

A thin caller of `fastmlp bench --configs gemm` (fastmlp.bench is the one implementation), with
the project's targets (`--goals`):
  --set default  (the Speed issue's) squares 256–2048 and the three products of batch-128 layers
                 of widths 256, 512, 1024, float32 and float64, at 1 and 2 threads;
  --set issue10  float32 squares 512–2048 and mnist-mlp's products on 1 thread, wide's X·Wᵀ
                 256×4096×4096 on 2 threads.
--config NAME and --kernel NAME force fastmlp's GEMM configuration or kernel in its process
(FASTMLP_GEMM_CONFIG / FASTMLP_GEMM_KERNEL); to compare configurations, run once per name.
--skip-torch leaves PyTorch out. The old --public-api (time fm.kernels.gemm instead of the binding)
is gone: fastmlp's worker times fastmlp._core.gemm. The FMA peak comes from fastmlp's built-in probe
(fastmlp._core.fma_peak), which replaced the old peak_probe.cpp compiled at run time.

Run it with NumPy's BLAS unhindered (fastmlp bench also unsets these for NumPy's process):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--set", choices=("default", "issue10"), default="default")
    parser.add_argument("--config", default=None)
    parser.add_argument("--kernel", default=None)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default=None)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        return 0
    if known.config is not None and "," in known.config:
        parser.error("--config takes one configuration now (each runs in its own process): run once per name")
    for variable, value in (("FASTMLP_GEMM_CONFIG", known.config), ("FASTMLP_GEMM_KERNEL", known.kernel)):
        if value is not None:
            os.environ[variable] = value  # the workers inherit it
    from fastmlp import (
        bench,  # after the variables: the peak probe follows the kernel they force
    )

    dtypes = known.dtypes or ("float32" if known.set == "issue10" else "float32,float64")
    words = ["--configs", "gemm", "--gemm-set", known.set, "--dtypes", dtypes, "--threads", known.threads, "--goals"]
    if known.skip_torch:
        words += ["--peers", "numpy"]
    return bench.main([*words, *rest])


if __name__ == "__main__":
    sys.exit(main())
