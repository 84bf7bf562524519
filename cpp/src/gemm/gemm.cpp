// gemm.cpp — the GEMM driver: checks, run-time kernel choice, threads.
//
// The kernels (gemm_avx512.cpp, gemm_avx2.cpp, gemm_portable.cpp) compute one
// rectangle of C each call; see gemm_tile.hpp for their loops. Here:
//   - the kernel and its blocking are the ones gemm_config.cpp chose for the
//     CPU (the environment or set_gemm_config() can force others);
//   - a product with one output column (or one output row read along
//     contiguous columns of op(B): one sample through X · Wᵀ) is a set of dot
//     products, not a tile that would be mostly padding; one output row read
//     along contiguous rows of op(B) (one sample through dY · W) is that row
//     of A times B's rows, unpacked;
//   - a product with fewer columns than the kernel's tile width is computed
//     transposed (Cᵀ = op(B)ᵀ · op(A)ᵀ);
//   - C is cut into a few rectangles per thread, as square as the tiles allow
//     (each packs its own slivers of A and block of B), claimed by the pool's
//     threads as they come (threading.hpp). Every element of C is still summed
//     over K in the same order by one thread: results do not depend on the
//     thread count.
#include "fastmlp/gemm.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fastmlp/threading.hpp"
#include "gemm_kernels.hpp"

namespace fastmlp {
namespace {

using gemm_detail::Blocking;
using gemm_detail::GemmArgs;
using gemm_detail::Kernel;

constexpr double gemv_parallel_threshold = double(1 << 16);
// Below this many elements of C the epilogue runs once over C after the product
// (measured: per tile it costs the seed demo ~0.4 µs of calls; from 64 × 256 on,
// per tile gains 2–7 % of a training step).
constexpr index epilogue_per_tile_threshold = index(1) << 14;

// The float or the double member of a pair (blocking, tile, gemv, row functions).
template <typename T, typename F32, typename F64>
const auto& for_type(const F32& f32, const F64& f64) {
    if constexpr (sizeof(T) == 4) return f32;
    else return f64;
}

template <typename T>
void scale(T* c, index ldc, index m, index n, T beta) {
    for (index i = 0; i < m; ++i) {
        T* row = c + i * ldc;
        if (beta == T(0)) std::fill(row, row + n, T(0));
        else if (beta != T(1))
            for (index j = 0; j < n; ++j) row[j] *= beta;
    }
}

// Scratch of at least `size` values: one buffer per thread and purpose, grown
// once and reused by every call, starting on a 64-byte boundary. (A large
// vector comes from mmap at 16 bytes past a page: every 64-byte load from the
// packed panels would then straddle two cache lines, which costs a second load
// on Intel cores.)
template <typename T, int Purpose>
T* scratch(index size) {
    constexpr index align = 64 / index(sizeof(T));
    thread_local std::vector<T> buffer;
    if (index(buffer.size()) < size + align) buffer.resize(size + align);
    const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
    return buffer.data() + ((64 - address % 64) % 64) / sizeof(T);
}
enum { packing = 0, vector_copy = 1 };

// How C is cut into rectangles for the threads: tasks_m × tasks_n of rows × cols.
struct Grid {
    index rows, cols, tasks_m, tasks_n;
};

// About `tasks` rectangles (a few per thread, so a thread that starts late still
// finds work), as square as the tiles allow: each rectangle packs its own slivers
// of A (cost ∝ rows) and block of B (cost ∝ cols) for rows × cols of work, so
// the packing overhead goes as 1/cols + 1/rows.
Grid choose_grid(index m, index n, const Blocking& blocking, index tasks) {
    auto round_up = [](index x, index to) { return (x + to - 1) / to * to; };
    Grid best{m, n, 1, 1};
    double best_cost = 1e300;
    for (index tasks_m = 1; tasks_m <= tasks; ++tasks_m) {
        const index tasks_n = (tasks + tasks_m - 1) / tasks_m;
        const index rows = round_up((m + tasks_m - 1) / tasks_m, blocking.mr);
        const index cols = round_up((n + tasks_n - 1) / tasks_n, blocking.nr);
        const index used_m = (m + rows - 1) / rows, used_n = (n + cols - 1) / cols;
        if (used_m * used_n < std::min<index>(tasks, ((m + blocking.mr - 1) / blocking.mr) *
                                                         ((n + blocking.nr - 1) / blocking.nr)) /
                                  2)
            continue;  // too few pieces for the threads
        const double cost = 1.0 / double(rows) + 1.0 / double(cols);
        if (cost < best_cost) {
            best_cost = cost;
            best = Grid{rows, cols, used_m, used_n};
        }
    }
    return best;
}

// Cᵀ = op(B)ᵀ · op(A)ᵀ: the same product with the roles of A and B swapped.
// (The epilogue is not carried over: its blocks are in C's frame, not Cᵀ's.)
template <typename T>
GemmArgs<T> transposed(const GemmArgs<T>& g) {
    return GemmArgs<T>{g.n, g.m, g.k, g.alpha, g.b, g.cs_b, g.rs_b, g.a, g.cs_a, g.rs_a,
                       g.beta, g.c, g.cs_c, g.rs_c, GemmEpilogue{}};
}

// The whole of C through the epilogue at once (the paths without register tiles).
template <typename T>
void finish(const GemmArgs<T>& g) {
    if (g.epilogue.fn != nullptr) g.epilogue.fn(g.epilogue.context, 0, g.m, 0, g.n);
}

// fn(begin, end) over [0, count) in pieces of `piece`, for the paths that stream
// their operand once (dot products, a row times a matrix): bound by memory, not
// arithmetic, so two threads pay off much earlier (from `work` = 64 Ki elements)
// than for a tiled product. Piece boundaries do not depend on the thread count.
template <typename F>
void in_pieces(index count, index piece, double work, F&& fn) {
    const int nt = threads_for(work, gemv_parallel_threshold);
    parallel_for(nt, ceil_div(count, piece),
                 [&](index p) { fn(p * piece, std::min(count, (p + 1) * piece)); });
}

// N == 1 with rows of A contiguous: dot products, split by rows among threads.
template <typename T>
void run_gemv(const Kernel& kernel, const GemmArgs<T>& g) {
    const T* x = g.b;
    if (g.rs_b != 1) {  // the column of op(B), gathered
        T* copy = scratch<T, vector_copy>(g.k);
        for (index p = 0; p < g.k; ++p) copy[p] = g.b[p * g.rs_b];
        x = copy;
    }
    const auto gemv = for_type<T>(kernel.gemv_f32, kernel.gemv_f64);
    in_pieces(g.m, 64, double(g.m) * double(g.k),
              [&](index i0, index i1) { gemv(g, i0, i1, x); });
}

// M == 1 with rows of op(B) contiguous: the row of A times B's rows, split by
// columns (at multiples of row_columns) among threads; nothing packed.
template <typename T>
void run_row(const Kernel& kernel, const GemmArgs<T>& g) {
    const auto row = for_type<T>(kernel.row_f32, kernel.row_f64);
    in_pieces(g.n, gemm_detail::row_columns, double(g.n) * double(g.k),
              [&](index j0, index j1) { row(g, j0, j1); });
}

template <typename T>
void run(const gemm_detail::Active& config, GemmArgs<T> g) {
    const Kernel& kernel = *config.kernel;
    const Blocking& blocking = for_type<T>(config.f32, config.f64);
    const auto tile = for_type<T>(kernel.tile_f32, kernel.tile_f64)[blocking.prefetch ? 1 : 0];
    // One output column, or one output row whose products read columns of op(B)
    // that are contiguous (a batch of one through X · Wᵀ): dot products.
    if (g.n == 1 && g.cs_a == 1) {
        run_gemv(kernel, g);
        return finish(g);
    }
    if (g.m == 1 && g.n > 1 && g.rs_b == 1) {
        run_gemv(kernel, transposed(g));
        return finish(g);
    }
    if (g.m == 1 && g.cs_b == 1) {  // one sample through dY · W: no tile would be full
        run_row(kernel, g);
        return finish(g);
    }
    // Fewer columns than the tile is wide: compute Cᵀ, so the tile is not mostly padding.
    if (g.n < blocking.nr && g.m > g.n) {
        const GemmArgs<T> original = g;
        run(config, transposed(g));
        return finish(original);
    }
    const int nt = threads_for(2.0 * double(g.m) * double(g.n) * double(g.k), gemm_parallel_flops);
    const Grid grid = nt == 1 ? Grid{g.m, g.n, 1, 1} : choose_grid(g.m, g.n, blocking, 2 * nt);
    const index pack_size = gemm_detail::tile_buffer_size(blocking, grid.cols, g.k);
    parallel_for(nt, grid.tasks_m * grid.tasks_n, [&](index task) {
        const index i0 = (task / grid.tasks_n) * grid.rows, j0 = (task % grid.tasks_n) * grid.cols;
        if (i0 >= g.m || j0 >= g.n) return;
        T* pack = scratch<T, packing>(pack_size);
        tile(g, blocking, i0, std::min(g.m, i0 + grid.rows), j0, std::min(g.n, j0 + grid.cols),
             pack);
    });
}

// Element (i, p) of op(X), where X is row-major with leading dimension ld.
template <typename T>
inline T element(const T* x, index ld, bool trans, index row, index col) {
    return trans ? x[col * ld + row] : x[row * ld + col];
}

}  // namespace

void gemm_check(Transpose trans_a, Transpose trans_b, index m, index n, index k, index lda,
                index ldb, index ldc) {
    require(m >= 0 && n >= 0 && k >= 0, "gemm: sizes must be non-negative");
    const index a_cols = trans_a == Transpose::none ? k : m;
    const index b_cols = trans_b == Transpose::none ? n : k;
    require(lda >= std::max<index>(1, a_cols), "gemm: lda is smaller than a row of A");
    require(ldb >= std::max<index>(1, b_cols), "gemm: ldb is smaller than a row of B");
    require(ldc >= std::max<index>(1, n), "gemm: ldc is smaller than a row of C");
    // Every element's offset (row · ld + column) must fit an index.
    const char* overflow = "gemm: a matrix's extent (rows × leading dimension) overflows an index";
    checked_product(trans_a == Transpose::none ? m : k, lda, overflow);
    checked_product(trans_b == Transpose::none ? k : n, ldb, overflow);
    checked_product(m, ldc, overflow);
}

template <typename T>
void gemm(Transpose trans_a, Transpose trans_b, index m, index n, index k, T alpha, const T* a,
          index lda, const T* b, index ldb, T beta, T* c, index ldc,
          const GemmEpilogue& epilogue) {
    gemm_check(trans_a, trans_b, m, n, k, lda, ldb, ldc);
    if (m == 0 || n == 0) return;
    const bool ta = trans_a == Transpose::transpose, tb = trans_b == Transpose::transpose;
    const GemmArgs<T> g{m,     n, k, alpha, a,   ta ? 1 : lda, ta ? lda : 1, b, tb ? 1 : ldb,
                        tb ? ldb : 1, beta, c, ldc, 1, epilogue};
    if (k == 0 || alpha == T(0)) {
        scale(c, ldc, m, n, beta);
        return finish(g);
    }
    if (epilogue.fn != nullptr && m * n < epilogue_per_tile_threshold) {
        // C fits in L1 anyway: one pass at the end beats a call per tile.
        GemmArgs<T> plain = g;
        plain.epilogue = GemmEpilogue{};
        run(gemm_detail::active(), plain);
        return finish(g);
    }
    run(gemm_detail::active(), g);
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
                          const T*, index, T, T*, index, const GemmEpilogue&);            \
    template void gemm_naive<T>(Transpose, Transpose, index, index, index, T, const T*,   \
                                index, const T*, index, T, T*, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
