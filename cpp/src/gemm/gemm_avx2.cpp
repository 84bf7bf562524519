// gemm_avx2.cpp — GEMM kernels for AVX2 + FMA (compiled with -mavx2 -mfma).
//
// 16 ymm registers: float tiles are 6 × 16 (12 accumulators, 2 B vectors, 1
// broadcast), double tiles 6 × 8 — the BLIS Haswell shapes.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define FASTMLP_GEMM_ISA avx2
#include "gemm_tile.hpp"

namespace fastmlp::gemm_detail {
namespace avx2 {

struct F32 {
    using T = float;
    using R = __m256;
    static constexpr int width = 8;
    static constexpr bool has_pack_transposed = false;
    static constexpr bool has_pack_sliver = false;
    static R zero() { return _mm256_setzero_ps(); }
    static R load(const T* p) { return _mm256_loadu_ps(p); }
    static void store(T* p, R r) { _mm256_storeu_ps(p, r); }
    static R broadcast(T x) { return _mm256_set1_ps(x); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
    static T reduce(R r) {
        __m128 half = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
        half = _mm_add_ps(half, _mm_movehl_ps(half, half));
        half = _mm_add_ss(half, _mm_movehdup_ps(half));
        return _mm_cvtss_f32(half);
    }
};

struct F64 {
    using T = double;
    using R = __m256d;
    static constexpr int width = 4;
    static constexpr bool has_pack_transposed = false;
    static constexpr bool has_pack_sliver = false;
    static R zero() { return _mm256_setzero_pd(); }
    static R load(const T* p) { return _mm256_loadu_pd(p); }
    static void store(T* p, R r) { _mm256_storeu_pd(p, r); }
    static R broadcast(T x) { return _mm256_set1_pd(x); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
    static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
    static T reduce(R r) {
        __m128d half = _mm_add_pd(_mm256_castpd256_pd128(r), _mm256_extractf128_pd(r, 1));
        return _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
    }
};

}  // namespace avx2

const Kernel& avx2_kernel() {
    // float tiles 6 × 16, double 6 × 8; K blocks of 256; N blocks of 1024 floats, 512 doubles.
    static const Kernel kernel =
        avx2::make_kernel<avx2::F32, 6, 2, 256, 1024,
                          avx2::F64, 6, 2, 256, 512>("avx2");
    return kernel;
}

}  // namespace fastmlp::gemm_detail
#endif
