"""CPU detection (cpp/src/cpu.cpp): recorded CPUID dumps of a Zen 4 and a Cascade Lake
decoded field by field, the fallbacks (AMD's legacy leaves, sysfs), tables that are
empty or garbage, and the live cpu_info() held to /proc/cpuinfo and sysfs."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from fastmlp import _core

KIB, MIB = 1024, 1024 * 1024
FEATURES = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]


def brand_leaves(brand: str) -> dict:
    """CPUID 0x80000002..4 for `brand`: 48 bytes, NUL-padded, four little-endian registers a leaf."""
    raw = brand.encode("ascii").ljust(48, b"\0")
    words = struct.unpack("<12I", raw)
    return {(0x80000002 + i, 0): words[4 * i:4 * i + 4] for i in range(3)}


def cache(level, unified, size, ways, line, sets, shared_by):
    return dict(level=level, unified=unified, size=size, ways=ways, line=line, sets=sets, shared_by=shared_by)


# AMD EPYC (Zen 4, family 25 model 17 stepping 1) under KVM, 2 vCPUs: recorded with
# __cpuid_count on the project's build machine, every leaf the decoder reads and a few more.
ZEN4 = {
    (0x00000000, 0): (0x0000001C, 0x68747541, 0x444D4163, 0x69746E65),
    (0x00000001, 0): (0x00A10F11, 0x00020800, 0xFFFA3203, 0x178BFBFF),
    (0x00000004, 0): (0x00000000, 0x00000000, 0x00000000, 0x00000000),
    (0x00000007, 0): (0x00000001, 0xF1BF07AB, 0x00405FC6, 0x00000010),
    (0x00000007, 1): (0x00000020, 0x00000000, 0x00000000, 0x00000000),
    (0x0000000D, 0): (0x000000E7, 0x00000980, 0x00000980, 0x00000000),
    (0x80000000, 0): (0x80000021, 0x68747541, 0x444D4163, 0x69746E65),
    (0x80000001, 0): (0x00A10F11, 0x40000000, 0x004003F3, 0x2FD3FBFF),
    (0x80000002, 0): (0x20444D41, 0x43595045, 0x00000000, 0x00000000),
    (0x80000003, 0): (0x00000000, 0x00000000, 0x00000000, 0x00000000),
    (0x80000004, 0): (0x00000000, 0x00000000, 0x00000000, 0x00000000),
    (0x80000005, 0): (0xFF48FF40, 0xFF48FF40, 0x20080140, 0x20080140),
    (0x80000006, 0): (0x5C002200, 0x6C004200, 0x04006140, 0x0A009140),
    (0x80000008, 0): (0x00303030, 0x50020005, 0x00007001, 0x00000000),
    (0x8000001D, 0): (0x00000121, 0x01C0003F, 0x0000003F, 0x00000000),
    (0x8000001D, 1): (0x00000122, 0x01C0003F, 0x0000003F, 0x00000000),
    (0x8000001D, 2): (0x00000143, 0x01C0003F, 0x000007FF, 0x00000002),
    (0x8000001D, 3): (0x00004163, 0x03C0003F, 0x00007FFF, 0x00000001),
    (0x8000001D, 4): (0x00000000, 0x00000000, 0x00000000, 0x00000000),
}
ZEN4_CACHES = [
    cache(1, False, 32 * KIB, 8, 64, 64, 1),
    cache(2, True, 1 * MIB, 8, 64, 2048, 1),
    cache(3, True, 32 * MIB, 16, 64, 32768, 2),  # one CCX's L3; EAX[25:14] + 1 = 2 here (the VM's 2 vCPUs)
]

# Xeon Gold 6248 (Cascade Lake, family 6 model 85 stepping 7), built from the Intel SDM's
# encodings: leaf 4 lists L1d, L1i, L2, L3 (EAX: type | level << 5 | self-init | (sharing
# - 1) << 14 | (cores - 1) << 26; EBX: (ways - 1) << 22 | (partitions - 1) << 12 | (line - 1);
# ECX: sets - 1); leaf 7 EBX has AVX2 (5) and AVX512F (16), ECX AVX512_VNNI (11), and
# EAX = 0: no subleaf 1, so no BF16.
CASCADE_LAKE = {
    (0x00000000, 0): (0x00000016, 0x756E6547, 0x6C65746E, 0x49656E69),
    (0x00000001, 0): (0x00050657, 0x00400800, 0x7FFEFBFF, 0xBFEBFBFF),
    (0x00000004, 0): (0x7C004121, 0x01C0003F, 0x0000003F, 0x00000000),  # L1d 32 KiB 8-way
    (0x00000004, 1): (0x7C004122, 0x01C0003F, 0x0000003F, 0x00000000),  # L1i 32 KiB 8-way
    (0x00000004, 2): (0x7C004143, 0x03C0003F, 0x000003FF, 0x00000000),  # L2 1 MiB 16-way
    (0x00000004, 3): (0x7C0FC163, 0x0280003F, 0x00009FFF, 0x00000004),  # L3 27.5 MiB 11-way
    (0x00000004, 4): (0x00000000, 0x00000000, 0x00000000, 0x00000000),
    (0x00000007, 0): (0x00000000, 0xD39FFFFB, 0x00000818, 0xBC000400),
    (0x80000000, 0): (0x80000008, 0x00000000, 0x00000000, 0x00000000),
    (0x80000001, 0): (0x00000000, 0x00000000, 0x00000121, 0x2C100800),
    (0x80000006, 0): (0x00000000, 0x00000000, 0x04008040, 0x00000000),
    **brand_leaves("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"),
}
CASCADE_LAKE_CACHES = [
    cache(1, False, 32 * KIB, 8, 64, 64, 2),
    cache(2, True, 1 * MIB, 16, 64, 1024, 2),
    cache(3, True, 27 * MIB + 512 * KIB, 11, 64, 40960, 64),  # 1.375 MiB per core · 20 cores
]


def with_entries(table: dict, **entries) -> dict:
    """`table` with some leaves replaced: with_entries(t, l_80000001_0=(...))."""
    changed = dict(table)
    for key, registers in entries.items():
        _, leaf, subleaf = key.split("_")
        changed[(int(leaf, 16), int(subleaf))] = registers
    return changed


def test_zen4_dump_decodes_field_by_field():
    info = _core._decode_cpuid(ZEN4)
    assert info == {
        "vendor": "AuthenticAMD", "family": 25, "model": 17, "stepping": 1, "brand": "AMD EPYC",
        "caches": ZEN4_CACHES, "cache_source": "cpuid leaf 0x8000001D", "features": FEATURES,
    }


def test_cascade_lake_dump_decodes_field_by_field():
    info = _core._decode_cpuid(CASCADE_LAKE)
    assert info == {
        "vendor": "GenuineIntel", "family": 6, "model": 85, "stepping": 7,
        "brand": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
        "caches": CASCADE_LAKE_CACHES, "cache_source": "cpuid leaf 4",
        "features": ["avx2", "fma", "avx512f", "avx512_vnni"],
    }


def test_family_and_model_fold_the_extended_fields_as_intel_and_amd_define():
    def decoded(leaf1_eax, vendor=CASCADE_LAKE):
        info = _core._decode_cpuid(with_entries(vendor, l_1_0=(leaf1_eax, 0, 0, 0)))
        return info["family"], info["model"], info["stepping"]

    assert decoded(0x000906EA) == (6, 0x9E, 0xA)  # Coffee Lake: family 6 takes the extended model
    assert decoded(0x00000F29) == (15, 2, 9)  # Pentium 4: family 15, extended family 0
    assert decoded(0x00800F82, ZEN4) == (0x17, 0x08, 2)  # Zen+: 0xF + 0x8, extended model 0
    assert decoded(0x00B40F40, ZEN4) == (0x1A, 0x44, 0)  # Zen 5
    assert decoded(0x00010673) == (6, 0x17, 3)
    assert decoded(0x00010543) == (5, 4, 3)  # family 5: the extended model is not folded in


def test_brand_is_trimmed_and_right_justified_brands_lose_their_spaces():
    table = {**CASCADE_LAKE, **brand_leaves("      Intel(R) Xeon(TM) CPU 3.00GHz  ")}
    assert _core._decode_cpuid(table)["brand"] == "Intel(R) Xeon(TM) CPU 3.00GHz"
    full = "x" * 48  # no NUL at all: all 48 characters
    assert _core._decode_cpuid({**CASCADE_LAKE, **brand_leaves(full)})["brand"] == full
    # Bytes that are not printable ASCII (garbage) become "?", so the text stays valid UTF-8.
    table = {**CASCADE_LAKE, (0x80000002, 0): (0x41A8FF09, 0x42, 0, 0)}
    assert _core._decode_cpuid(table)["brand"] == "???A" + "B"


def test_features_need_the_os_to_save_the_registers():
    # XCR0 bits 1, 2: SSE and AVX state; 5, 6, 7: opmask, ZMM_Hi256, Hi16_ZMM.
    assert _core._decode_cpuid(CASCADE_LAKE, xcr0=0xE7)["features"] == ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert _core._decode_cpuid(CASCADE_LAKE, xcr0=0x07)["features"] == ["avx2", "fma"]
    assert _core._decode_cpuid(CASCADE_LAKE, xcr0=0x67)["features"] == ["avx2", "fma"]
    assert _core._decode_cpuid(CASCADE_LAKE, xcr0=0x03)["features"] == []
    assert _core._decode_cpuid(ZEN4, xcr0=0x07)["features"] == ["avx2", "fma"]
    # OSXSAVE (leaf 1 ECX bit 27) clear: no AVX of any kind, whatever XCR0 says.
    leaf1 = ZEN4[(1, 0)]
    no_osxsave = with_entries(ZEN4, l_1_0=(leaf1[0], leaf1[1], leaf1[2] & ~(1 << 27), leaf1[3]))
    assert _core._decode_cpuid(no_osxsave)["features"] == []


def test_amd_without_topology_extensions_reads_the_legacy_leaves():
    ext1 = ZEN4[(0x80000001, 0)]
    legacy = with_entries(ZEN4, l_80000001_0=(ext1[0], ext1[1], ext1[2] & ~(1 << 22), ext1[3]))
    info = _core._decode_cpuid(legacy)
    assert info["cache_source"] == "cpuid leaf 0x80000005/6"
    # L3 associativity 9 means "see 0x8000001D": ways and sets unknown; 0x80000006 gives
    # the size in 512 KiB units, here the host package's 320 MiB, not the CCX's 32.
    assert info["caches"] == [
        cache(1, False, 32 * KIB, 8, 64, 64, 0),
        cache(2, True, 1 * MIB, 8, 64, 2048, 0),
        cache(3, True, 320 * MIB, 0, 64, 0, 0),
    ]


def test_legacy_associativity_codes_decode_as_the_amd_tables_say():
    # Phenom II X4 (family 10h): L1d 64 KiB 2-way; L2 512 KiB 16-way (code 8); L3 6 MiB 48-way (code 0xB).
    phenom = {
        (0, 0): (0x00000005, 0x68747541, 0x444D4163, 0x69746E65),
        (1, 0): (0x00100F42, 0, 0, 0),
        (0x80000000, 0): (0x8000001B, 0, 0, 0),
        (0x80000005, 0): (0, 0, 0x40020140, 0),
        (0x80000006, 0): (0, 0, 0x02008140, 0x0030B140),
    }
    info = _core._decode_cpuid(phenom)
    assert (info["family"], info["model"]) == (0x10, 4)
    assert info["caches"] == [
        cache(1, False, 64 * KIB, 2, 64, 512, 0),
        cache(2, True, 512 * KIB, 16, 64, 512, 0),
        cache(3, True, 6 * MIB, 48, 64, 2048, 0),
    ]
    # Fully associative (0xF): one set; L3 disabled (associativity 0): left out; L1 0xFF: fully associative.
    odd = with_entries(phenom, l_80000005_0=(0, 0, 0x04FF0140, 0), l_80000006_0=(0, 0, 0x0200F140, 0x00300140))
    assert _core._decode_cpuid(odd)["caches"] == [
        cache(1, False, 4 * KIB, 64, 64, 1, 0),
        cache(2, True, 512 * KIB, 8192, 64, 1, 0),
    ]
    # Hygon (a Zen licensee) takes the AMD paths too.
    hygon = with_entries(phenom, l_0_0=(0x0000000D, 0x6F677948, 0x656E6975, 0x6E65476E))
    assert _core._decode_cpuid(hygon)["vendor"] == "HygonGenuine"
    assert _core._decode_cpuid(hygon)["cache_source"] == "cpuid leaf 0x80000005/6"


def test_an_empty_or_max_leaf_0_table_gives_nothing_and_no_crash():
    nothing = {"vendor": "", "family": 0, "model": 0, "stepping": 0, "brand": "", "caches": [],
               "cache_source": "none", "features": []}
    assert _core._decode_cpuid({}) == nothing
    # Max leaf 0: leaves 1, 4 and 7 are not read, even though this table has them.
    info = _core._decode_cpuid(with_entries(CASCADE_LAKE, l_0_0=(0, *CASCADE_LAKE[(0, 0)][1:]),
                                            l_80000000_0=(0, 0, 0, 0)))
    assert info == {**nothing, "vendor": "GenuineIntel"}
    # No extended leaves: 0x80000000 echoes the highest basic leaf (Intel) and is not believed.
    info = _core._decode_cpuid(with_entries(CASCADE_LAKE, l_80000000_0=(0x16, 0, 0, 0)))
    assert info["brand"] == "" and info["caches"] == CASCADE_LAKE_CACHES


def test_garbage_caches_are_dropped_and_the_loops_end():
    base = {key: value for key, value in CASCADE_LAKE.items() if key[0] != 4}
    l1d = CASCADE_LAKE[(4, 0)]
    garbage = {
        **base,
        (4, 0): (0x00000001, 0x01C0003F, 0x3F, 0),  # level 0
        (4, 1): (0x000000A1, 0x01C0003F, 0x3F, 0),  # level 5
        (4, 2): (0x00000041, 0xFFFFFFFF, 0xFFFFFFFF, 0),  # 2^64 bytes: wraps, dropped
        (4, 3): (0x00000041, 0x01C0002F, 0x3F, 0),  # line 48: not a power of two
        (4, 4): (0x0000004C, 0x01C0003F, 0x3F, 0),  # reserved type 12: skipped
        (4, 5): (0x00000063, 0xFFC0003F, 0xFFFFFFFF, 0),  # 1024 ways · 2^32 sets: past 1 TiB
        (4, 6): l1d,
    }
    assert _core._decode_cpuid(garbage)["caches"] == [CASCADE_LAKE_CACHES[0]]
    # A table that never ends its cache list: the decoder stops by itself, keeps one per level.
    endless = {**base, **{(4, subleaf): l1d for subleaf in range(1000)}}
    assert _core._decode_cpuid(endless)["caches"] == [CASCADE_LAKE_CACHES[0]]
    # AMD legacy: L1 associativity 0 (reserved) and lines of 0 bytes are dropped.
    ext1 = ZEN4[(0x80000001, 0)]
    legacy = with_entries(ZEN4, l_80000001_0=(ext1[0], ext1[1], 0, ext1[3]),
                          l_80000005_0=(0, 0, 0x20000140, 0), l_80000006_0=(0, 0, 0x04006100, 0xFFFFFFFF))
    assert _core._decode_cpuid(legacy)["caches"] == []
    assert _core._decode_cpuid(legacy)["cache_source"] == "none"


def test_random_tables_never_crash_and_give_plausible_caches():
    rng = random.Random(10)
    leaves = [(0, 0), (1, 0), (7, 0), (7, 1), (0x80000000, 0), (0x80000001, 0), (0x80000005, 0),
              (0x80000006, 0)] + [(leaf, s) for leaf in (4, 0x8000001D) for s in range(6)]
    for _ in range(300):
        table = {key: tuple(rng.getrandbits(32) for _ in range(4)) for key in leaves}
        if rng.random() < 0.5:
            table[(0, 0)] = (rng.choice([0, 1, 4, 7, 0x20]), *ZEN4[(0, 0)][1:])
        if rng.random() < 0.5:
            table[(0x80000000, 0)] = (rng.choice([0x80000004, 0x80000006, 0x80000021]), 0, 0, 0)
        info = _core._decode_cpuid(table, xcr0=rng.getrandbits(64))
        levels = [c["level"] for c in info["caches"]]
        assert levels == sorted(set(levels)) and all(1 <= level <= 4 for level in levels)
        for c in info["caches"]:
            assert 0 < c["size"] <= 1 << 40 and c["ways"] >= 0 and c["sets"] >= 0
            assert c["line"] in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
        assert set(info["features"]) <= set(FEATURES)


def test_table_values_must_be_32_bit_registers():
    with pytest.raises(TypeError):
        _core._decode_cpuid({(0, 0): (1 << 32, 0, 0, 0)})
    with pytest.raises(TypeError):
        _core._decode_cpuid({(0, 0): (0, 0, 0)})


def write_sysfs_cache(directory: Path, entry: int, **files: str) -> None:
    index = directory / f"index{entry}"
    index.mkdir(parents=True)
    for name, text in files.items():
        (index / name).write_text(text + "\n")


def test_sysfs_caches_are_read_and_garbage_dropped(tmp_path):
    write_sysfs_cache(tmp_path, 0, level="1", type="Data", size="48K", ways_of_associativity="12",
                      coherency_line_size="64", number_of_sets="64", shared_cpu_list="0-1")
    write_sysfs_cache(tmp_path, 1, level="1", type="Instruction", size="32K")
    write_sysfs_cache(tmp_path, 2, level="2", type="Unified", size="2048K", ways_of_associativity="16",
                      coherency_line_size="64", number_of_sets="2048", shared_cpu_list="0-3,8")
    # No size file (some arm64 kernels): ways · line · sets.
    write_sysfs_cache(tmp_path, 3, level="3", type="Unified", ways_of_associativity="12",
                      coherency_line_size="64", number_of_sets="40960")
    write_sysfs_cache(tmp_path, 4, level="4", type="Unified", size="99999999999G")  # absurd
    write_sysfs_cache(tmp_path, 5, level="9", type="Data", size="32K")  # no such level
    assert _core._read_sysfs_caches(str(tmp_path)) == [
        cache(1, False, 48 * KIB, 12, 64, 64, 2),
        cache(2, True, 2 * MIB, 16, 64, 2048, 5),
        cache(3, True, 30 * MIB, 12, 64, 40960, 0),
    ]
    # Ways 0 and no line or sets: the size is all there is.
    write_sysfs_cache(tmp_path / "bare", 0, level="2", type="Unified", size="1M", ways_of_associativity="0")
    assert _core._read_sysfs_caches(str(tmp_path / "bare")) == [cache(2, True, 1 * MIB, 0, 0, 0, 0)]
    write_sysfs_cache(tmp_path / "bad", 0, level="1", type="Data", size="x", ways_of_associativity="-3")
    assert _core._read_sysfs_caches(str(tmp_path / "bad")) == []
    assert _core._read_sysfs_caches(str(tmp_path / "missing")) == []


# ---- this machine ------------------------------------------------------------------------

def proc_cpuinfo() -> dict:
    """The first processor's fields in /proc/cpuinfo ({} when there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def test_cpu_info_agrees_with_proc_cpuinfo():
    info = _core.cpu_info()
    assert _core.cpu_info() == info  # detected once; a new dict each call
    proc = proc_cpuinfo()
    if "vendor_id" not in proc:
        pytest.skip("/proc/cpuinfo has no x86 vendor_id here")
    assert info["vendor"] == proc["vendor_id"]
    assert info["family"] == int(proc["cpu family"])
    assert info["model"] == int(proc["model"])
    if proc.get("stepping", "unknown") != "unknown":
        assert info["stepping"] == int(proc["stepping"])
    if proc.get("model name", "unknown") != "unknown":  # the kernel's word for no brand string
        assert info["brand"] == proc["model name"]
    # The kernel lists a feature only when the CPU has it and XCR0 enables its state, as we do.
    flags = set(proc.get("flags", "").split())
    assert info["features"] == [name for name in FEATURES if name in flags]


SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def test_cpu_info_agrees_with_sysfs():
    info = _core.cpu_info()
    if not (SYSFS_CACHE / "index0" / "type").exists():
        pytest.skip(f"no {SYSFS_CACHE} here")
    from_sysfs = _core._read_sysfs_caches(str(SYSFS_CACHE))
    assert from_sysfs, "sysfs lists caches but none was read"
    by_level = {c["level"]: c for c in info["caches"]}
    assert set(by_level) == {c["level"] for c in from_sysfs}
    for listed in from_sysfs:
        ours = by_level[listed["level"]]
        # The kernel reads the same CPUID leaves; shared_by differs by design (CPUID's
        # addressable IDs against the processors that exist), so it is not compared.
        assert ours["unified"] == listed["unified"], (ours, listed)
        for field in ("size", "ways", "line", "sets"):
            if listed[field] != 0:  # 0: the file is absent
                assert ours[field] == listed[field], (field, ours, listed)
    # And the raw files, read here rather than by the code under test.
    for index in sorted(SYSFS_CACHE.glob("index*")):
        size_file, type_file = index / "size", index / "type"
        if not size_file.exists() or type_file.read_text().strip() == "Instruction":
            continue
        level = int((index / "level").read_text())
        size = size_file.read_text().strip()
        expected = int(size[:-1]) * {"K": KIB, "M": MIB}[size[-1]] if size[-1] in "KM" else int(size)
        assert by_level[level]["size"] == expected, (index.name, by_level[level])
