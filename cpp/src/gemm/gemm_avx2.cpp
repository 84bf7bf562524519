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

constexpr Blocking f32_blocking{6, 16, 256, 1024};
constexpr Blocking f64_blocking{6, 8, 256, 512};

void gemv_f32(const GemmArgs<float>& g, index i0, index i1, const float* x) {
    gemv_rows<F32>(g, i0, i1, x);
}
void gemv_f64(const GemmArgs<double>& g, index i0, index i1, const double* x) {
    gemv_rows<F64>(g, i0, i1, x);
}
void tile_f32(const GemmArgs<float>& g, index i0, index i1, index j0, index j1, float* pack) {
    gemm_tile<F32, 6, 2, f32_blocking.kc, f32_blocking.nc>(g, i0, i1, j0, j1, pack);
}
void tile_f64(const GemmArgs<double>& g, index i0, index i1, index j0, index j1, double* pack) {
    gemm_tile<F64, 6, 2, f64_blocking.kc, f64_blocking.nc>(g, i0, i1, j0, j1, pack);
}

}  // namespace avx2

const Kernel& avx2_kernel() {
    static const Kernel kernel{"avx2", avx2::f32_blocking, avx2::f64_blocking, avx2::tile_f32,
                               avx2::tile_f64, avx2::gemv_f32, avx2::gemv_f64};
    return kernel;
}

}  // namespace fastmlp::gemm_detail
#endif
