"""The GEMM configuration (kernel + KC, NC, prefetching per micro-architecture):
every configuration this CPU can run, forced one at a time, held to
reference.gemm on awkward shapes in all four transpose cases, both dtypes,
contiguous and not; the choice, its overrides and their errors; the analytical
model on recorded cache geometries; switching while other threads multiply."""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core, kernels, reference

from kernel_helpers import with_layout

KERNELS = kernels.available_gemm_kernels()
NAMES = kernels.gemm_configs()
# Every table entry and the model on each kernel, plus overrides that make KC and
# NC tiny (many K and N blocks: every block edge is crossed) with and without
# prefetching.
CONFIGS = [("auto", name) for name in NAMES if name != "model"]
CONFIGS += [(kernel, "model") for kernel in KERNELS if "model" in NAMES]
CONFIGS += [(KERNELS[0], "kc=8,nc=1,prefetch=1"), (KERNELS[0], "kc=24,nc=40,prefetch=0")]
CONFIGS += [("portable", "kc=16,nc=8,prefetch=1")]
# (1, 700, 257): one row of C, the row-times-matrix path when B is not transposed.
SHAPES = [(1, 1, 1), (3, 7, 33), (17, 33, 257), (257, 40, 100), (13, 257, 7), (64, 96, 129), (1, 700, 257)]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

SKX_L1 = {"size": 32768, "ways": 8, "line": 64, "sets": 64}
SKX_L2 = {"size": 1 << 20, "ways": 16, "line": 64, "sets": 1024}
ZEN4_L2 = {"size": 1 << 20, "ways": 8, "line": 64, "sets": 2048}


@pytest.fixture
def use_config(request):
    kernel, spec = request.param
    kernels.set_gemm_kernel(kernel)
    kernels.set_gemm_config(spec)
    yield request.param
    kernels.set_gemm_kernel("auto")
    kernels.set_gemm_config("auto")


@pytest.fixture
def restore_config():
    yield
    kernels.set_gemm_kernel("auto")
    kernels.set_gemm_config("auto")


def _config_id(param) -> str:
    return f"{param[0]}:{param[1]}"


@pytest.mark.parametrize("use_config", CONFIGS, indirect=True, ids=_config_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_configuration_matches_the_reference(use_config, dtype, trans_a, trans_b, layout, m, n, k):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = with_layout(rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype), layout)
    b = with_layout(rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype), layout)
    c = rng.standard_normal((m, n)).astype(dtype)
    twin = c.copy()
    kernels.gemm(a, b, c, alpha=1.25, beta=0.5, trans_a=trans_a, trans_b=trans_b)
    reference.gemm(a, b, twin, alpha=1.25, beta=0.5, trans_a=trans_a, trans_b=trans_b)
    scale = k * np.abs(a).max() * np.abs(b).max() + np.abs(twin).max()
    error = np.abs(c - twin).max()
    assert error <= RTOL[dtype] * scale, f"{use_config}: max |diff| = {error:.3e} (scale {scale:.3e})"


@pytest.mark.parametrize("use_config", CONFIGS, indirect=True, ids=_config_id)
@pytest.mark.parametrize("m,n,k,trans_b", [(300, 257, 200, True), (1, 1000, 300, False), (1, 257, 700, False)])
def test_configuration_is_bit_identical_with_one_and_two_threads(use_config, m, n, k, trans_b, restore_num_threads):
    # (1, n, k) with B not transposed: one row of C, split by columns among threads.
    rng = np.random.default_rng(11)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    results = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        results.append(kernels.gemm(a, b, trans_b=trans_b))
    assert np.array_equal(results[0], results[1])
    assert np.allclose(results[0], reference.gemm(a, b, trans_b=trans_b), rtol=1e-4, atol=1e-3)


def test_the_configuration_describes_itself():
    kernels.set_gemm_config("auto")
    config = kernels.gemm_config()
    assert config["kernel"] == kernels.gemm_kernel() == KERNELS[0]
    assert config["source"] in ("table", "model", "default")
    assert config["name"] in [*NAMES, "default"]
    assert config["reason"]
    for dtype, width in (("float32", 4), ("float64", 8)):
        b = config[dtype]
        assert set(b) == {"mr", "nr", "kc", "nc", "prefetch"}
        assert b["mr"] >= 1 and b["nr"] >= 1 and b["kc"] >= 8
        assert b["nc"] % b["nr"] == 0, f"{dtype}: NC {b['nc']} is not whole panels of {b['nr']}"


def test_a_cpu_in_the_table_gets_its_entry():
    cpu = kernels.cpu_info()
    kernels.set_gemm_config("auto")
    config = kernels.gemm_config()
    if cpu["vendor"] == "AuthenticAMD" and cpu["family"] == 25 and KERNELS[0] == "avx512":
        assert (config["name"], config["source"]) == ("zen4", "table")
    elif cpu["vendor"] == "GenuineIntel" and cpu["family"] == 6 and cpu["model"] == 85 and KERNELS[0] == "avx512":
        assert (config["name"], config["source"]) == ("skx", "table")
    else:
        assert config["source"] in ("model", "default")


def test_a_forced_kernel_brings_its_own_tile(restore_config):
    kernels.set_gemm_kernel("portable")
    config = kernels.gemm_config()
    assert config["kernel"] == "portable" and config["source"] == "forced"
    assert config["float32"]["nr"] < 32
    kernels.set_gemm_kernel("auto")
    assert kernels.gemm_config()["kernel"] == KERNELS[0]


def test_overrides_apply_and_auto_restores(restore_config):
    kernels.set_gemm_config("kc=96,nc=100,prefetch=1")
    config = kernels.gemm_config()
    assert config["source"] == "forced" and config["name"].endswith("kc=96,nc=100,prefetch=1")
    for dtype in ("float32", "float64"):
        b = config[dtype]
        assert b["kc"] == 96 and b["prefetch"] is True
        assert b["nc"] >= 100 and b["nc"] % b["nr"] == 0 and b["nc"] - 100 < b["nr"]
    kernels.set_gemm_config("auto")
    assert kernels.gemm_config()["source"] in ("table", "model", "default")


def test_a_table_name_brings_its_kernel_and_overrides_keep_the_current_one(restore_config):
    if "avx2" not in KERNELS or KERNELS[0] == "avx2":
        pytest.skip("needs a CPU with a kernel better than avx2")
    table_names = [name for name in NAMES if name != "model"]
    for spec, kernel in (("kc=64", "avx2"), ("model", "avx2"), (table_names[0], KERNELS[0]), ("auto", KERNELS[0])):
        kernels.set_gemm_kernel("avx2")
        kernels.set_gemm_config(spec)
        assert kernels.gemm_config()["kernel"] == kernel, spec


def test_overrides_are_named_by_their_values(restore_config):
    kernels.set_gemm_config(" kc = 0008 ,nc=1")
    config = kernels.gemm_config()
    assert config["name"].endswith(",kc=8,nc=1")
    assert config["float32"]["nc"] == config["float32"]["nr"]  # rounded up to one panel


def test_a_large_kc_does_not_grow_the_buffers_of_a_short_k():
    # The packing buffer holds a KC × NC block of B: sized from min(KC, K), a K of 8
    # with KC 8192 and NC 65536 needs 8 · 16384 values, not 8192 · 16384 (512 MiB).
    code = (
        "import resource, numpy as np, fastmlp as fm\n"
        "fm.set_num_threads(1)\n"
        "a = np.ones((64, 8), np.float32); b = np.ones((8, 16384), np.float32)\n"
        "fm.kernels.gemm(a, b)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "fm.kernels.set_gemm_config('kc=8192,nc=65536')\n"
        "c = fm.kernels.gemm(a, b)\n"
        "assert (c == 8).all()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_kib = int(out.stdout)
    assert grown_kib < 64 * 1024, f"max RSS grew by {grown_kib} KiB"


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "empty"),
        ("auto,", "an empty field"),
        ("kc=64,,nc=64", "an empty field"),
        ("kc=64,kc=128", "'kc' given twice"),
        ("nehalem", "not a configuration"),
        ("kc=4", r"kc must be an integer in \[8, 8192\]"),
        ("kc=abc", "kc must be an integer"),
        ("nc=0", "nc must be an integer"),
        ("prefetch=2", "prefetch must be an integer in \\[0, 1\\]"),
        ("auto,mc=3", "unknown key 'mc'"),
        ("auto,kc", "expected key=value"),
        ("kc=99999999999", "kc must be an integer"),
    ],
)
def test_a_bad_spec_is_refused_and_changes_nothing(spec, match):
    before = kernels.gemm_config()
    with pytest.raises(ValueError, match=match):
        kernels.set_gemm_config(spec)
    assert kernels.gemm_config() == before


def test_a_spec_must_be_a_string():
    with pytest.raises(TypeError, match="spec"):
        kernels.set_gemm_config(256)


def _config_in_subprocess(env: dict) -> dict:
    code = "import json, fastmlp.kernels as k; print(json.dumps(k.gemm_config()))"
    full_env = {**os.environ, **env}
    for name in ("FASTMLP_GEMM_CONFIG", "FASTMLP_GEMM_KERNEL"):
        if name not in env:
            full_env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=True)
    assert out.stderr == ""
    return json.loads(out.stdout)


def test_the_environment_sets_the_first_choice():
    name = NAMES[0]
    config = _config_in_subprocess({"FASTMLP_GEMM_CONFIG": f"{name},kc=64"})
    assert config["source"] == "environment" and config["name"] == f"{name},kc=64"
    assert config["float32"]["kc"] == config["float64"]["kc"] == 64


def test_a_bad_environment_value_is_ignored_and_said_so():
    config = _config_in_subprocess({"FASTMLP_GEMM_CONFIG": "kc=zero"})
    assert config["source"] in ("table", "model", "default")
    assert "FASTMLP_GEMM_CONFIG ignored" in config["reason"] and "kc must be" in config["reason"]
    config = _config_in_subprocess({"FASTMLP_GEMM_KERNEL": "sse9"})
    assert "FASTMLP_GEMM_KERNEL='sse9' ignored" in config["reason"]


def test_the_environment_kernel_and_config_combine():
    config = _config_in_subprocess({"FASTMLP_GEMM_KERNEL": "portable", "FASTMLP_GEMM_CONFIG": "nc=64"})
    assert config["kernel"] == "portable" and config["float32"]["nc"] == 64


# ---- the analytical model ----------------------------------------------------------------


def test_the_model_on_skylake_sp_caches():
    # 32 KiB 8-way L1 (one way: 64 sets × 64 B = 4 KiB), 1 MiB 16-way L2 (64 KiB a way).
    f32 = _core._gemm_model_blocking(SKX_L1, SKX_L2, 12, 32, 4)
    assert (f32["kc"], f32["nc"], f32["prefetch"]) == (336, 672, True)  # 4 ways for the sliver; 14 for B
    f64 = _core._gemm_model_blocking(SKX_L1, SKX_L2, 12, 16, 8)
    assert (f64["kc"], f64["nc"]) == (168, 672)


def test_the_model_on_zen4_caches():
    f32 = _core._gemm_model_blocking(SKX_L1, ZEN4_L2, 12, 32, 4)
    assert (f32["kc"], f32["nc"]) == (336, 576)  # an 8-way L2 leaves 6 ways (768 KiB) for B


@pytest.mark.parametrize("l1_kib,l1_ways,l2_kib,l2_ways", [(32, 8, 256, 4), (48, 12, 2048, 16), (64, 4, 512, 8), (16, 2, 128, 2)])
@pytest.mark.parametrize("mr,nr,size", [(12, 32, 4), (12, 16, 8), (6, 16, 4), (4, 8, 8)])
def test_the_model_keeps_its_blocks_in_their_caches(l1_kib, l1_ways, l2_kib, l2_ways, mr, nr, size):
    l1 = {"size": l1_kib * 1024, "ways": l1_ways, "line": 64, "sets": l1_kib * 1024 // (64 * l1_ways)}
    l2 = {"size": l2_kib * 1024, "ways": l2_ways, "line": 64, "sets": l2_kib * 1024 // (64 * l2_ways)}
    b = _core._gemm_model_blocking(l1, l2, mr, nr, size)
    assert b["kc"] % 8 == 0 and 64 <= b["kc"] <= 1024
    if b["kc"] > 64:  # unless clamped up: the A sliver fits half of L1
        assert mr * b["kc"] * size <= l1["size"] // 2
    assert b["nc"] % nr == 0 and b["nc"] >= nr
    if b["nc"] > nr:  # unless clamped up: the B block leaves L2 room for the sliver and C
        assert b["kc"] * b["nc"] * size <= l2["size"] * (l2_ways - 1) // l2_ways


@pytest.mark.parametrize("bad", [{"ways": 0}, {"sets": 0}, {"line": 8}, {"size": 1024}, {"sets": 2**58},
                                 {"ways": 2**31}, {"line": 2**40}, {"ways": 4096}])
def test_the_model_refuses_impossible_caches(bad):
    with pytest.raises(ValueError, match="gemm_model_blocking"):
        _core._gemm_model_blocking({**SKX_L1, **bad}, SKX_L2, 12, 32, 4)


# ---- switching while others multiply -----------------------------------------------------


def test_switching_configurations_while_other_threads_multiply():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((150, 90)).astype(np.float32)
    b = rng.standard_normal((90, 130)).astype(np.float32)
    want = reference.gemm(a, b)
    specs = [*NAMES, "auto,kc=16,nc=32", "auto,prefetch=1", "auto"]
    failures: list[str] = []
    stop = threading.Event()

    def multiply():
        while not stop.is_set():
            got = kernels.gemm(a, b)
            if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
                failures.append(f"max |diff| {np.abs(got - want).max():.3e}")
                return

    workers = [threading.Thread(target=multiply) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for _ in range(30):
            for spec in specs:
                kernels.set_gemm_config(spec)
    finally:
        stop.set()
        for w in workers:
            w.join()
        kernels.set_gemm_config("auto")
    assert not failures, failures


# ---- the choice for CPUs we may not have (recorded CPUID dumps) ---------------------------

from test_cpu import CASCADE_LAKE, ZEN4, brand_leaves, with_entries  # noqa: E402

X86 = platform.machine().lower() in ("x86_64", "amd64")  # x86-64 builds have the avx512 and avx2 kernels
needs_x86 = pytest.mark.skipif(not X86, reason="the x86 kernels are not in this build")

# Ice Lake-SP (family 6 model 106): L1d 48 KiB 12-way, L2 1.25 MiB 20-way; no table entry.
ICE_LAKE = with_entries(
    {**CASCADE_LAKE, **brand_leaves("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")},
    l_00000001_0=(0x000606A6, 0x00400800, 0x7FFEFBFF, 0xBFEBFBFF),
    l_00000004_0=(0x7C004121, 0x02C0003F, 0x0000003F, 0x00000000),
    l_00000004_2=(0x7C004143, 0x04C0003F, 0x000003FF, 0x00000000),
)


@needs_x86
def test_zen4_gets_its_table_entry():
    config = _core._gemm_config_for(ZEN4)
    assert (config["name"], config["kernel"], config["source"]) == ("zen4", "avx512", "table")


@needs_x86
@pytest.mark.parametrize("brand", ["Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz",
                                   "Intel(R) Xeon(R) Gold 5122 CPU @ 3.60GHz", "Intel(R) Xeon(R) CPU @ 2.00GHz",
                                   "Intel(R) Xeon(R) Gold 5318H CPU @ 2.50GHz"])
def test_skylake_sp_with_two_fma_units_gets_the_skx_entry(brand):
    config = _core._gemm_config_for({**CASCADE_LAKE, **brand_leaves(brand)})
    assert (config["name"], config["kernel"], config["source"]) == ("skx", "avx512", "table")
    assert config["float32"]["prefetch"] and (config["float32"]["kc"], config["float32"]["nc"]) == (384, 480)


@needs_x86
@pytest.mark.parametrize("brand", ["Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz", "Intel(R) Xeon(R) Bronze 3104 CPU @ 1.70GHz",
                                   "Intel(R) Xeon(R) Gold 5118 CPU @ 2.30GHz", "Intel(R) Xeon(R) Gold 5218 CPU @ 2.30GHz",
                                   "Intel(R) Core(TM) i7-7800X CPU @ 3.50GHz"])
def test_skylake_sp_with_one_fma_unit_runs_avx2(brand):
    config = _core._gemm_config_for({**CASCADE_LAKE, **brand_leaves(brand)})
    assert config["kernel"] == "avx2" and config["source"] == "model"
    assert "one 512-bit FMA unit" in config["reason"]
    assert (config["float32"]["mr"], config["float32"]["nr"]) == (6, 16)


@needs_x86
def test_an_unseen_cpu_gets_the_model_from_its_caches():
    config = _core._gemm_config_for(ICE_LAKE)
    assert (config["name"], config["kernel"], config["source"]) == ("model", "avx512", "model")
    assert "L1 48 KiB 12-way" in config["reason"] and "L2 1280 KiB 20-way" in config["reason"]
    # 6 of 12 L1 ways for the 12-row sliver: 6 · 4 KiB / 48 B = 512; 18 of 20 L2 ways for B.
    assert (config["float32"]["kc"], config["float32"]["nc"]) == (512, 576)


@needs_x86
def test_without_the_os_saving_zmm_registers_avx2_is_chosen():
    config = _core._gemm_config_for(ZEN4, xcr0=0x7)
    assert config["kernel"] == "avx2" and config["source"] == "model"


def test_without_cache_information_the_kernel_defaults_are_used():
    config = _core._gemm_config_for({(0, 0): (0x1, 0x756E6547, 0x6C65746E, 0x49656E69)})
    assert config["source"] == "default" and config["kernel"] == "portable"
