// TEMPORARY STUB (replaced by the cpu helper's file at merge)
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include "fastmlp/common.hpp"
namespace fastmlp {
struct CacheInfo { int level; bool unified; index size; int ways; int line; index sets; int shared_by; };
struct CpuInfo {
  std::string vendor;
  int family = 0, model = 0, stepping = 0;
  std::string brand;
  std::vector<CacheInfo> caches;
  std::string cache_source;
  bool avx2 = false, fma = false, avx512f = false, avx512_vnni = false, avx512_bf16 = false;
  const CacheInfo* cache(int level) const { for (auto& c : caches) if (c.level == level) return &c; return nullptr; }
};
const CpuInfo& cpu_info();
}
