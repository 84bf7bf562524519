// fastmlp/build_info.hpp — how this build was made and what the CPU offers.
#pragma once

#include <string>
#include <vector>

namespace fastmlp {

std::string compiler_name();
std::string build_flags();
std::string build_type();
std::string architecture();
std::vector<std::string> cpu_features();  // x86: sse2 ... avx512; arm64: neon

}  // namespace fastmlp
