// bindings/cpu.cpp — what CPU this is (fastmlp/cpu.hpp), as plain dicts, and the test
// hooks that decode recorded CPUID dumps and sysfs cache trees of other machines.
#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "fastmlp/cpu.hpp"

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

}  // namespace

void bind_cpu(py::module_& m) {
    m.def("cpu_info", []() {
        const CpuInfo* info = nullptr;
        {
            py::gil_scoped_release release;  // the first call runs CPUID and may read sysfs
            info = &cpu_info();
        }
        return cpu_dict(*info);
    }, "This CPU: vendor, family/model, brand, data caches and the features the GEMM uses.");
    m.def("_decode_cpuid", [](const CpuidTable& table, std::optional<std::uint64_t> xcr0) {
        const CpuInfo info = decode_cpuid(
            [&table](std::uint32_t leaf, std::uint32_t subleaf) {
                const auto found = table.find({leaf, subleaf});
                return found == table.end() ? std::array<std::uint32_t, 4>{} : found->second;
            },
            xcr0.value_or(xcr0_all_states));
        return cpu_dict(info);
    }, py::arg("table"), py::arg("xcr0") = py::none(),
    "Test hook: cpu_info()'s CPUID decoding of a recorded dump {(leaf, subleaf): (eax, ebx, ecx, edx)} "
    "(missing entries read as zeros), without the sysfs fallback; xcr0 None: every state enabled.");
    m.def("_read_sysfs_caches", [](const std::string& directory) {
        return cache_list(read_sysfs_caches(directory));
    }, py::arg("directory"),
    "Test hook: the data/unified caches of a sysfs cache directory (index0, index1, ...).");
}

}  // namespace fastmlp::bindings
