"""Where the CUDA backend finds cuBLAS.

fastmlp links no cuBLAS (cpp/cuda/gemm.cu loads it at run time, for the large
matrix products only; its own kernels do the rest). The backend looks for it by
the dynamic loader's rules (``FASTMLP_CUBLAS``, then ``libcublas.so.13``, then
``.so.12``); this module adds the places the loader does not search: NVIDIA's
pip wheels (``nvidia-cublas``, which PyTorch and CuPy install, under the
``nvidia`` namespace package) and the CUDA toolkit's own folder.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os

from . import _core

_WHEEL_PATTERNS = ("cu13/lib/libcublas.so.13", "cublas/lib/libcublas.so.13", "cu12/lib/libcublas.so.12",
                   "cublas/lib/libcublas.so.12")
_TOOLKIT_PATTERNS = ("/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.12",
                     "/usr/local/cuda-*/lib64/libcublas.so.1[23]")


def _candidates() -> list[str]:
    found = []
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        for pattern in _WHEEL_PATTERNS:
            found += sorted(glob.glob(os.path.join(root, pattern)))
    for pattern in _TOOLKIT_PATTERNS:
        found += sorted(glob.glob(pattern), reverse=True)
    return found


@functools.lru_cache(maxsize=1)
def load_cublas() -> str:
    """Loads cuBLAS into the CUDA backend once; returns the library loaded, or ""
    (no cuBLAS found, or a build without CUDA: the own GEMM kernels then do every
    product). Never raises."""
    cuda = getattr(_core, "cuda", None)
    if cuda is None:
        return ""
    try:
        loaded = cuda.cublas_load("")
        for path in [] if loaded else _candidates():
            loaded = cuda.cublas_load(path)
            if loaded:
                break
    except Exception:  # a library that fails to load is no cuBLAS: the own kernels stay
        return ""
    return loaded
