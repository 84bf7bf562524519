// gemm.cpp — cache-blocked, packed, OpenMP-parallel GEMM (portable C++).
//
// The BLIS structure (Goto & van de Geijn 2008) without ISA-specific code:
//   for each macro-tile of C (MC × NC)            <- OpenMP splits these
//     for pc over K by KC                         (fixed order: deterministic)
//       pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide micro-panels (L2)
//       pack op(A)[ic:ic+MC, pc:pc+KC] into MR-tall micro-panels (L2/L1)
//       for each MR × NR micro-tile: micro_kernel (accumulators in registers)
// Packing absorbs the transposes and the edge padding, so one micro-kernel
// serves all four cases. Every element of C is owned by one macro-tile, and its
// K-sum runs in the same order whatever the thread count.
//
// The micro-kernel is plain C++ that the compiler vectorizes for the baseline
// ISA; the packed SIMD kernels with run-time dispatch replace it behind gemm().
#include "fastmlp/gemm.hpp"

#include <algorithm>
#include <vector>

#include "fastmlp/threading.hpp"

namespace fastmlp {
namespace {

// Products below this many FLOPs run on one thread. A fork/join costs ~1 µs on a
// quiet machine but can cost a whole time slice when another process holds the
// other core, so only products that take tens of microseconds go parallel.
constexpr double gemm_parallel_threshold = double(1 << 22);

template <typename T>
struct Blocking;
// Register tiles sized for 16 vector registers of 128 bits (SSE2 / NEON).
template <>
struct Blocking<float> {
    static constexpr index mr = 4, nr = 8, kc = 256, mc = 64, nc = 256;
};
template <>
struct Blocking<double> {
    static constexpr index mr = 4, nr = 4, kc = 256, mc = 64, nc = 128;
};

// Element (i, p) of op(X), where X is row-major with leading dimension ld.
template <typename T>
inline T element(const T* x, index ld, bool trans, index row, index col) {
    return trans ? x[col * ld + row] : x[row * ld + col];
}

// Packs alpha · op(A)[ic:ic+mc, pc:pc+kc] as ceil(mc/MR) micro-panels, each kc × MR
// (column of the panel contiguous), zero-padding the last one.
template <typename T>
void pack_a(T* dst, const T* a, index lda, bool trans, index ic, index pc, index mc,
            index kc, T alpha) {
    constexpr index mr = Blocking<T>::mr;
    for (index ir = 0; ir < mc; ir += mr) {
        const index rows = std::min(mr, mc - ir);
        for (index p = 0; p < kc; ++p) {
            for (index i = 0; i < rows; ++i)
                dst[p * mr + i] = alpha * element(a, lda, trans, ic + ir + i, pc + p);
            for (index i = rows; i < mr; ++i) dst[p * mr + i] = T(0);
        }
        dst += kc * mr;
    }
}

// Packs op(B)[pc:pc+kc, jc:jc+nc] as ceil(nc/NR) micro-panels, each kc × NR.
template <typename T>
void pack_b(T* dst, const T* b, index ldb, bool trans, index pc, index jc, index kc,
            index nc) {
    constexpr index nr = Blocking<T>::nr;
    for (index jr = 0; jr < nc; jr += nr) {
        const index cols = std::min(nr, nc - jr);
        for (index p = 0; p < kc; ++p) {
            for (index j = 0; j < cols; ++j)
                dst[p * nr + j] = element(b, ldb, trans, pc + p, jc + jr + j);
            for (index j = cols; j < nr; ++j) dst[p * nr + j] = T(0);
        }
        dst += kc * nr;
    }
}

// C[0:rows, 0:cols] += Apanel (MR × kc) · Bpanel (kc × NR); accumulators in registers.
template <typename T>
inline void micro_kernel(index kc, const T* __restrict ap, const T* __restrict bp,
                         T* __restrict c, index ldc, index rows, index cols) {
    constexpr index mr = Blocking<T>::mr, nr = Blocking<T>::nr;
    T acc[mr][nr] = {};
    for (index p = 0; p < kc; ++p) {
        for (index i = 0; i < mr; ++i)
            for (index j = 0; j < nr; ++j) acc[i][j] += ap[p * mr + i] * bp[p * nr + j];
    }
    if (rows == mr && cols == nr) {
        for (index i = 0; i < mr; ++i)
            for (index j = 0; j < nr; ++j) c[i * ldc + j] += acc[i][j];
    } else {
        for (index i = 0; i < rows; ++i)
            for (index j = 0; j < cols; ++j) c[i * ldc + j] += acc[i][j];
    }
}

template <typename T>
void scale_tile(T* c, index ldc, index rows, index cols, T beta) {
    for (index i = 0; i < rows; ++i) {
        T* row = c + i * ldc;
        if (beta == T(0))
            std::fill(row, row + cols, T(0));
        else if (beta != T(1))
            for (index j = 0; j < cols; ++j) row[j] *= beta;
    }
}

template <typename T>
void gemm_blocked(bool ta, bool tb, index m, index n, index k, T alpha, const T* a,
                  index lda, const T* b, index ldb, T beta, T* c, index ldc) {
    using B = Blocking<T>;
    const index tiles_m = (m + B::mc - 1) / B::mc;
    const index tiles_n = (n + B::nc - 1) / B::nc;
    const index tiles = tiles_m * tiles_n;
    const int nt = static_cast<int>(std::min<index>(
        threads_for(2.0 * double(m) * double(n) * double(k), gemm_parallel_threshold), tiles));
    note_parallel_region(nt);

#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (index t = 0; t < tiles; ++t) {
        // Packing buffers: one pair per thread, grown once, reused by every call.
        thread_local std::vector<T> a_pack, b_pack;
        const index ic = (t / tiles_n) * B::mc, jc = (t % tiles_n) * B::nc;
        const index mc = std::min(B::mc, m - ic), nc = std::min(B::nc, n - jc);
        T* c_tile = c + ic * ldc + jc;
        scale_tile(c_tile, ldc, mc, nc, beta);
        if (k == 0 || alpha == T(0)) continue;
        const index a_size = ((B::mc + B::mr - 1) / B::mr) * B::mr * B::kc;
        const index b_size = ((B::nc + B::nr - 1) / B::nr) * B::nr * B::kc;
        if (index(a_pack.size()) < a_size) a_pack.resize(a_size);
        if (index(b_pack.size()) < b_size) b_pack.resize(b_size);
        for (index pc = 0; pc < k; pc += B::kc) {
            const index kc = std::min(B::kc, k - pc);
            pack_b(b_pack.data(), b, ldb, tb, pc, jc, kc, nc);
            pack_a(a_pack.data(), a, lda, ta, ic, pc, mc, kc, alpha);
            for (index jr = 0; jr < nc; jr += B::nr) {
                const T* bp = b_pack.data() + (jr / B::nr) * B::nr * kc;
                for (index ir = 0; ir < mc; ir += B::mr) {
                    const T* ap = a_pack.data() + (ir / B::mr) * B::mr * kc;
                    micro_kernel(kc, ap, bp, c_tile + ir * ldc + jr, ldc,
                                 std::min(B::mr, mc - ir), std::min(B::nr, nc - jr));
                }
            }
        }
    }
}

}  // namespace

void gemm_check(Transpose trans_a, Transpose trans_b, index m, index n, index k,
                index lda, index ldb, index ldc) {
    require(m >= 0 && n >= 0 && k >= 0, "gemm: sizes must be non-negative");
    const index a_cols = trans_a == Transpose::none ? k : m;
    const index b_cols = trans_b == Transpose::none ? n : k;
    require(lda >= std::max<index>(1, a_cols), "gemm: lda is smaller than a row of A");
    require(ldb >= std::max<index>(1, b_cols), "gemm: ldb is smaller than a row of B");
    require(ldc >= std::max<index>(1, n), "gemm: ldc is smaller than a row of C");
}

template <typename T>
void gemm(Transpose trans_a, Transpose trans_b, index m, index n, index k, T alpha,
          const T* a, index lda, const T* b, index ldb, T beta, T* c, index ldc) {
    gemm_check(trans_a, trans_b, m, n, k, lda, ldb, ldc);
    if (m == 0 || n == 0) return;
    gemm_blocked(trans_a == Transpose::transpose, trans_b == Transpose::transpose, m, n, k,
                 alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
void gemm_naive(Transpose trans_a, Transpose trans_b, index m, index n, index k, T alpha,
                const T* a, index lda, const T* b, index ldb, T beta, T* c, index ldc) {
    gemm_check(trans_a, trans_b, m, n, k, lda, ldb, ldc);
    const bool ta = trans_a == Transpose::transpose, tb = trans_b == Transpose::transpose;
    for (index i = 0; i < m; ++i)
        for (index j = 0; j < n; ++j) {
            T sum = 0;
            for (index p = 0; p < k; ++p)
                sum += element(a, lda, ta, i, p) * element(b, ldb, tb, p, j);
            T& out = c[i * ldc + j];
            out = alpha * sum + (beta == T(0) ? T(0) : beta * out);
        }
}

#define FASTMLP_INSTANTIATE(T)                                                             \
    template void gemm<T>(Transpose, Transpose, index, index, index, T, const T*, index,  \
                          const T*, index, T, T*, index);                                 \
    template void gemm_naive<T>(Transpose, Transpose, index, index, index, T, const T*,   \
                                index, const T*, index, T, T*, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
