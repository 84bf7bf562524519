"""The machine probes (cpp/src/probe): fma_peak's and spin_probe's keys and types, the
ISA they pick held to cpu_info() and the GEMM kernels this build runs, float64's lanes
half of float32's, and every bad argument refused naming it. Short runs (0.02 s), and
no timing assertions beyond "positive and finite": the machine may be busy."""

from __future__ import annotations

import math
import os
import platform

import pytest
from fastmlp import _core

SECONDS = 0.02


def expected_isa() -> str:
    """The chains fma_peak should run: those of the kernel the GEMM runs now."""
    return _core.gemm_kernel()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_peak_result(dtype, threads):
    peak = _core.fma_peak(dtype, threads=threads, seconds=SECONDS, trials=3)
    assert set(peak) == {"dtype", "threads", "isa", "lanes", "chains", "gflops", "median_gflops", "trials"}
    assert peak["dtype"] == dtype and peak["threads"] == threads
    assert isinstance(peak["isa"], str)
    assert isinstance(peak["lanes"], int) and isinstance(peak["chains"], int)
    assert peak["lanes"] >= 1 and peak["chains"] >= 1
    assert isinstance(peak["trials"], list) and len(peak["trials"]) == 3
    for gflops in peak["trials"] + [peak["gflops"], peak["median_gflops"]]:
        assert isinstance(gflops, float) and math.isfinite(gflops) and gflops > 0, peak
    assert peak["gflops"] == max(peak["trials"])
    assert min(peak["trials"]) <= peak["median_gflops"] <= peak["gflops"]


def test_fma_peak_defaults_and_trial_count():
    peak = _core.fma_peak(seconds=SECONDS, trials=1)
    assert peak["dtype"] == "float32" and peak["threads"] == 1
    assert len(peak["trials"]) == 1 and peak["median_gflops"] == peak["gflops"] == peak["trials"][0]
    assert len(_core.fma_peak(seconds=SECONDS, trials=4)["trials"]) == 4


@pytest.mark.parametrize("kernel", ["avx2", "portable"])
def test_fma_peak_runs_the_isa_of_a_forced_gemm_kernel(kernel):
    if kernel not in _core.gemm_available_kernels():
        pytest.skip(f"this CPU or build has no {kernel} kernel")
    try:
        _core.set_gemm_kernel(kernel)
        assert _core.fma_peak(seconds=SECONDS, trials=1)["isa"] == kernel
    finally:
        _core.set_gemm_kernel("auto")
    assert _core.fma_peak(seconds=SECONDS, trials=1)["isa"] == _core.gemm_available_kernels()[0]


def test_fma_peak_isa_follows_the_cpu():
    features = set(_core.cpu_info()["features"])
    f32 = _core.fma_peak("float32", seconds=SECONDS, trials=1)
    f64 = _core.fma_peak("float64", seconds=SECONDS, trials=1)
    assert f32["isa"] == f64["isa"] == expected_isa()
    # The registers of each ISA: 512, 256 or 128 bits; float64 has half the lanes.
    portable_chains = 24 if platform.machine() in ("aarch64", "arm64") else 12
    lanes, chains = {"avx512": (16, 16), "avx2": (8, 12), "portable": (4, portable_chains)}[f32["isa"]]
    assert (f32["lanes"], f32["chains"]) == (lanes, chains)
    assert (f64["lanes"], f64["chains"]) == (lanes // 2, chains)
    if f32["isa"] == "avx512":
        assert {"avx512f", "avx2", "fma"} <= features
    elif f32["isa"] == "avx2":  # AVX-512 too on Skylake-SP parts with one 512-bit FMA unit (family 6 model 85)
        assert {"avx2", "fma"} <= features
        cpu = _core.cpu_info()
        assert "avx512f" not in features or (cpu["family"], cpu["model"]) == (6, 0x55) \
            or os.environ.get("FASTMLP_GEMM_KERNEL") == "avx2"


@pytest.mark.parametrize("threads", [1, 2])
def test_spin_probe_result(threads):
    probe = _core.spin_probe(threads=threads, seconds=SECONDS, gap_us=20.0)
    assert set(probe) == {"threads", "seconds", "stolen", "per_thread", "gaps", "longest_gap_us"}
    assert probe["threads"] == threads
    assert isinstance(probe["seconds"], float) and probe["seconds"] >= 0.99 * SECONDS
    assert isinstance(probe["stolen"], float) and 0 <= probe["stolen"] <= 1
    assert isinstance(probe["per_thread"], list) and len(probe["per_thread"]) == threads
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in probe["per_thread"])
    assert isinstance(probe["gaps"], int) and probe["gaps"] >= 0
    assert isinstance(probe["longest_gap_us"], float) and probe["longest_gap_us"] >= 0
    if probe["gaps"] == 0:
        assert probe["stolen"] == 0 and probe["longest_gap_us"] == 0
    else:
        assert probe["longest_gap_us"] > 20.0


def test_spin_probe_defaults():
    probe = _core.spin_probe(seconds=SECONDS)
    assert probe["threads"] == 1 and len(probe["per_thread"]) == 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(dtype="float16"), "dtype"),
        (dict(dtype="int32"), "dtype"),
        (dict(dtype=""), "dtype"),
        (dict(threads=0), "threads"),
        (dict(threads=-1), "threads"),
        (dict(threads=1025), "threads"),
        (dict(seconds=0.0), "seconds"),
        (dict(seconds=-1.0), "seconds"),
        (dict(seconds=10.5), "seconds"),
        (dict(seconds=math.nan), "seconds"),
        (dict(seconds=math.inf), "seconds"),
        (dict(trials=0), "trials"),
        (dict(trials=101), "trials"),
    ],
)
def test_fma_peak_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _core.fma_peak(**{"seconds": SECONDS, "trials": 1, **kwargs})


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(threads=0), "threads"),
        (dict(threads=1025), "threads"),
        (dict(seconds=0.0), "seconds"),
        (dict(seconds=11.0), "seconds"),
        (dict(seconds=math.nan), "seconds"),
        (dict(gap_us=0.0), "gap_us"),
        (dict(gap_us=-5.0), "gap_us"),
        (dict(gap_us=math.nan), "gap_us"),
        (dict(gap_us=math.inf), "gap_us"),
    ],
)
def test_spin_probe_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _core.spin_probe(**{"seconds": SECONDS, **kwargs})
