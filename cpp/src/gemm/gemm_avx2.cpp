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

// In-register transpose of 8 rows of 8 floats: r[i] becomes column i.
inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {  // pairs of rows, interleaved within 128-bit lanes
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {  // columns i and i + 4 of four rows, one per lane
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {  // the lanes of rows 0–3 beside those of rows 4–7
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

// Lanes [0, n) set, for maskload / maskstore.
inline __m256i first_lanes(index n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

struct F32 {
    using T = float;
    using R = __m256;
    static constexpr int width = 8;
    static constexpr bool has_transpose = true;
    static void transpose(R r[8]) { transpose8(r); }
    static R load_first(const T* p, index n) { return _mm256_maskload_ps(p, first_lanes(n)); }
    static void store_first(T* p, R r, index n) { _mm256_maskstore_ps(p, first_lanes(n), r); }
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
    static constexpr bool has_transpose = false;
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
