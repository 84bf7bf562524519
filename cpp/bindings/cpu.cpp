// bindings/cpu.cpp — what CPU this is (fastmlp/cpu.hpp) and the GEMM configuration
// chosen for it (fastmlp/gemm.hpp), as plain dicts, and the test hooks that decode
// recorded CPUID dumps and sysfs cache trees of other machines and choose for them.
#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "fastmlp/cpu.hpp"
#include "fastmlp/gemm.hpp"

namespace fastmlp::bindings {
namespace py = pybind11;
namespace {

py::dict cache_dict(const CacheInfo& c) {
    py::dict d;
    d["level"] = c.level;
    d["unified"] = c.unified;
    d["size"] = c.size;
    d["ways"] = c.ways;
    d["line"] = c.line;
    d["sets"] = c.sets;
    d["shared_by"] = c.shared_by;
    return d;
}

py::list cache_list(const std::vector<CacheInfo>& caches) {
    py::list list;
    for (const CacheInfo& c : caches) list.append(cache_dict(c));
    return list;
}

// {vendor, family, model, stepping, brand, caches: [...], cache_source, features: [...]}.
py::dict cpu_dict(const CpuInfo& info) {
    py::dict d;
    d["vendor"] = info.vendor;
    d["family"] = info.family;
    d["model"] = info.model;
    d["stepping"] = info.stepping;
    d["brand"] = info.brand;
    d["caches"] = cache_list(info.caches);
    d["cache_source"] = info.cache_source;
    std::vector<std::string> features;
    for (const auto& [name, present] : {std::pair{"avx2", info.avx2}, {"fma", info.fma}, {"avx512f", info.avx512f},
                                        {"avx512_vnni", info.avx512_vnni}, {"avx512_bf16", info.avx512_bf16}})
        if (present) features.emplace_back(name);
    d["features"] = features;
    return d;
}

using CpuidTable = std::map<std::pair<std::uint32_t, std::uint32_t>, std::array<std::uint32_t, 4>>;


py::dict blocking_dict(const GemmBlocking& b) {
    py::dict d;
    d["mr"] = b.mr;
    d["nr"] = b.nr;
    d["kc"] = b.kc;
    d["nc"] = b.nc;
    d["prefetch"] = b.prefetch;
    return d;
}

py::dict config_dict(const GemmConfig& config) {
    py::dict d;
    d["name"] = config.name;
    d["kernel"] = config.kernel;
    d["source"] = config.source;
    d["reason"] = config.reason;
    d["float32"] = blocking_dict(config.f32);
    d["float64"] = blocking_dict(config.f64);
    return d;
}

CpuInfo decode_table(const CpuidTable& table, std::optional<std::uint64_t> xcr0) {
    return decode_cpuid(
        [&table](std::uint32_t leaf, std::uint32_t subleaf) {
            const auto found = table.find({leaf, subleaf});
            return found == table.end() ? std::array<std::uint32_t, 4>{} : found->second;
        },
        xcr0.value_or(xcr0_all_states));
}

// A cache as the model reads it, from {"size", "ways", "line", "sets"}.
CacheInfo cache_from(const py::dict& d, int level) {
    CacheInfo cache;
    cache.level = level;
    cache.unified = level > 1;
    cache.size = d["size"].cast<index>();
    const index ways = d["ways"].cast<index>(), line = d["line"].cast<index>();
    if (ways < 0 || ways > (index(1) << 20) || line < 0 || line > (index(1) << 20))
        throw py::value_error("gemm_model_blocking: ways and line must be in [0, 2**20]");
    cache.ways = int(ways);
    cache.line = int(line);
    cache.sets = d["sets"].cast<index>();
    return cache;
}


// The GEMM configuration: what gemm() runs with, the names it can be forced to.
void bind_gemm_config(py::module_& m) {
    m.def("gemm_config", []() { return config_dict(gemm_config()); });
    m.def("gemm_configs", &gemm_config_names);
    m.def("set_gemm_config", &set_gemm_config, py::arg("spec"));
    m.def(
        "_gemm_config_for",
        [](const CpuidTable& table, std::optional<std::uint64_t> xcr0) {
            return config_dict(gemm_config_for(decode_table(table, xcr0)));
        },
        py::arg("table"), py::arg("xcr0") = py::none(),
        "Test hook: the automatic GEMM configuration for the CPU of a recorded CPUID dump.");
    m.def(
        "_gemm_model_blocking",
        [](const py::dict& l1, const py::dict& l2, index mr, index nr, index scalar_size) {
            return blocking_dict(
                gemm_model_blocking(cache_from(l1, 1), cache_from(l2, 2), mr, nr, scalar_size));
        },
        py::arg("l1"), py::arg("l2"), py::arg("mr"), py::arg("nr"), py::arg("scalar_size"),
        "Test hook: the analytical model's blocking for a tile and two caches.");
}
}  // namespace

void bind_cpu(py::module_& m) {
    bind_gemm_config(m);
    m.def("cpu_info", []() {
        const CpuInfo* info = nullptr;
        {
            py::gil_scoped_release release;  // the first call runs CPUID and may read sysfs
            info = &cpu_info();
        }
        return cpu_dict(*info);
    }, "This CPU: vendor, family/model, brand, data caches and the features the GEMM uses.");
    m.def("_decode_cpuid", [](const CpuidTable& table, std::optional<std::uint64_t> xcr0) {
        return cpu_dict(decode_table(table, xcr0));
    }, py::arg("table"), py::arg("xcr0") = py::none(),
    "Test hook: cpu_info()'s CPUID decoding of a recorded dump {(leaf, subleaf): (eax, ebx, ecx, edx)} "
    "(missing entries read as zeros), without the sysfs fallback; xcr0 None: every state enabled.");
    m.def("_read_sysfs_caches", [](const std::string& directory) {
        return cache_list(read_sysfs_caches(directory));
    }, py::arg("directory"),
    "Test hook: the data/unified caches of a sysfs cache directory (index0, index1, ...).");
}

}  // namespace fastmlp::bindings
