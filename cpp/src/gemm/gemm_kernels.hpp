// gemm_kernels.hpp — the contract between the GEMM driver and its per-ISA kernels.
//
// The driver (gemm.cpp, portable code) checks arguments, picks a kernel at run
// time from the CPU's features, splits C into one rectangle per task and runs
// the tasks on the pool's threads (threading.hpp). Each ISA file
// (gemm_avx512.cpp, gemm_avx2.cpp, gemm_portable.cpp, each compiled with its
// own flags) provides gemm_tile for float and double: the BLIS loops over one
// rectangle of C.
//
// Nothing in an ISA file may use the standard library's templates: an inline
// function compiled there with AVX-512 enabled could be the copy the linker
// keeps for the whole program, and run on a CPU without it.
#pragma once

#include "fastmlp/common.hpp"
#include "fastmlp/gemm.hpp"

namespace fastmlp::gemm_detail {

// op(A) (M, K): element (i, p) at a[i * rs_a + p * cs_a]; op(B) (K, N): (p, j) at
// b[p * rs_b + j * cs_b]; C (M, N): (i, j) at c[i * rs_c + j * cs_c].
// C = alpha · op(A) · op(B) + beta · C, with beta == 0 overwriting C.
template <typename T>
struct GemmArgs {
    index m, n, k;
    T alpha;
    const T* a;
    index rs_a, cs_a;
    const T* b;
    index rs_b, cs_b;
    T beta;
    T* c;
    index rs_c, cs_c;
    GemmEpilogue epilogue;  // applied to each finished register tile (fn may be null)
};

// Register and cache blocking of one kernel for one type (gemm.hpp): KC, NC
// and prefetching are chosen per CPU at run time (gemm_config.cpp). With
// prefetch, the micro-kernel asks for the B rows it will read a few iterations
// ahead and for its C tile (gemm_tile.hpp).
using Blocking = GemmBlocking;

// K's block for a product with k steps: KC, or all of K when it is shorter (the
// packing buffer is sized from it, so a large KC costs nothing on a short K).
inline index k_block(const Blocking& b, index k) { return k < b.kc ? k : b.kc; }

inline index tile_buffer_size(const Blocking& b, index columns, index k) {
    const index nc = columns < b.nc ? columns : b.nc, kc = k_block(b, k);
    return kc * ((nc + b.nr - 1) / b.nr) * b.nr + b.mr * kc;
}

// Computes C[i0:i1, j0:j1] over all of K with the given KC and NC (its MR and NR
// are the kernel's). b_pack holds at least tile_buffer_size(blocking, j1 - j0, g.k)
// values (a block of B, then a sliver of A).
template <typename T>
using TileFunction = void (*)(const GemmArgs<T>& g, const Blocking& blocking, index i0, index i1,
                              index j0, index j1, T* b_pack);

// For N == 1 and cs_a == 1: C[i0:i1, 0] from dot products with x (K, contiguous).
template <typename T>
using GemvFunction = void (*)(const GemmArgs<T>& g, index i0, index i1, const T* x);

// For M == 1 with rows of op(B) contiguous (cs_b == 1): C[0, j0:j1] from the
// row of op(A) times rows of op(B), without packing (one sample through dY · W).
// The driver splits the columns among threads at multiples of row_columns.
template <typename T>
using RowFunction = void (*)(const GemmArgs<T>& g, index j0, index j1);
constexpr index row_columns = 256;

// One ISA's kernel: its register tiles and default cache blocking (f32, f64:
// used where no configuration for the CPU says otherwise), its tile function
// without and with prefetching ([0], [1]), its dot products and its row times matrix.
struct Kernel {
    const char* name;
    Blocking f32, f64;
    TileFunction<float> tile_f32[2];
    TileFunction<double> tile_f64[2];
    GemvFunction<float> gemv_f32;
    GemvFunction<double> gemv_f64;
    RowFunction<float> row_f32;
    RowFunction<double> row_f64;
};

// What gemm() runs with now (gemm_config.cpp): a kernel and its blocking per
// type. Published once and never freed, so a reader may keep the reference.
struct Active {
    const Kernel* kernel;
    Blocking f32, f64;
};
const Active& active();

// Each returns its kernel; the x86 ones exist only in x86-64 builds.
const Kernel& portable_kernel();
#if defined(FASTMLP_X86_KERNELS)
const Kernel& avx2_kernel();
const Kernel& avx512_kernel();
#endif

}  // namespace fastmlp::gemm_detail
