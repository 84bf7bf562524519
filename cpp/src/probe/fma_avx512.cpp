// fma_avx512.cpp — the FMA peak probe's chains for AVX-512F (compiled with -mavx512f):
// 16 zmm accumulators of 16 floats or 8 doubles, enough to hide a 4-cycle FMA latency
// on two 512-bit pipes.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define FASTMLP_PROBE_ISA avx512
#include "fma_chains.hpp"

namespace fastmlp::probe_detail {
namespace avx512 {

// reduce by hand: GCC 12's _mm512_reduce_add_* warn in its own header.
struct F32 {
    using T = float;
    using R = __m512;
    static constexpr int width = 16;
    static R broadcast(T x) { return _mm512_set1_ps(x); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static R add(R a, R b) { return _mm512_add_ps(a, b); }
    static T reduce(R r) {
        T lanes[width], sum = 0;
        _mm512_storeu_ps(lanes, r);
        for (T x : lanes) sum += x;
        return sum;
    }
};

struct F64 {
    using T = double;
    using R = __m512d;
    static constexpr int width = 8;
    static R broadcast(T x) { return _mm512_set1_pd(x); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
    static R add(R a, R b) { return _mm512_add_pd(a, b); }
    static T reduce(R r) {
        T lanes[width], sum = 0;
        _mm512_storeu_pd(lanes, r);
        for (T x : lanes) sum += x;
        return sum;
    }
};

constexpr int chains = 16;
double run_f32(std::int64_t iterations, float seed) { return fma_chains<F32, chains>(iterations, seed); }
double run_f64(std::int64_t iterations, double seed) { return fma_chains<F64, chains>(iterations, seed); }

}  // namespace avx512

const FmaChains& avx512_chains() {
    static const FmaChains chains = {"avx512", avx512::F32::width, avx512::F64::width, avx512::chains,
                                     avx512::run_f32, avx512::run_f64};
    return chains;
}

}  // namespace fastmlp::probe_detail
#endif
