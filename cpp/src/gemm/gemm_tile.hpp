// gemm_tile.hpp — the BLIS loops and the register-tile micro-kernel, written once
// over a "vector traits" type V and included by each ISA file, which compiles
// it with its own flags inside its own namespace (FASTMLP_GEMM_ISA).
//
// V provides: T (scalar), R (register type), width, zero(), load(p), store(p, r),
// broadcast(x), fma(a, b, c) = a·b + c, mul(a, b), reduce(r) = the sum of r's lanes,
// and has_transpose; when true, also transpose(r) (r[width]: r[i] becomes column
// i), load_first(p, n) (lanes [0, n) from p, the others 0; nothing read beyond)
// and store_first(p, r, n) (lanes [0, n) to p; nothing written beyond), with
// which the packing below transposes whole blocks in registers.
//
// Loops over one rectangle of C (the micro-kernel never loops over M or N):
//   for jc over N by NC
//     for pc over K by KC               (fixed order: each C element's sum is fixed)
//       pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide micro-panels (L2)
//       for ir over M by MR: pack the MR × KC sliver of A (L1)
//         for jr over NC by NR: micro_kernel   (MR × NR accumulators in registers)
// A is packed one MR × KC sliver at a time (L1), just before its row of tiles,
// when that row has more than two tiles; otherwise it is read in place. After
// the last K block, each finished tile goes through the epilogue, if any.
#pragma once

#include "gemm_kernels.hpp"

#ifndef FASTMLP_GEMM_ISA
#error "define FASTMLP_GEMM_ISA (the namespace of this kernel) before including gemm_tile.hpp"
#endif

namespace fastmlp::gemm_detail::FASTMLP_GEMM_ISA {

inline index smaller(index x, index y) { return x < y ? x : y; }

// Where the micro-kernel finds A: a packed sliver (element (i, p) at
// a[p · MR + i], a compile-time stride) or A in place through its strides.
template <typename T, int MR>
struct PackedA {
    static constexpr bool packed = true;
    const T* a;
    const T* column(index p) const { return a + p * MR; }
    T at(const T* column, int i) const { return column[i]; }
};
template <typename T>
struct StridedA {
    static constexpr bool packed = false;
    const T* a;
    index rs, cs;
    const T* column(index p) const { return a + p * cs; }
    T at(const T* column, int i) const { return column[i * rs]; }
};

// C[0:ROWS, 0:cols] = alpha · Asliver (ROWS × kc) · Bpanel (kc × NR) + beta · C.
// Row p of the B panel starts at b + p · rs_bp (NR when packed).
// With PREFETCH, C's rows are requested first (their loads come at the end) and,
// in the loop, the B row prefetch_rows ahead (the next micro-panel's first rows
// near the end, when B is packed) and likewise the packed A sliver's column:
// B's panels stream from L2, and where KC makes the sliver larger than what L1
// keeps beside them (Intel's KC 384), so does A; L2 latency then hides behind
// the FMAs. Prefetches never fault, so reading past the end is harmless.
constexpr index prefetch_rows = 8;
constexpr index cache_line = 64;

inline void prefetch(const void* p, bool for_write) {
#if defined(__GNUC__) || defined(__clang__)
    if (for_write) __builtin_prefetch(p, 1, 3);
    else __builtin_prefetch(p, 0, 3);
#else
    (void)p, (void)for_write;
#endif
}

template <class V, int ROWS, int NV, bool PREFETCH, class A>
inline void micro_kernel(index kc, const A& a, const typename V::T* b, index rs_bp,
                         typename V::T* c, index rs_c, index cs_c, index cols,
                         typename V::T alpha, typename V::T beta) {
    using T = typename V::T;
    using R = typename V::R;
    constexpr int nr = NV * V::width;
    constexpr int row_bytes = nr * int(sizeof(T));
    if constexpr (PREFETCH) {
        if (cs_c == 1)
            for (int i = 0; i < ROWS; ++i)
                for (int byte = 0; byte < row_bytes; byte += cache_line)
                    prefetch(reinterpret_cast<const char*>(c + i * rs_c) + byte, true);
    }
    R acc[ROWS][NV];
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

    // One step of K: NV vectors of B, ROWS broadcasts of A, ROWS · NV FMAs.
    auto step = [&](index p) {
        if constexpr (PREFETCH) {
            const char* ahead = reinterpret_cast<const char*>(b + (p + prefetch_rows) * rs_bp);
#pragma GCC unroll 4
            for (int byte = 0; byte < row_bytes; byte += cache_line)
                prefetch(ahead + byte, false);
            if constexpr (A::packed) {
                const char* a_ahead = reinterpret_cast<const char*>(a.column(p + prefetch_rows));
#pragma GCC unroll 4
                for (int byte = 0; byte < ROWS * int(sizeof(T)); byte += cache_line)
                    prefetch(a_ahead + byte, false);
            }
        }
        R bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = V::load(b + p * rs_bp + v * V::width);
        const T* ap = a.column(p);
#pragma GCC unroll 16
        for (int i = 0; i < ROWS; ++i) {
            const R ai = V::broadcast(a.at(ap, i));
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
        }
    };
    if constexpr (ROWS * NV >= 16) {
        // A full tile's step is ~40 instructions, 24 of them FMAs: an Intel core
        // with two FMA ports retires it in 12 cycles but renames only 4 µops a
        // cycle, so the loop's own counter and pointer updates (4 µops a step)
        // would take a tenth of the issue slots. Four steps a loop cut that to one.
#pragma GCC unroll 4
        for (index p = 0; p < kc; ++p) step(p);
    } else {
        for (index p = 0; p < kc; ++p) step(p);
    }

    const R alpha_v = V::broadcast(alpha);
    if (cs_c == 1 && cols == nr) {
        const R beta_v = V::broadcast(beta);
#pragma GCC unroll 16
        for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                T* cp = c + i * rs_c + v * V::width;
                const R product = V::mul(alpha_v, acc[i][v]);
                if (beta == T(0))
                    V::store(cp, product);
                else
                    V::store(cp, V::fma(beta_v, V::load(cp), product));
            }
        return;
    }
    // Edge tiles and strided C: through a buffer, element by element.
    alignas(64) T tile[ROWS][nr];
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) V::store(&tile[i][v * V::width], V::mul(alpha_v, acc[i][v]));
    for (int i = 0; i < ROWS; ++i)
        for (index j = 0; j < cols; ++j) {
            T& out = c[i * rs_c + j * cs_c];
            out = beta == T(0) ? tile[i][j] : beta * out + tile[i][j];
        }
}

// The micro-kernel for `rows` (1 ≤ rows ≤ ROWS) rows: each count is its own instance.
template <class V, int ROWS, int NV, bool PREFETCH, class A>
inline void micro_kernel_rows(index rows, index kc, const A& a, const typename V::T* b,
                              index rs_bp, typename V::T* c, index rs_c, index cs_c, index cols,
                              typename V::T alpha, typename V::T beta) {
    if constexpr (ROWS > 0) {
        if (rows == ROWS)
            micro_kernel<V, ROWS, NV, PREFETCH>(kc, a, b, rs_bp, c, rs_c, cs_c, cols, alpha, beta);
        else
            micro_kernel_rows<V, ROWS - 1, NV, PREFETCH>(rows, kc, a, b, rs_bp, c, rs_c, cs_c,
                                                         cols, alpha, beta);
    }
}

// dst (kc × NR) = the transpose of NR rows of src (row j at src + j · ld, kc
// long): width × width blocks through registers (V::has_transpose).
template <class V, int NR>
void pack_transposed(typename V::T* dst, const typename V::T* src, index ld, index kc) {
    using T = typename V::T;
    constexpr int w = V::width;
    static_assert(NR % w == 0, "whole vectors of rows");
    const index kc_blocks = kc / w * w;
    for (int block = 0; block < NR; block += w) {
        const T* rows = src + block * ld;
        for (index p = 0; p < kc_blocks; p += w) {
            typename V::R r[w];
            for (int j = 0; j < w; ++j) r[j] = V::load(rows + j * ld + p);
            V::transpose(r);
            for (int q = 0; q < w; ++q) V::store(dst + (p + q) * NR + block, r[q]);
        }
        for (index p = kc_blocks; p < kc; ++p)
            for (int j = 0; j < w; ++j) dst[p * NR + block + j] = rows[j * ld + p];
    }
}

// dst (kc × MR, zero-padded) = op(A)[0:rows, 0:kc], op(A)(i, p) at
// src[i · rs + p · cs] with rs == 1 or cs == 1 (V::has_transpose). A column of
// the sliver is ceil(MR / width) vectors, each stored whole: what spills past
// the column is overwritten by the next one, and the last column's stores stop
// at its end. Columns contiguous (rs == 1): masked loads; rows contiguous:
// width × width blocks through registers.
template <class V, int MR>
void pack_sliver(typename V::T* dst, const typename V::T* src, index rs, index cs, index kc,
                 index rows) {
    using T = typename V::T;
    using R = typename V::R;
    constexpr int w = V::width, parts = (MR + w - 1) / w;
    auto lanes = [](int part, index count) {  // of `count` values, those in this part
        return int(count <= part * w ? 0 : count - part * w >= w ? w : count - part * w);
    };
    auto put = [&](index p, const R* column) {
        T* out = dst + p * MR;
        for (int h = 0; h < parts; ++h) {
            if (p + 1 < kc) V::store(out + h * w, column[h]);
            else V::store_first(out + h * w, column[h], lanes(h, MR));
        }
    };
    if (rs == 1) {
        for (index p = 0; p < kc; ++p) {
            R column[parts];
            for (int h = 0; h < parts; ++h)
                column[h] = V::load_first(src + p * cs + h * w, lanes(h, rows));
            put(p, column);
        }
        return;
    }
    const index kc_blocks = kc / w * w;
    for (index p = 0; p < kc_blocks; p += w) {
        R r[parts][w];
        for (int h = 0; h < parts; ++h) {
            for (int i = 0; i < w; ++i) {
                const index row = h * w + i;
                r[h][i] = row < rows ? V::load(src + row * rs + p) : V::zero();
            }
            V::transpose(r[h]);
        }
        for (int q = 0; q < w; ++q) {
            R column[parts];
            for (int h = 0; h < parts; ++h) column[h] = r[h][q];
            put(p + q, column);
        }
    }
    for (index p = kc_blocks; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = i < rows ? src[i * rs + p] : T(0);
}

// Packs op(B)[pc:pc+kc, jc:jc+nc] as ceil(nc / NR) micro-panels of kc × NR, zero-padded.
// A kernel whose traits have transpose does full panels of a column-stored
// op(B) (B = Wᵀ) with in-register transposes.
template <class V, int NR>
void pack_b(typename V::T* dst, const GemmArgs<typename V::T>& g, index pc, index kc, index jc,
            index nc) {
    using T = typename V::T;
    const index full = (nc / NR) * NR;
    if (g.cs_b == 1 && full > 0) {
        // Rows of op(B) contiguous: read each row once, front to back, and deal
        // its NR-wide pieces out to the panels (reading a panel at a time would
        // walk down the rows, ldb apart, and defeat the prefetcher).
        for (index p = 0; p < kc; ++p) {
            const T* row = g.b + (pc + p) * g.rs_b + jc;
            for (index jr = 0; jr < full; jr += NR) {
                T* out = dst + jr * kc + p * NR;
                for (int v = 0; v < NR; v += V::width) V::store(out + v, V::load(row + jr + v));
            }
        }
        dst += full * kc;
        jc += full;
        nc -= full;
    }
    for (index jr = 0; jr < nc; jr += NR) {
        const index cols = smaller(NR, nc - jr);
        const T* src = g.b + pc * g.rs_b + (jc + jr) * g.cs_b;
        if constexpr (V::has_transpose) {
            if (g.rs_b == 1 && g.cs_b != 1 && cols == NR) {
                pack_transposed<V, NR>(dst, src, g.cs_b, kc);
                dst += kc * NR;
                continue;
            }
        }
        if (g.cs_b == 1) {  // the ragged last panel
            for (index p = 0; p < kc; ++p) {
                const T* row = src + p * g.rs_b;
                T* out = dst + p * NR;
                for (index j = 0; j < cols; ++j) out[j] = row[j];
                for (index j = cols; j < NR; ++j) out[j] = T(0);
            }
        } else {  // columns of op(B) contiguous (or general strides): read down the columns
            for (index j = 0; j < cols; ++j) {
                const T* column = src + j * g.cs_b;
                for (index p = 0; p < kc; ++p) dst[p * NR + j] = column[p * g.rs_b];
            }
            for (index p = 0; p < kc; ++p)
                for (index j = cols; j < NR; ++j) dst[p * NR + j] = T(0);
        }
        dst += kc * NR;
    }
}

// Packs the sliver op(A)[ir:ir+rows, pc:pc+kc] as kc columns of MR (p-major,
// zero-padded): the micro-kernel then reads A sequentially. Read in place, the
// MR rows of a row-major A lie lda apart, and with lda a multiple of 1 KiB they
// all map to the same few L1 sets and evict each other.
template <class V, int MR>
void pack_a(typename V::T* dst, const GemmArgs<typename V::T>& g, index ir, index rows, index pc,
            index kc) {
    using T = typename V::T;
    const T* src = g.a + ir * g.rs_a + pc * g.cs_a;
    if constexpr (V::has_transpose) {
        if (g.rs_a == 1 || g.cs_a == 1) {
            pack_sliver<V, MR>(dst, src, g.rs_a, g.cs_a, kc, rows);
            return;
        }
    }
    if (g.rs_a == 1) {  // columns of the sliver contiguous
        for (index p = 0; p < kc; ++p) {
            const T* column = src + p * g.cs_a;
            T* out = dst + p * MR;
            for (index i = 0; i < rows; ++i) out[i] = column[i];
            for (index i = rows; i < MR; ++i) out[i] = T(0);
        }
    } else {
        for (index i = 0; i < rows; ++i) {
            const T* row = src + i * g.rs_a;
            for (index p = 0; p < kc; ++p) dst[p * MR + i] = row[p * g.cs_a];
        }
        for (index i = rows; i < MR; ++i)
            for (index p = 0; p < kc; ++p) dst[p * MR + i] = T(0);
    }
}

template <class V, int MR, int NV, bool PREFETCH>
void gemm_tile(const GemmArgs<typename V::T>& g, const Blocking& blocking, index i0, index i1,
               index j0, index j1, typename V::T* b_pack) {
    using T = typename V::T;
    constexpr int nr = NV * V::width;
    const index KC = k_block(blocking, g.k), NC = blocking.nc;
    // With few rows of A each B panel is used once or twice, and a B that spans
    // no more than L1 (32 KiB) stays there however it is laid out: packing would
    // cost more than it saves, so full panels of row-contiguous B are read in
    // place and only the ragged last panel is copied (zero-padded).
    const bool b_in_place =
        g.cs_b == 1 && (i1 - i0 <= 2 * MR || g.k * g.rs_b * index(sizeof(T)) <= (index(32) << 10));
    // The A sliver goes after the B block in the same buffer (see tile_buffer_size).
    T* a_pack = b_pack + KC * ((smaller(NC, j1 - j0) + nr - 1) / nr) * nr;
    for (index jc = j0; jc < j1; jc += NC) {
        const index nc = smaller(NC, j1 - jc);
        const index full = b_in_place ? (nc / nr) * nr : 0;  // columns read in place
        for (index pc = 0; pc < g.k; pc += KC) {
            const index kc = smaller(KC, g.k - pc);
            const T beta = pc == 0 ? g.beta : T(1);  // later K blocks add to C
            const bool last_k = pc + kc >= g.k;       // C is final after this block
            if (full < nc) pack_b<V, nr>(b_pack, g, pc, kc, jc + full, nc - full);
            // Packing a sliver of A pays off when it serves several panels of B.
            const bool pack_slivers = nc > 2 * nr;
            for (index ir = i0; ir < i1; ir += MR) {
                const index rows = smaller(MR, i1 - ir);
                auto row_of_tiles = [&](const auto& a) {
                    for (index jr = 0; jr < nc; jr += nr) {
                        const bool in_place = jr < full;
                        const T* b = in_place ? g.b + pc * g.rs_b + (jc + jr)
                                              : b_pack + ((jr - full) / nr) * kc * nr;
                        const index cols = smaller(nr, nc - jr);
                        micro_kernel_rows<V, MR, NV, PREFETCH>(rows, kc, a, b, in_place ? g.rs_b : index(nr),
                                                     g.c + ir * g.rs_c + (jc + jr) * g.cs_c,
                                                     g.rs_c, g.cs_c, cols, g.alpha, beta);
                        if (last_k && g.epilogue.fn != nullptr)  // the tile is still in L1
                            g.epilogue.fn(g.epilogue.context, ir, ir + rows, jc + jr,
                                          jc + jr + cols);
                    }
                };
                if (pack_slivers) {
                    pack_a<V, MR>(a_pack, g, ir, rows, pc, kc);
                    row_of_tiles(PackedA<T, MR>{a_pack});
                } else {
                    row_of_tiles(StridedA<T>{g.a + ir * g.rs_a + pc * g.cs_a, g.rs_a, g.cs_a});
                }
            }
        }
    }
}

// One dot product per row, for N == 1 with rows of A contiguous (cs_a == 1):
// c[i] = alpha · Σ_p a[i, p] · x[p] + beta · c[i], x contiguous (K). Rows go in
// fours (four accumulators hide the FMA latency); each row's sum runs in the
// same order however rows are grouped or split among threads.
template <class V>
void gemv_rows(const GemmArgs<typename V::T>& g, index i0, index i1, const typename V::T* x) {
    using T = typename V::T;
    using R = typename V::R;
    const index k = g.k, k_vec = (k / V::width) * V::width;
    auto finish = [&](index i, const T* row, R lanes) {
        T sum = V::reduce(lanes);
        for (index p = k_vec; p < k; ++p) sum += row[p] * x[p];
        T& out = g.c[i * g.rs_c];
        out = g.beta == T(0) ? g.alpha * sum : g.beta * out + g.alpha * sum;
    };
    index i = i0;
    for (; i + 4 <= i1; i += 4) {
        const T* r0 = g.a + i * g.rs_a;
        const T* r1 = r0 + g.rs_a;
        const T* r2 = r1 + g.rs_a;
        const T* r3 = r2 + g.rs_a;
        R s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
        for (index p = 0; p < k_vec; p += V::width) {
            const R xv = V::load(x + p);
            s0 = V::fma(V::load(r0 + p), xv, s0);
            s1 = V::fma(V::load(r1 + p), xv, s1);
            s2 = V::fma(V::load(r2 + p), xv, s2);
            s3 = V::fma(V::load(r3 + p), xv, s3);
        }
        finish(i, r0, s0);
        finish(i + 1, r1, s1);
        finish(i + 2, r2, s2);
        finish(i + 3, r3, s3);
    }
    for (; i < i1; ++i) {
        const T* r0 = g.a + i * g.rs_a;
        R s0 = V::zero();
        for (index p = 0; p < k_vec; p += V::width) s0 = V::fma(V::load(r0 + p), V::load(x + p), s0);
        finish(i, r0, s0);
    }
}

// One row of C, for M == 1 with rows of op(B) contiguous (cs_b == 1):
// c[j] = alpha · Σ_p a[p] · b[p, j] + beta · c[j], summed over p in order, four
// vectors of columns at a time, then one, then one column at a time. The
// driver splits columns only at multiples of row_columns (gemm_kernels.hpp),
// so which of these paths a column takes does not depend on the thread count.

template <class V>
void row_times_matrix(const GemmArgs<typename V::T>& g, index j0, index j1) {
    using T = typename V::T;
    using R = typename V::R;
    constexpr int w = V::width;
    const T* a = g.a;
    auto put = [&](index j, R sum) {
        const R scaled = V::mul(V::broadcast(g.alpha), sum);
        T* c = g.c + j * g.cs_c;
        V::store(c, g.beta == T(0) ? scaled : V::fma(V::broadcast(g.beta), V::load(c), scaled));
    };
    index j = j0;
    if (g.cs_c == 1) {
        for (; j + 4 * w <= j1; j += 4 * w) {
            R s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
            for (index p = 0; p < g.k; ++p) {
                const R ap = V::broadcast(a[p * g.cs_a]);
                const T* row = g.b + p * g.rs_b + j;
                s0 = V::fma(ap, V::load(row), s0);
                s1 = V::fma(ap, V::load(row + w), s1);
                s2 = V::fma(ap, V::load(row + 2 * w), s2);
                s3 = V::fma(ap, V::load(row + 3 * w), s3);
            }
            put(j, s0);
            put(j + w, s1);
            put(j + 2 * w, s2);
            put(j + 3 * w, s3);
        }
        for (; j + w <= j1; j += w) {
            R s0 = V::zero();
            for (index p = 0; p < g.k; ++p)
                s0 = V::fma(V::broadcast(a[p * g.cs_a]), V::load(g.b + p * g.rs_b + j), s0);
            put(j, s0);
        }
    }
    for (; j < j1; ++j) {
        T sum = 0;
        for (index p = 0; p < g.k; ++p) sum += a[p * g.cs_a] * g.b[p * g.rs_b + j];
        T& out = g.c[j * g.cs_c];
        out = g.beta == T(0) ? g.alpha * sum : g.beta * out + g.alpha * sum;
    }
}

// The kernel of one ISA: register tiles of MR × (NV · width) for float and for
// double; by default K blocks of KC and N blocks of NC, without prefetching.
template <class F32, int MR32, int NV32, index KC32, index NC32, class F64, int MR64, int NV64,
          index KC64, index NC64>
Kernel make_kernel(const char* name) {
    return Kernel{name,
                  Blocking{MR32, NV32 * F32::width, KC32, NC32, false},
                  Blocking{MR64, NV64 * F64::width, KC64, NC64, false},
                  {&gemm_tile<F32, MR32, NV32, false>, &gemm_tile<F32, MR32, NV32, true>},
                  {&gemm_tile<F64, MR64, NV64, false>, &gemm_tile<F64, MR64, NV64, true>},
                  &gemv_rows<F32>,
                  &gemv_rows<F64>,
                  &row_times_matrix<F32>,
                  &row_times_matrix<F64>};
}

}  // namespace fastmlp::gemm_detail::FASTMLP_GEMM_ISA
