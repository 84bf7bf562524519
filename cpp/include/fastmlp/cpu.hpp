// fastmlp/cpu.hpp — what CPU this is, read at run time: vendor, family/model, brand,
// the SIMD features the GEMM kernels need, and the data cache hierarchy that the GEMM
// blocking (KC, NC) is chosen from.
//
// Sources, in order: CPUID (leaf 4 on Intel and others, 0x8000001D on AMD/Hygon with
// topology extensions, the legacy 0x80000005/6 otherwise), then Linux's sysfs
// (/sys/devices/system/cpu/cpu0/cache) when CPUID gives no caches or there is no CPUID
// (arm64 and others: the vendor stays ""). Nothing here throws or prints.
//
// decode_cpuid is the whole CPUID decoding with the instruction replaced by a callback,
// so recorded dumps of other CPUs can be decoded in tests.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fastmlp/common.hpp"

namespace fastmlp {

// One data or unified cache (instruction caches are left out). A field that the source
// does not give is 0: ways and sets for AMD's legacy "see leaf 0x8000001D" associativity,
// shared_by for the legacy leaves and for sysfs without shared_cpu_list.
struct CacheInfo {
    int level = 0;        // 1, 2, 3, 4
    bool unified = false;  // false: data cache
    index size = 0;       // bytes: ways · partitions · line · sets
    int ways = 0;
    int line = 0;         // bytes
    index sets = 0;
    // Logical processors that share it. From CPUID this is the maximum number of
    // addressable IDs (EAX[25:14] + 1), which can exceed the processors that exist.
    int shared_by = 0;
};

struct CpuInfo {
    std::string vendor;  // "GenuineIntel", "AuthenticAMD", or what CPUID says (trimmed); "" when no CPUID
    int family = 0, model = 0, stepping = 0;  // display family/model (extended fields folded in)
    std::string brand;   // CPUID 0x80000002..4, trimmed ("" if absent)
    std::vector<CacheInfo> caches;  // data/unified caches in level order, one per level
    std::string cache_source = "none";  // "cpuid leaf 4", "cpuid leaf 0x8000001D",
                                        // "cpuid leaf 0x80000005/6", "sysfs", "none"
    // Usable features: the CPU has them and the OS saves their registers (XCR0).
    bool avx2 = false, fma = false, avx512f = false, avx512_vnni = false, avx512_bf16 = false;

    const CacheInfo* cache(int level) const;  // nullptr if unknown
};

// This CPU, detected on the first call (a thread-safe static); never throws.
const CpuInfo& cpu_info();

// CPUID (leaf, subleaf) -> {eax, ebx, ecx, edx}.
using CpuidFunction = std::function<std::array<std::uint32_t, 4>(std::uint32_t leaf, std::uint32_t subleaf)>;

// XCR0 with every state enabled: decode_cpuid's default, "the OS saves whatever the CPU has".
inline constexpr std::uint64_t xcr0_all_states = ~std::uint64_t{0};

// The decoding behind cpu_info() from a CPUID callback, without the sysfs fallback.
// `xcr0` is what XGETBV(0) returned (cpu_info passes the real one; only read when CPUID
// says OSXSAVE): AVX2/FMA need the SSE and AVX states (bits 1, 2), AVX-512 also the
// opmask and ZMM states (bits 5, 6, 7). Values that make no sense (a cache of size 0 or
// beyond 1 TiB, a line that is not a power of two, level 0) drop that cache; subleaf
// loops stop after 64 subleafs whatever the table says. Never throws except bad_alloc
// and what `cpuid` throws.
CpuInfo decode_cpuid(const CpuidFunction& cpuid, std::uint64_t xcr0 = xcr0_all_states);

// The data/unified caches listed under `directory` (index0, index1, ... with level, type,
// size, ways_of_associativity, coherency_line_size, number_of_sets, shared_cpu_list),
// in level order, one per level; empty when there is none. Never throws except bad_alloc.
std::vector<CacheInfo> read_sysfs_caches(const std::string& directory = "/sys/devices/system/cpu/cpu0/cache");

}  // namespace fastmlp
