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
    static constexpr bool has_pack_transposed = true;
    // dst (kc × NR) = the transpose of NR rows of src (row j at src + j · ld, kc long).
    template <int NR>
    static void pack_transposed(T* dst, const T* src, index ld, index kc) {
        const index kc16 = kc & ~index(15);
        for (int half = 0; half < NR; half += 16) {
            const T* rows = src + half * ld;
            for (index p = 0; p < kc16; p += 16) {
                __m512 r[16];
                for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(rows + j * ld + p);
                transpose16(r);
                for (int q = 0; q < 16; ++q) _mm512_storeu_ps(dst + (p + q) * NR + half, r[q]);
            }
            for (index p = kc16; p < kc; ++p)
                for (int j = 0; j < 16; ++j) dst[p * NR + half + j] = rows[j * ld + p];
        }
    }
    // dst (kc × MR, zero-padded) = op(A)[0:rows, 0:kc] for rows ≤ MR ≤ 16, with
    // op(A)(i, p) at src[i · rs + p · cs] and rs == 1 or cs == 1 (the sliver of
    // A the micro-kernel broadcasts from; see pack_a). Each column of the sliver
    // is written as 16 floats, the 16 − MR past it overwritten by the next; the
    // last column's store is masked so nothing lands beyond dst's kc · MR.
    static constexpr bool has_pack_sliver = true;
    template <int MR>
    static void pack_sliver(T* dst, const T* src, index rs, index cs, index kc, index rows) {
        static_assert(MR <= 16, "a sliver column is one vector");
        const __mmask16 valid = __mmask16((1u << rows) - 1);
        const __mmask16 column = __mmask16((1u << MR) - 1);
        auto put = [&](index p, __m512 v) {
            if (p + 1 < kc) _mm512_storeu_ps(dst + p * MR, v);
            else _mm512_mask_storeu_ps(dst + p * MR, column, v);
        };
        if (rs == 1) {  // columns of the sliver contiguous: a masked load each
            for (index p = 0; p < kc; ++p) put(p, _mm512_maskz_loadu_ps(valid, src + p * cs));
            return;
        }
        // rows contiguous: 16 columns at a time through an in-register transpose
        const index kc16 = kc & ~index(15);
        for (index p = 0; p < kc16; p += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; ++i)
                r[i] = i < rows ? _mm512_loadu_ps(src + i * rs + p) : _mm512_setzero_ps();
            transpose16(r);
            for (int q = 0; q < 16; ++q) put(p + q, r[q]);
        }
        for (index p = kc16; p < kc; ++p)
            for (int i = 0; i < MR; ++i) dst[p * MR + i] = i < rows ? src[i * rs + p] : T(0);
    }
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
    static constexpr bool has_pack_transposed = true;
    // dst (kc × NR) = the transpose of NR rows of src (row j at src + j · ld, kc long).
    template <int NR>
    static void pack_transposed(T* dst, const T* src, index ld, index kc) {
        static_assert(NR % 8 == 0, "whole vectors of rows");
        const index kc8 = kc & ~index(7);
        for (int eighth = 0; eighth < NR; eighth += 8) {
            const T* rows = src + eighth * ld;
            for (index p = 0; p < kc8; p += 8) {
                __m512d r[8];
                for (int j = 0; j < 8; ++j) r[j] = _mm512_loadu_pd(rows + j * ld + p);
                transpose8(r);
                for (int q = 0; q < 8; ++q) _mm512_storeu_pd(dst + (p + q) * NR + eighth, r[q]);
            }
            for (index p = kc8; p < kc; ++p)
                for (int j = 0; j < 8; ++j) dst[p * NR + eighth + j] = rows[j * ld + p];
        }
    }
    // As F32::pack_sliver, for 8 < MR ≤ 16: a column of the sliver is two
    // vectors (rows 0–7 and 8–15, the second padded with zeros).
    static constexpr bool has_pack_sliver = true;
    template <int MR>
    static void pack_sliver(T* dst, const T* src, index rs, index cs, index kc, index rows) {
        static_assert(MR > 8 && MR <= 16, "a sliver column is two vectors");
        const __mmask8 valid_lo = __mmask8(rows >= 8 ? 0xffu : (1u << rows) - 1);
        const __mmask8 valid_hi = __mmask8(rows <= 8 ? 0u : (1u << (rows - 8)) - 1);
        const __mmask8 column_hi = __mmask8((1u << (MR - 8)) - 1);
        auto put = [&](index p, __m512d lo, __m512d hi) {
            T* out = dst + p * MR;
            _mm512_storeu_pd(out, lo);
            if (p + 1 < kc) _mm512_storeu_pd(out + 8, hi);
            else _mm512_mask_storeu_pd(out + 8, column_hi, hi);
        };
        if (rs == 1) {  // columns of the sliver contiguous: masked loads
            for (index p = 0; p < kc; ++p) {
                const T* column = src + p * cs;
                put(p, _mm512_maskz_loadu_pd(valid_lo, column),
                    _mm512_maskz_loadu_pd(valid_hi, column + 8));
            }
            return;
        }
        // rows contiguous: 8 columns at a time through two in-register transposes
        const index kc8 = kc & ~index(7);
        for (index p = 0; p < kc8; p += 8) {
            __m512d lo[8], hi[8];
            for (int i = 0; i < 8; ++i) {
                lo[i] = i < rows ? _mm512_loadu_pd(src + i * rs + p) : _mm512_setzero_pd();
                hi[i] = 8 + i < rows ? _mm512_loadu_pd(src + (8 + i) * rs + p)
                                     : _mm512_setzero_pd();
            }
            transpose8(lo);
            transpose8(hi);
            for (int q = 0; q < 8; ++q) put(p + q, lo[q], hi[q]);
        }
        for (index p = kc8; p < kc; ++p)
            for (int i = 0; i < MR; ++i) dst[p * MR + i] = i < rows ? src[i * rs + p] : T(0);
    }
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
