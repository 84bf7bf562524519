// cpu.cpp — CPU detection for the GEMM's per-micro-architecture blocking (fastmlp/cpu.hpp).
//
// Compiled with baseline flags: CPUID and XGETBV are plain instructions, and nothing here
// may run AVX code before the features are known. Encodings: Intel SDM vol. 2A, CPUID
// (leaves 0, 1, 4, 7, 0x80000000..4); AMD APM vol. 3 appendix E and the family 17h/19h
// PPRs (0x80000001, 0x80000005/6, 0x8000001D).
#include "fastmlp/cpu.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define FASTMLP_HAVE_CPUID 1
#endif

namespace fastmlp {

const CacheInfo* CpuInfo::cache(int level) const {
    for (const CacheInfo& c : caches)
        if (c.level == level) return &c;
    return nullptr;
}

namespace {

using Registers = std::array<std::uint32_t, 4>;  // eax, ebx, ecx, edx
enum { eax, ebx, ecx, edx };

// Bits [low, low + count) of `value`.
constexpr std::uint32_t bits(std::uint32_t value, int low, int count) {
    return (value >> low) & ((count >= 32) ? ~0u : ((1u << count) - 1));
}
constexpr bool bit(std::uint32_t value, int position) { return (value >> position) & 1u; }

// Cache-parameter leaves list caches until a type-0 entry; a table that never says so
// (a broken hypervisor, a test's garbage) stops here.
constexpr std::uint32_t max_cache_subleafs = 64;
constexpr index max_cache_size = index{1} << 40;  // 1 TiB: beyond that a value is garbage

bool is_power_of_two(index x) { return x > 0 && (x & (x - 1)) == 0; }

// A cache worth reporting: a known level and a size that a real cache has. A line of 0 is
// allowed (sysfs without coherency_line_size); any other line is a power of two up to 4 KiB.
bool plausible(const CacheInfo& c) {
    return c.level >= 1 && c.level <= 4 && c.size > 0 && c.size <= max_cache_size && c.ways >= 0 &&
           c.sets >= 0 && c.shared_by >= 0 &&
           (c.line == 0 || (c.line >= 8 && c.line <= 4096 && is_power_of_two(c.line)));
}

// Level order, one cache per level (the first listed wins), implausible ones dropped.
std::vector<CacheInfo> tidy(std::vector<CacheInfo> caches) {
    caches.erase(std::remove_if(caches.begin(), caches.end(), [](const CacheInfo& c) { return !plausible(c); }),
                 caches.end());
    std::stable_sort(caches.begin(), caches.end(),
                     [](const CacheInfo& a, const CacheInfo& b) { return a.level < b.level; });
    caches.erase(std::unique(caches.begin(), caches.end(),
                             [](const CacheInfo& a, const CacheInfo& b) { return a.level == b.level; }),
                 caches.end());
    return caches;
}

// Intel leaf 4 and AMD leaf 0x8000001D share one encoding:
//   EAX[4:0] type (0 end, 1 data, 2 instruction, 3 unified), EAX[7:5] level,
//   EAX[25:14] + 1 logical processors sharing it; EBX[11:0] + 1 line size,
//   EBX[21:12] + 1 physical line partitions, EBX[31:22] + 1 ways; ECX + 1 sets.
std::vector<CacheInfo> deterministic_caches(const CpuidFunction& cpuid, std::uint32_t leaf) {
    std::vector<CacheInfo> caches;
    for (std::uint32_t subleaf = 0; subleaf < max_cache_subleafs; ++subleaf) {
        const Registers r = cpuid(leaf, subleaf);
        const std::uint32_t type = bits(r[eax], 0, 5);
        if (type == 0) break;
        if (type != 1 && type != 3) continue;  // instruction caches and reserved types
        const std::uint64_t line = bits(r[ebx], 0, 12) + 1u, partitions = bits(r[ebx], 12, 10) + 1u;
        const std::uint64_t ways = bits(r[ebx], 22, 10) + 1u, sets = std::uint64_t{r[ecx]} + 1u;
        // At most 2^12 · 2^10 · 2^10 · 2^32: the product can wrap, and a wrapped size
        // must not pass for a small one.
        std::uint64_t size = 0;
        if (__builtin_mul_overflow(line * partitions, ways, &size) || __builtin_mul_overflow(size, sets, &size) ||
            size > static_cast<std::uint64_t>(max_cache_size))
            continue;
        CacheInfo c;
        c.level = static_cast<int>(bits(r[eax], 5, 3));
        c.unified = type == 3;
        c.size = static_cast<index>(size);
        c.ways = static_cast<int>(ways);
        c.line = static_cast<int>(line);
        c.sets = static_cast<index>(sets);
        c.shared_by = static_cast<int>(bits(r[eax], 14, 12) + 1);
        caches.push_back(c);
    }
    return tidy(std::move(caches));
}

// AMD's legacy 4-bit associativity field (0x80000006 L2 and L3): ways, 0 when the field
// defers to leaf 0x8000001D (9) or is reserved, -1 when disabled (0), fully associative
// as -2. Family 10h and earlier use the exact values; 17h+ read 4, 8, 16, ... as "4 to 5",
// "8 to 15", "16 to 31": the low end is what they are.
int legacy_associativity(std::uint32_t field) {
    switch (field) {
        case 0x0: return -1;
        case 0x1: return 1;
        case 0x2: return 2;
        case 0x3: return 3;
        case 0x4: return 4;
        case 0x5: return 6;
        case 0x6: return 8;
        case 0x8: return 16;
        case 0xA: return 32;
        case 0xB: return 48;
        case 0xC: return 64;
        case 0xD: return 96;
        case 0xE: return 128;
        case 0xF: return -2;
        default: return 0;  // 0x7 reserved, 0x9 "see 0x8000001D"
    }
}

// A legacy cache from its size, associativity (as legacy_associativity, or the L1 byte
// with 0xFF fully associative) and line; level 0 (dropped) when disabled or unusable.
CacheInfo legacy_cache(int level, bool unified, index size, int ways, int line) {
    CacheInfo c;
    if (ways == -1 || line <= 0) return c;
    if (ways == -2) {  // fully associative: one set
        if (size / line > (1 << 30)) return c;
        ways = static_cast<int>(size / line);
    }
    c.level = level;
    c.unified = unified;
    c.size = size;
    c.ways = ways;
    c.line = line;
    c.sets = ways > 0 ? size / (index{ways} * line) : 0;
    return c;
}

// AMD before topology extensions: 0x80000005 ECX = L1d (size KiB [31:24], ways [23:16],
// line [7:0]); 0x80000006 ECX = L2 (size KiB [31:16], associativity [15:12], line [7:0]),
// EDX = L3 (size in 512 KiB units [31:18], associativity [15:12], line [7:0]).
std::vector<CacheInfo> legacy_amd_caches(const CpuidFunction& cpuid, std::uint32_t max_extended) {
    std::vector<CacheInfo> caches;
    if (max_extended >= 0x80000005u) {
        const std::uint32_t l1 = cpuid(0x80000005u, 0)[ecx];
        const std::uint32_t ways = bits(l1, 16, 8);
        if (ways != 0)  // 0 is reserved
            caches.push_back(legacy_cache(1, false, index{bits(l1, 24, 8)} * 1024, ways == 0xFF ? -2 : int(ways),
                                          int(bits(l1, 0, 8))));
    }
    if (max_extended >= 0x80000006u) {
        const Registers r = cpuid(0x80000006u, 0);
        caches.push_back(legacy_cache(2, true, index{bits(r[ecx], 16, 16)} * 1024,
                                      legacy_associativity(bits(r[ecx], 12, 4)), int(bits(r[ecx], 0, 8))));
        caches.push_back(legacy_cache(3, true, index{bits(r[edx], 18, 14)} * 512 * 1024,
                                      legacy_associativity(bits(r[edx], 12, 4)), int(bits(r[edx], 0, 8))));
    }
    return tidy(std::move(caches));
}

// Twelve (leaf 0) or sixteen (brand) bytes of register text, little-endian per register.
void append_register_text(std::string& text, std::uint32_t value) {
    for (int byte = 0; byte < 4; ++byte) text.push_back(static_cast<char>((value >> (8 * byte)) & 0xFF));
}

// Up to the first NUL, without surrounding spaces (Intel right-justifies older brands);
// bytes outside printable ASCII (never in a real CPU's strings) become '?', so the text
// is valid UTF-8 wherever it is shown.
std::string trimmed(const std::string& text) {
    std::string s = text.substr(0, text.find('\0'));
    for (char& c : s)
        if (c < 0x20 || c > 0x7E) c = '?';
    const auto first = s.find_first_not_of(" ");
    if (first == std::string::npos) return "";
    return s.substr(first, s.find_last_not_of(" ") - first + 1);
}

}  // namespace

CpuInfo decode_cpuid(const CpuidFunction& cpuid, std::uint64_t xcr0) {
    CpuInfo info;
    if (!cpuid) return info;

    const Registers leaf0 = cpuid(0, 0);
    const std::uint32_t max_leaf = leaf0[eax];
    std::string vendor;
    for (const std::uint32_t value : {leaf0[ebx], leaf0[edx], leaf0[ecx]}) append_register_text(vendor, value);
    info.vendor = trimmed(vendor);

    bool os_avx = false, os_avx512 = false;
    if (max_leaf >= 1) {
        const Registers leaf1 = cpuid(1, 0);
        const std::uint32_t base_family = bits(leaf1[eax], 8, 4), base_model = bits(leaf1[eax], 4, 4);
        info.family = static_cast<int>(base_family == 0xF ? base_family + bits(leaf1[eax], 20, 8) : base_family);
        info.model = static_cast<int>(base_family == 0x6 || base_family == 0xF
                                          ? (bits(leaf1[eax], 16, 4) << 4) + base_model
                                          : base_model);
        info.stepping = static_cast<int>(bits(leaf1[eax], 0, 4));
        // AVX state is usable only when the OS turned on XSAVE (OSXSAVE) and saves the
        // SSE and AVX registers; AVX-512 also needs the opmask, ZMM_Hi256 and Hi16_ZMM states.
        const bool osxsave = bit(leaf1[ecx], 27), avx = bit(leaf1[ecx], 28);
        os_avx = osxsave && avx && (xcr0 & 0x6) == 0x6;
        os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;
        info.fma = os_avx && bit(leaf1[ecx], 12);
    }
    if (max_leaf >= 7) {
        const Registers leaf7 = cpuid(7, 0);
        info.avx2 = os_avx && bit(leaf7[ebx], 5);
        info.avx512f = os_avx512 && bit(leaf7[ebx], 16);
        info.avx512_vnni = info.avx512f && bit(leaf7[ecx], 11);
        if (leaf7[eax] >= 1) info.avx512_bf16 = info.avx512f && bit(cpuid(7, 1)[eax], 5);
    }

    // Without extended leaves, 0x80000000 returns the highest basic leaf's data (Intel)
    // or anything: only a value in the extended range counts.
    std::uint32_t max_extended = cpuid(0x80000000u, 0)[eax];
    if (max_extended < 0x80000000u || max_extended > 0x8000FFFFu) max_extended = 0;
    if (max_extended >= 0x80000004u) {
        std::string brand;
        for (std::uint32_t leaf = 0x80000002u; leaf <= 0x80000004u; ++leaf)
            for (const std::uint32_t value : cpuid(leaf, 0)) append_register_text(brand, value);
        info.brand = trimmed(brand);
    }
    const bool topology_extensions = max_extended >= 0x80000001u && bit(cpuid(0x80000001u, 0)[ecx], 22);

    // AMD (and Hygon, a Zen licensee) leave leaf 4 zero, and some hypervisors fill it with
    // made-up Intel values on AMD hosts: they read 0x8000001D first. Everyone else: leaf 4.
    const bool amd_like = info.vendor == "AuthenticAMD" || info.vendor == "HygonGenuine";
    if (!amd_like && max_leaf >= 4) {
        info.caches = deterministic_caches(cpuid, 4);
        info.cache_source = "cpuid leaf 4";
    }
    if (info.caches.empty() && topology_extensions && max_extended >= 0x8000001Du) {
        info.caches = deterministic_caches(cpuid, 0x8000001Du);
        info.cache_source = "cpuid leaf 0x8000001D";
    }
    if (info.caches.empty() && amd_like) {
        info.caches = legacy_amd_caches(cpuid, max_extended);
        info.cache_source = "cpuid leaf 0x80000005/6";
    }
    if (info.caches.empty()) info.cache_source = "none";
    return info;
}

namespace {

// The first line of `path` ("" when it cannot be read).
std::string read_line(const std::string& path) {
    std::ifstream file(path);
    std::string line;
    if (file) std::getline(file, line);
    return line;
}

// A non-negative decimal with an optional K / M / G suffix (sysfs "size": "32K");
// -1 when `text` is empty or not such a number.
index parse_size(const std::string& text) {
    if (text.empty()) return -1;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (end == text.c_str() || value < 0 || value > (1LL << 40)) return -1;
    index scale = 1;
    if (*end == 'K') scale = index{1} << 10, ++end;
    else if (*end == 'M') scale = index{1} << 20, ++end;
    else if (*end == 'G') scale = index{1} << 30, ++end;
    if (*end != '\0') return -1;
    index bytes = 0;
    if (__builtin_mul_overflow(static_cast<index>(value), scale, &bytes)) return -1;
    return bytes;
}

// Processors in a cpulist ("0-1,4,6-7" -> 5); 0 when empty or malformed.
int count_cpu_list(const std::string& text) {
    long long count = 0;
    const char* p = text.c_str();
    while (*p != '\0') {
        char* end = nullptr;
        const long long first = std::strtoll(p, &end, 10);
        if (end == p || first < 0) return 0;
        long long last = first;
        p = end;
        if (*p == '-') {
            last = std::strtoll(p + 1, &end, 10);
            if (end == p + 1 || last < first) return 0;
            p = end;
        }
        count += last - first + 1;
        if (count > (1 << 20)) return 0;
        if (*p == ',') ++p;
        else if (*p != '\0') return 0;
    }
    return static_cast<int>(count);
}

}  // namespace

std::vector<CacheInfo> read_sysfs_caches(const std::string& directory) {
    std::vector<CacheInfo> caches;
    // Linux numbers the entries index0, index1, ... without gaps; a few dozen at most.
    for (int entry = 0; entry < static_cast<int>(max_cache_subleafs); ++entry) {
        const std::string base = directory + "/index" + std::to_string(entry) + "/";
        const std::string type = read_line(base + "type");
        if (type.empty()) break;
        if (type != "Data" && type != "Unified") continue;
        const index level = parse_size(read_line(base + "level"));
        const index ways = parse_size(read_line(base + "ways_of_associativity"));
        const index line = parse_size(read_line(base + "coherency_line_size"));
        const index sets = parse_size(read_line(base + "number_of_sets"));
        if (level < 1 || level > 4 || ways > (1 << 20) || line > 4096) continue;
        CacheInfo c;
        c.level = static_cast<int>(level);
        c.unified = type == "Unified";
        c.ways = static_cast<int>(std::max<index>(ways, 0));  // 0: unknown (or fully associative)
        c.line = static_cast<int>(std::max<index>(line, 0));
        c.sets = std::max<index>(sets, 0);
        c.size = parse_size(read_line(base + "size"));
        index size = 0;
        if (c.size <= 0 && c.ways > 0 && c.line > 0 && c.sets > 0 &&
            !__builtin_mul_overflow(index{c.ways} * c.line, c.sets, &size))  // ways · line < 2^32
            c.size = size;
        c.shared_by = count_cpu_list(read_line(base + "shared_cpu_list"));
        caches.push_back(c);
    }
    return tidy(std::move(caches));
}

namespace {

CpuInfo detect() {
    CpuInfo info;
#ifdef FASTMLP_HAVE_CPUID
    const CpuidFunction cpuid = [](std::uint32_t leaf, std::uint32_t subleaf) {
        Registers r{};
        __cpuid_count(leaf, subleaf, r[eax], r[ebx], r[ecx], r[edx]);
        return r;
    };
    // XGETBV faults unless the OS enabled XSAVE (CPUID.1:ECX.OSXSAVE[27]).
    std::uint64_t xcr0 = 0;
    if (cpuid(0, 0)[eax] >= 1 && bit(cpuid(1, 0)[ecx], 27)) {
        std::uint32_t low = 0, high = 0;
        __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
        xcr0 = (std::uint64_t{high} << 32) | low;
    }
    info = decode_cpuid(cpuid, xcr0);
    // CPUID describes the core this thread runs on: on hybrid CPUs (Alder Lake and later)
    // a P-core and an E-core answer differently, and the first call decides.
#endif
    if (info.caches.empty()) {
        info.caches = read_sysfs_caches();
        info.cache_source = info.caches.empty() ? "none" : "sysfs";
    }
    return info;
}

}  // namespace

const CpuInfo& cpu_info() {
    // Only bad_alloc can escape detect(); then the CPU is reported unknown rather than
    // letting an exception out of a function-local static's initializer.
    static const CpuInfo info = []() noexcept {
        try {
            return detect();
        } catch (...) {
            return CpuInfo{};
        }
    }();
    return info;
}

}  // namespace fastmlp
