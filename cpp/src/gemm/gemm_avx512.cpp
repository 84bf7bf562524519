// gemm_avx512.cpp — GEMM kernels for AVX-512F (compiled with -mavx512f -mfma).
//
// 32 zmm registers: float tiles are 12 × 32 (24 accumulators, 2 B vectors, 1
// broadcast), double tiles 12 × 16. On Zen 4 a 512-bit FMA issues at one per
// cycle and 4 accumulators already hide its latency; 24 give headroom and
// halve the B loads per FMA compared with 6-row tiles.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define FASTMLP_GEMM_ISA avx512
#include "gemm_tile.hpp"

namespace fastmlp::gemm_detail {
namespace avx512 {

// In-register transpose of 16 rows of 16 floats (unpack, then shuffles within
// and across 128-bit lanes): r[i] becomes column i.
inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

// In-register transpose of 8 rows of 8 doubles: r[i] becomes column i.
inline void transpose8(__m512d r[8]) {
    __m512d t[8], u[8];
    for (int i = 0; i < 8; i += 2) {  // pairs of rows, interleaved within 128-bit lanes
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int h = 0; h < 8; h += 4) {  // rows 0–3, then 4–7: lanes of two pairs gathered
        u[h] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0x88);
        u[h + 1] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0xdd);
        u[h + 2] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0x88);
        u[h + 3] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0xdd);
    }
    r[0] = _mm512_shuffle_f64x2(u[0], u[4], 0x88);
    r[4] = _mm512_shuffle_f64x2(u[0], u[4], 0xdd);
    r[2] = _mm512_shuffle_f64x2(u[1], u[5], 0x88);
    r[6] = _mm512_shuffle_f64x2(u[1], u[5], 0xdd);
    r[1] = _mm512_shuffle_f64x2(u[2], u[6], 0x88);
    r[5] = _mm512_shuffle_f64x2(u[2], u[6], 0xdd);
    r[3] = _mm512_shuffle_f64x2(u[3], u[7], 0x88);
    r[7] = _mm512_shuffle_f64x2(u[3], u[7], 0xdd);
}

struct F32 {
    using T = float;
    using R = __m512;
    static constexpr int width = 16;
    static constexpr bool has_transpose = true;
    static void transpose(R r[16]) { transpose16(r); }
    static R load_first(const T* p, index n) { return _mm512_maskz_loadu_ps(first(n), p); }
    static void store_first(T* p, R r, index n) { _mm512_mask_storeu_ps(p, first(n), r); }
    static __mmask16 first(index n) { return __mmask16((1u << n) - 1); }
    static R zero() { return _mm512_setzero_ps(); }
    static R load(const T* p) { return _mm512_loadu_ps(p); }
    static void store(T* p, R r) { _mm512_storeu_ps(p, r); }
    static R broadcast(T x) { return _mm512_set1_ps(x); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
    static T reduce(R r) {  // by hand: GCC 12's _mm512_reduce_add_* warn in its own header
        alignas(64) T lanes[16];
        _mm512_store_ps(lanes, r);
        T sum = 0;
        for (int i = 0; i < 8; ++i) sum += lanes[i] + lanes[i + 8];
        return sum;
    }
};

struct F64 {
    using T = double;
    using R = __m512d;
    static constexpr int width = 8;
    static constexpr bool has_transpose = true;
    static void transpose(R r[8]) { transpose8(r); }
    static R load_first(const T* p, index n) { return _mm512_maskz_loadu_pd(first(n), p); }
    static void store_first(T* p, R r, index n) { _mm512_mask_storeu_pd(p, first(n), r); }
    static __mmask8 first(index n) { return __mmask8((1u << n) - 1); }
    static R zero() { return _mm512_setzero_pd(); }
    static R load(const T* p) { return _mm512_loadu_pd(p); }
    static void store(T* p, R r) { _mm512_storeu_pd(p, r); }
    static R broadcast(T x) { return _mm512_set1_pd(x); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
    static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
    static T reduce(R r) {
        alignas(64) T lanes[8];
        _mm512_store_pd(lanes, r);
        return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
               ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    }
};

}  // namespace avx512

const Kernel& avx512_kernel() {
    // float tiles 12 × 32, double 12 × 16; K blocks of 256; N blocks of 1024 floats, 512 doubles.
    static const Kernel kernel =
        avx512::make_kernel<avx512::F32, 12, 2, 256, 1024,
                            avx512::F64, 12, 2, 256, 512>("avx512");
    return kernel;
}

}  // namespace fastmlp::gemm_detail
#endif
