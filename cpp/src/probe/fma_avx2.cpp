// fma_avx2.cpp — the FMA peak probe's chains for AVX2 + FMA (compiled with -mavx2 -mfma):
// 12 ymm accumulators of 8 floats or 4 doubles, enough to hide a 4–5-cycle FMA latency
// on two pipes.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define FASTMLP_PROBE_ISA avx2
#include "fma_chains.hpp"

namespace fastmlp::probe_detail {
namespace avx2 {

struct F32 {
    using T = float;
    using R = __m256;
    static constexpr int width = 8;
    static R broadcast(T x) { return _mm256_set1_ps(x); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static R add(R a, R b) { return _mm256_add_ps(a, b); }
    static T reduce(R r) {
        T lanes[width], sum = 0;
        _mm256_storeu_ps(lanes, r);
        for (T x : lanes) sum += x;
        return sum;
    }
};

struct F64 {
    using T = double;
    using R = __m256d;
    static constexpr int width = 4;
    static R broadcast(T x) { return _mm256_set1_pd(x); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
    static R add(R a, R b) { return _mm256_add_pd(a, b); }
    static T reduce(R r) {
        T lanes[width], sum = 0;
        _mm256_storeu_pd(lanes, r);
        for (T x : lanes) sum += x;
        return sum;
    }
};

constexpr int chains = 12;
double run_f32(std::int64_t iterations, float seed) { return fma_chains<F32, chains>(iterations, seed); }
double run_f64(std::int64_t iterations, double seed) { return fma_chains<F64, chains>(iterations, seed); }

}  // namespace avx2

const FmaChains& avx2_chains() {
    static const FmaChains chains = {"avx2", avx2::F32::width, avx2::F64::width, avx2::chains,
                                     avx2::run_f32, avx2::run_f64};
    return chains;
}

}  // namespace fastmlp::probe_detail
#endif
