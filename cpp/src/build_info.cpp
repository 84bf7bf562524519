// build_info.cpp — what `fastmlp info` reports about this build and this CPU.
#include "fastmlp/build_info.hpp"

namespace fastmlp {

std::string compiler_name() {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc " + std::to_string(_MSC_VER);
#else
    return "unknown";
#endif
}

std::string build_flags() {
#ifdef FASTMLP_BUILD_FLAGS
    return FASTMLP_BUILD_FLAGS;
#else
    return "";
#endif
}

std::string build_type() {
#ifdef FASTMLP_BUILD_TYPE
    return FASTMLP_BUILD_TYPE;
#else
    return "unknown";
#endif
}

std::vector<std::string> cpu_features() {
    std::vector<std::string> features;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse2")) features.push_back("sse2");
    if (__builtin_cpu_supports("sse4.2")) features.push_back("sse4.2");
    if (__builtin_cpu_supports("avx")) features.push_back("avx");
    if (__builtin_cpu_supports("avx2")) features.push_back("avx2");
    if (__builtin_cpu_supports("fma")) features.push_back("fma");
    if (__builtin_cpu_supports("avx512f")) features.push_back("avx512f");
    if (__builtin_cpu_supports("avx512bw")) features.push_back("avx512bw");
    if (__builtin_cpu_supports("avx512vl")) features.push_back("avx512vl");
#elif defined(__aarch64__)
    features.push_back("neon");
#endif
    return features;
}

std::string architecture() {
#if defined(__x86_64__)
    return "x86_64";
#elif defined(__aarch64__)
    return "arm64";
#else
    return "other";
#endif
}

}  // namespace fastmlp
