// fma_chains.hpp — the contract between the FMA peak probe (probe.cpp, portable code)
// and its per-ISA chain loops (fma_avx512.cpp, fma_avx2.cpp, fma_portable.cpp, each
// compiled with its own flags, like the GEMM kernels: gemm_kernels.hpp).
//
// An ISA file defines FASTMLP_PROBE_ISA (its namespace) and a vector traits type V
// (T scalar, R register, width, broadcast(x), fma(a, b, c) = a·b + c, add(a, b),
// reduce(r) = the sum of r's lanes), then instantiates fma_chains below. As in the
// GEMM's ISA files, nothing there may use the standard library's templates: an inline
// function compiled with AVX-512 could be the copy the linker keeps for everyone.
#pragma once

#include <cstdint>

namespace fastmlp::probe_detail {

// One ISA's chains: iterations of `chains` independent FMAs on registers of `lanes_*`
// elements, from accumulators seeded with seed, seed + 1, ...; returns the sum of the
// accumulators, which the caller must consume so that the loop cannot be dropped.
struct FmaChains {
    const char* isa;
    int lanes_f32, lanes_f64;
    int chains;
    double (*run_f32)(std::int64_t iterations, float seed);
    double (*run_f64)(std::int64_t iterations, double seed);
};

// Each returns its chains; the x86 ones exist only in x86-64 builds.
const FmaChains& portable_chains();
#if defined(FASTMLP_X86_KERNELS)
const FmaChains& avx2_chains();
const FmaChains& avx512_chains();
#endif

}  // namespace fastmlp::probe_detail

#if defined(FASTMLP_PROBE_ISA)
namespace fastmlp::probe_detail::FASTMLP_PROBE_ISA {

// CHAINS accumulators, each its own dependency chain: enough of them hide the FMA
// latency on every pipe, so the loop runs at the FMA throughput. x just below 1 and a
// small y keep every value near 1 (no overflow, no subnormals).
template <typename V, int CHAINS>
double fma_chains(std::int64_t iterations, typename V::T seed) {
    using T = typename V::T;
    using R = typename V::R;
    const R x = V::broadcast(T(0.999999)), y = V::broadcast(T(1e-6));
    R acc[CHAINS];
    for (int c = 0; c < CHAINS; ++c) acc[c] = V::broadcast(seed + T(c));
    for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 32
        for (int c = 0; c < CHAINS; ++c) acc[c] = V::fma(acc[c], x, y);
    }
    R sum = acc[0];
    for (int c = 1; c < CHAINS; ++c) sum = V::add(sum, acc[c]);
    return double(V::reduce(sum));
}

}  // namespace fastmlp::probe_detail::FASTMLP_PROBE_ISA
#endif
