// gemm_config.cpp — which kernel and which cache blocking gemm() runs with.
//
// The kernel (ISA) is the best one the CPU runs (AVX2 rather than AVX-512 on the
// Skylake-SP parts with one 512-bit FMA unit: one_avx512_fma_unit). Its register tile is fixed;
// KC, NC and prefetching depend on the caches and on how fast the core eats
// data, so they are chosen per micro-architecture, in this order:
//   1. a table entry for the CPU (vendor, family, model) and kernel: blocking
//      measured on that CPU, or, where noted, derived and not yet measured;
//   2. otherwise the analytical model of Low, Igual, Smith and Quintana-Ortí
//      ("Analytical modeling is enough for high-performance BLIS", ACM TOMS
//      2016) applied to the L1 and L2 that CPUID reports (model_blocking);
//   3. otherwise (no cache information) the kernel's defaults.
// FASTMLP_GEMM_CONFIG / set_gemm_config() override the choice (see gemm.hpp).
//
// The roles, in our row-major terms: an MR × KC sliver of A stays in L1 while
// the KC × NR micro-panels of B stream past it from L2, where the packed
// KC × NC block of B stays (gemm_tile.hpp). Low et al.'s "B_r in L1, A_c in
// L2" is our A sliver and B block (their C is column-major: their mr is our NR).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <list>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastmlp/cpu.hpp"
#include "fastmlp/gemm.hpp"
#include "gemm_kernels.hpp"

namespace fastmlp {
namespace gemm_detail {
namespace {

// Intel's family 6 model 85 (Skylake-SP, Cascade Lake, Cooper Lake) comes with
// one or two 512-bit FMA units by SKU, and CPUID does not say which. Intel's
// product pages list one for Silver, Bronze, Gold 51xx/52xx (but 5122 and 5222)
// and the Core i7-7800X/7820X; two for Platinum, Gold 6xxx, Gold 53xxH (Cooper
// Lake), W and the Core i9. With one, a 512-bit FMA does no more a cycle than
// two 256-bit ones while the AVX-512 frequency licence lowers the clock: AVX2 is
// then the faster kernel (TBLIS's "skx1" configuration runs its AVX2 kernels
// there too). A brand that names no SKU (some cloud VMs) is taken as two units,
// as on the Platinum parts clouds use.
bool one_avx512_fma_unit(const CpuInfo& cpu) {
    if (cpu.vendor != "GenuineIntel" || cpu.family != 6 || cpu.model != 0x55) return false;
    const std::string& brand = cpu.brand;
    auto has = [&](const char* text) { return brand.find(text) != std::string::npos; };
    if (has("Silver") || has("Bronze") || has("i7-7800X") || has("i7-7820X")) return true;
    const std::size_t gold = brand.find("Gold 5");
    if (gold == std::string::npos) return false;
    const std::string sku = brand.substr(gold + 5, 4);
    return (sku.rfind("51", 0) == 0 || sku.rfind("52", 0) == 0) && sku != "5122" && sku != "5222";
}

// Whether `cpu` runs the kernel: its CPUID flags, which count a feature only
// when the OS also saves its registers (cpu.hpp).
bool runs(const Kernel* kernel, const CpuInfo& cpu) {
    const std::string name = kernel->name;
    if (name == "avx512") return cpu.avx512f && cpu.avx2 && cpu.fma;
    if (name == "avx2") return cpu.avx2 && cpu.fma;
    return name == "portable";
}

// The kernels of this build that `cpu` runs, best first.
std::vector<const Kernel*> kernels_for(const CpuInfo& cpu) {
    std::vector<const Kernel*> kernels;
#if defined(FASTMLP_X86_KERNELS)
    kernels.push_back(&avx512_kernel());
    kernels.push_back(&avx2_kernel());
#endif
    kernels.push_back(&portable_kernel());
    kernels.erase(std::remove_if(kernels.begin(), kernels.end(),
                                 [&](const Kernel* k) { return !runs(k, cpu); }),
                  kernels.end());
    if (kernels.size() > 1 && std::string(kernels[0]->name) == "avx512" &&
        std::string(kernels[1]->name) == "avx2" && one_avx512_fma_unit(cpu))
        std::swap(kernels[0], kernels[1]);
    return kernels;
}

std::vector<const Kernel*> runnable_kernels() { return kernels_for(cpu_info()); }

// "auto" or "": the best; otherwise that kernel if it runs here, else nullptr.
const Kernel* find_kernel(const std::string& name) {
    for (const Kernel* kernel : runnable_kernels())
        if (name.empty() || name == "auto" || name == kernel->name) return kernel;
    return nullptr;
}

// ---- the table ---------------------------------------------------------------------------

struct TableEntry {
    const char* name;
    const char* vendor;
    int family;
    int models[8];  // display models this entry covers; all zero: any model of the family
    const char* kernel;
    index kc32, nc32;
    bool prefetch32;
    index kc64, nc64;
    bool prefetch64;
    const char* why;
};

// KC and NC for the register tiles of gemm_avx512.cpp (float 12 × 32, double 12 × 16).
const TableEntry table[] = {
    {"zen4", "AuthenticAMD", 0x19, {}, "avx512", 256, 1024, false, 256, 512, false,
     "Zen 4 (AMD family 25 with AVX-512): measured on EPYC (benchmarks/RESULTS.md)"},
    // TBLIS's skx2 entry (two FMA units), tuned there with BLIS kernels of our
    // very tiles transposed (its column-major 32 × 12 float and 16 × 12 double
    // are our row-major 12 × 32 and 12 × 16; its MC is our NC): KC 384, NC 480
    // float, 240 double, with kernels that prefetch both panels from L2 (its
    // "_l2" kernels): ours prefetch too. The model gives 336 / 672 float.
    {"skx", "GenuineIntel", 6, {0x55}, "avx512", 384, 480, true, 384, 240, true,
     "Skylake-SP / Cascade Lake (Intel family 6 model 85, two 512-bit FMA units): "
     "TBLIS's skx2 blocking for these tiles, with prefetching; not yet measured by "
     "fastmlp on this CPU"},
};

bool matches(const TableEntry& entry, const CpuInfo& cpu) {
    if (cpu.vendor != entry.vendor || cpu.family != entry.family) return false;
    if (entry.models[0] == 0) return true;
    for (int model : entry.models)
        if (model != 0 && model == cpu.model) return true;
    return false;
}

std::string describe_cpu(const CpuInfo& cpu) {
    if (cpu.vendor.empty()) return "a CPU without CPUID information";
    std::ostringstream text;
    text << cpu.vendor << " family " << cpu.family << " model " << cpu.model;
    return text.str();
}

std::string describe_cache(const CacheInfo& cache) {
    std::ostringstream text;
    text << "L" << cache.level << " " << cache.size / 1024 << " KiB " << cache.ways << "-way";
    return text.str();
}

index round_down(index x, index to) { return std::max(to, x / to * to); }

// ---- the analytical model (Low et al. 2016) ----------------------------------------------

// KC: the A sliver (mr × kc) must survive in L1 while the B micro-panels
// (kc × nr each) stream through it. In an LRU L1 of W ways of N sets × L
// bytes, the paper gives the sliver C_A ways and a panel C_B, with
// C_A + C_B ≤ W − 1: C_A = ⌊(W − 1) / (1 + nr / mr)⌋. With vectors of 16
// floats and a 12 × 32 tile that is one way, kc = 80 — measured on Zen 4 6 %
// slower than kc = 256 (C's tile is loaded and stored every 80 steps, and the
// K loop is short). The micro-kernel prefetches the panel a few rows ahead
// instead, so a panel's lines are in L1 only briefly and need few ways; the
// sliver gets half of them: C_A = ⌊W / 2⌋, kc = C_A · N · L / (mr · size).
// NC: the packed B block (kc × nc) stays in L2 beside the sliver (C_A2 ways)
// and one way for C and the lines passing through: the paper's
// nc = (W2 − 1 − C_A2) · N2 · L2 / (kc · size), rounded down to whole panels.
Blocking model_blocking(const CacheInfo& l1, const CacheInfo& l2, index mr, index nr,
                        index size) {
    const index way1 = l1.sets * l1.line;  // bytes in one way of L1
    const index ways_a = std::max(1, l1.ways / 2);
    const index kc = std::clamp<index>(round_down(ways_a * way1 / (mr * size), 8), 64, 1024);
    const index way2 = l2.sets * l2.line;
    const index ways_a2 = (mr * kc * size + way2 - 1) / way2;
    const index ways_b = std::max<index>(1, l2.ways - 1 - ways_a2);
    const index nc = std::clamp<index>(round_down(ways_b * way2 / (kc * size), nr), nr, 8192);
    return Blocking{mr, nr, kc, nc, true};
}

// A cache the model can use (cpu.cpp keeps any plausible cache; the model needs
// more): its geometry in the ranges real caches have, so
// the model's products (ways · sets · line < 2^50) cannot overflow.
bool model_can_use(const CacheInfo* cache) {
    return cache != nullptr && cache->ways >= 2 && cache->ways <= 1024 && cache->sets >= 1 &&
           cache->sets <= (index(1) << 24) && cache->line >= 16 && cache->line <= 4096 &&
           cache->size >= 4096;
}

// ---- configurations ------------------------------------------------------------------------

struct Choice {
    GemmConfig description;
    Active active;
};

Choice from_table(const TableEntry& entry, const Kernel* kernel) {
    const Blocking f32{kernel->f32.mr, kernel->f32.nr, entry.kc32, entry.nc32, entry.prefetch32};
    const Blocking f64{kernel->f64.mr, kernel->f64.nr, entry.kc64, entry.nc64, entry.prefetch64};
    return Choice{GemmConfig{entry.name, kernel->name, f32, f64, "table", entry.why},
                  Active{kernel, f32, f64}};
}

Choice from_model(const CpuInfo& cpu, const Kernel* kernel) {
    const CacheInfo* l1 = cpu.cache(1);
    const CacheInfo* l2 = cpu.cache(2);
    const Blocking f32 = model_blocking(*l1, *l2, kernel->f32.mr, kernel->f32.nr, 4);
    const Blocking f64 = model_blocking(*l1, *l2, kernel->f64.mr, kernel->f64.nr, 8);
    const std::string why = "no table entry for " + describe_cpu(cpu) + " with " + kernel->name +
                            ": Low et al.'s model for " + describe_cache(*l1) + ", " +
                            describe_cache(*l2) + " (CPUID " + cpu.cache_source + ")";
    return Choice{GemmConfig{"model", kernel->name, f32, f64, "model", why},
                  Active{kernel, f32, f64}};
}

Choice from_defaults(const CpuInfo& cpu, const Kernel* kernel) {
    const std::string why = "no table entry for " + describe_cpu(cpu) + " and no cache sizes " +
                            "from CPUID or sysfs: the kernel's defaults";
    return Choice{GemmConfig{"default", kernel->name, kernel->f32, kernel->f64, "default", why},
                  Active{kernel, kernel->f32, kernel->f64}};
}

bool model_possible(const CpuInfo& cpu) { return model_can_use(cpu.cache(1)) && model_can_use(cpu.cache(2)); }

// The automatic choice for a CPU and kernel.
Choice automatic(const CpuInfo& cpu, const Kernel* kernel) {
    Choice choice = from_defaults(cpu, kernel);
    bool found = false;
    for (const TableEntry& entry : table)
        if (!found && matches(entry, cpu) && std::string(entry.kernel) == kernel->name) {
            choice = from_table(entry, kernel);
            found = true;
        }
    if (!found && model_possible(cpu)) choice = from_model(cpu, kernel);
    if (std::string(kernel->name) == "avx2" && one_avx512_fma_unit(cpu))
        choice.description.reason += "; avx2 rather than avx512: '" + cpu.brand +
                                     "' has one 512-bit FMA unit";
    return choice;
}

Choice automatic(const Kernel* kernel) { return automatic(cpu_info(), kernel); }

// A configuration by name (any CPU whose kernels include the entry's), or nullptr-like.
bool named(const std::string& name, const Kernel* kernel_hint, Choice* out) {
    if (name == "model") {
        const CpuInfo& cpu = cpu_info();
        if (!model_possible(cpu)) return false;
        *out = from_model(cpu, kernel_hint);
        return true;
    }
    for (const TableEntry& entry : table) {
        if (name != entry.name) continue;
        const Kernel* kernel = find_kernel(entry.kernel);
        if (kernel == nullptr) return false;
        *out = from_table(entry, kernel);
        return true;
    }
    return false;
}

std::string names_text() {
    std::string text = "auto";
    for (const std::string& name : gemm_config_names()) text += ", " + name;
    return text;
}

index parse_count(const std::string& key, const std::string& value, index low, index high) {
    index parsed = 0;
    bool ok = !value.empty() && value.size() < 10;
    for (char ch : value) {
        if (ch < '0' || ch > '9') ok = false;
        else parsed = parsed * 10 + (ch - '0');
    }
    if (!ok || parsed < low || parsed > high)
        throw std::invalid_argument("gemm config: " + key + " must be an integer in [" +
                                    std::to_string(low) + ", " + std::to_string(high) + "], got '" +
                                    value + "'");
    return parsed;
}

// Applies "name,key=value,..." to the automatic choice for `kernel`.
Choice parse_spec(const std::string& spec, const Kernel* kernel, const std::string& source) {
    std::vector<std::string> parts;
    for (std::size_t start = 0;;) {  // every field, empty ones included
        const std::size_t comma = spec.find(',', start);
        std::string part = spec.substr(start, comma == std::string::npos ? std::string::npos
                                                                          : comma - start);
        part.erase(0, part.find_first_not_of(" \t"));
        part.erase(part.find_last_not_of(" \t") + 1);
        parts.push_back(part);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (parts.size() == 1 && parts[0].empty())
        throw std::invalid_argument("gemm config: empty; choose one of " + names_text() +
                                    ", optionally followed by ,kc=N ,nc=N ,prefetch=0|1");
    for (const std::string& part : parts)
        if (part.empty())
            throw std::invalid_argument("gemm config: an empty field in '" + spec + "'");
    Choice choice;
    std::size_t first = 0;
    if (parts[0].find('=') == std::string::npos) {
        // "auto": the automatic choice, kernel included; a name brings its own kernel
        // (a table entry's) or keeps the current one ("model").
        if (parts[0] == "auto") choice = automatic(find_kernel("auto"));
        else if (!named(parts[0], kernel, &choice))
            throw std::invalid_argument("gemm config: '" + parts[0] +
                                        "' is not a configuration this CPU and build can run; "
                                        "choose one of " + names_text());
        first = 1;
    } else {
        choice = automatic(kernel);
    }
    if (parts.size() == 1 && parts[0] == "auto") return choice;  // as chosen: not "forced"
    std::string overrides, seen;
    for (std::size_t i = first; i < parts.size(); ++i) {
        const std::size_t eq = parts[i].find('=');
        if (eq == std::string::npos)
            throw std::invalid_argument("gemm config: expected key=value after the name, got '" +
                                        parts[i] + "'");
        std::string key = parts[i].substr(0, eq), value = parts[i].substr(eq + 1);
        key.erase(key.find_last_not_of(" \t") + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        if (seen.find("," + key + ",") != std::string::npos)
            throw std::invalid_argument("gemm config: '" + key + "' given twice in '" + spec + "'");
        seen += "," + key + ",";
        Active& a = choice.active;
        index parsed = 0;
        if (key == "kc") {
            parsed = parse_count(key, value, 8, 8192);
            a.f32.kc = a.f64.kc = parsed;
        } else if (key == "nc") {  // rounded up to whole panels of each type's NR
            parsed = parse_count(key, value, 1, 65536);
            a.f32.nc = (parsed + a.f32.nr - 1) / a.f32.nr * a.f32.nr;
            a.f64.nc = (parsed + a.f64.nr - 1) / a.f64.nr * a.f64.nr;
        } else if (key == "prefetch") {
            parsed = parse_count(key, value, 0, 1);
            a.f32.prefetch = a.f64.prefetch = parsed == 1;
        } else {
            throw std::invalid_argument("gemm config: unknown key '" + key +
                                        "' (expected kc, nc or prefetch)");
        }
        overrides += (overrides.empty() ? "" : ",") + key + "=" + std::to_string(parsed);
    }
    GemmConfig& d = choice.description;
    if (!overrides.empty()) {
        d.name += "," + overrides;
        d.reason = d.source + " choice (" + d.reason + ") with " + overrides;
    }
    d.f32 = choice.active.f32;
    d.f64 = choice.active.f64;
    d.source = source;
    return choice;
}

// Published choices live as long as the process: a gemm() running on another
// thread may still hold the previous one.
std::mutex g_mutex;
std::list<Choice> g_choices;
std::atomic<const Choice*> g_current{nullptr};

const Choice* publish(const Choice& choice) {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const Choice& kept : g_choices) {
        const auto same = [](const Blocking& x, const Blocking& y) {
            return x.mr == y.mr && x.nr == y.nr && x.kc == y.kc && x.nc == y.nc &&
                   x.prefetch == y.prefetch;
        };
        if (kept.active.kernel == choice.active.kernel && same(kept.active.f32, choice.active.f32) &&
            same(kept.active.f64, choice.active.f64) &&
            kept.description.name == choice.description.name &&
            kept.description.source == choice.description.source &&
            kept.description.reason == choice.description.reason) {
            g_current.store(&kept, std::memory_order_release);
            return &kept;
        }
    }
    g_choices.push_back(choice);
    g_current.store(&g_choices.back(), std::memory_order_release);
    return &g_choices.back();
}

// FASTMLP_GEMM_KERNEL, then FASTMLP_GEMM_CONFIG; a bad value is not fatal (the
// library must import), and the reason says it was ignored.
Choice initial_choice() {
    const char* forced_kernel = std::getenv("FASTMLP_GEMM_KERNEL");
    const Kernel* kernel = forced_kernel ? find_kernel(forced_kernel) : nullptr;
    std::string note;
    if (forced_kernel != nullptr && kernel == nullptr)
        note = "; FASTMLP_GEMM_KERNEL='" + std::string(forced_kernel) + "' ignored (not runnable here)";
    const bool kernel_forced = kernel != nullptr;
    if (kernel == nullptr) kernel = find_kernel("auto");
    Choice choice = automatic(kernel);
    if (kernel_forced) choice.description.source = "environment";
    if (const char* spec = std::getenv("FASTMLP_GEMM_CONFIG")) {
        try {
            Choice overridden = parse_spec(spec, kernel, "environment");
            choice = overridden;
        } catch (const std::invalid_argument& error) {
            note += "; FASTMLP_GEMM_CONFIG ignored: " + std::string(error.what());
        }
    }
    choice.description.reason += note;
    return choice;
}

// The first call makes the initial choice; set_gemm_config and set_gemm_kernel
// call this before they publish, so theirs always comes after it.
const Choice& current() {
    const Choice* choice = g_current.load(std::memory_order_acquire);
    if (choice != nullptr) return *choice;
    static std::once_flag once;
    std::call_once(once, [] { publish(initial_choice()); });
    return *g_current.load(std::memory_order_acquire);
}

}  // namespace

const Active& active() { return current().active; }

}  // namespace gemm_detail

using gemm_detail::Choice;

GemmConfig gemm_config() { return gemm_detail::current().description; }

GemmConfig gemm_config_for(const CpuInfo& cpu) {
    const auto kernels = gemm_detail::kernels_for(cpu);
    return gemm_detail::automatic(cpu, kernels.front()).description;
}

GemmBlocking gemm_model_blocking(const CacheInfo& l1, const CacheInfo& l2, index mr, index nr,
                                 index scalar_size) {
    require(gemm_detail::model_can_use(&l1) && gemm_detail::model_can_use(&l2),
            "gemm_model_blocking: caches need >= 2 ways, >= 1 set, lines >= 16 B, size >= 4 KiB");
    require(mr >= 1 && nr >= 1 && mr <= 64 && nr <= 256, "gemm_model_blocking: tile out of range");
    require(scalar_size == 4 || scalar_size == 8, "gemm_model_blocking: scalar_size must be 4 or 8");
    return gemm_detail::model_blocking(l1, l2, mr, nr, scalar_size);
}

std::vector<std::string> gemm_config_names() {
    std::vector<std::string> names;
    for (const auto& entry : gemm_detail::table)
        if (gemm_detail::find_kernel(entry.kernel) != nullptr) names.push_back(entry.name);
    if (gemm_detail::model_possible(cpu_info())) names.push_back("model");
    return names;
}

void set_gemm_config(const std::string& spec) {
    const gemm_detail::Kernel* kernel = gemm_detail::current().active.kernel;
    Choice choice = gemm_detail::parse_spec(spec, kernel, "forced");
    gemm_detail::publish(choice);
}

const char* gemm_kernel_name() { return gemm_detail::active().kernel->name; }

std::vector<std::string> gemm_available_kernels() {
    std::vector<std::string> names;
    for (const auto* kernel : gemm_detail::runnable_kernels()) names.push_back(kernel->name);
    return names;
}

void set_gemm_kernel(const std::string& name) {
    const gemm_detail::Kernel* kernel = gemm_detail::find_kernel(name);
    if (kernel == nullptr) {
        std::string choices = "auto";
        for (const auto& available : gemm_available_kernels()) choices += ", " + available;
        throw std::invalid_argument("set_gemm_kernel: '" + name +
                                    "' is not a kernel this CPU and build can run; choose one of " +
                                    choices);
    }
    gemm_detail::current();  // the initial choice first, so this one is not overwritten
    Choice choice = gemm_detail::automatic(kernel);
    if (name != "auto") choice.description.source = "forced";
    gemm_detail::publish(choice);
}

}  // namespace fastmlp
