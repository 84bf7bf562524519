// fastmlp/gemm.hpp — general matrix product, row-major.
//
//   C = alpha · op(A) · op(B) + beta · C
//
// op(A) is (M, K), op(B) is (K, N), C is (M, N). Row-major with leading
// dimensions (the distance between rows): A[i, p] is A[i * lda + p] when
// op is none and A[p * lda + i] when op is transpose; likewise for B.
// beta == 0 overwrites C (NaN/inf already in C do not propagate), as in BLAS.
//
// A dense layer needs three of the four cases (B batch, I in, O out):
//   forward      Z  = A_prev · Wᵀ     gemm(none, transpose)   (B,I)·(I,O)
//   input grad   dA = dZ · W          gemm(none, none)        (B,O)·(O,I)
//   weight grad  dW += dZᵀ · A_prev   gemm(transpose, none)   (O,B)·(B,I), beta 1
//
// gemm() is the one entry point the rest of the library calls. Behind it, a
// packed, register-tiled kernel chosen at run time from the CPU's features
// (avx512, avx2, or portable C++; src/gemm/) with cache blocking chosen for the
// CPU's micro-architecture (src/gemm/gemm_config.cpp). Each element of C is
// summed over K in one fixed order whatever the thread count.
#pragma once

#include <string>
#include <vector>

#include "fastmlp/common.hpp"

namespace fastmlp {

enum class Transpose { none, transpose };

// Work done on C while it is still in cache: fn(context, i0, i1, j0, j1) is
// called once for every block C[i0:i1, j0:j1] as soon as that block is final
// (a register tile, on the thread that computed it; in the dot-product and
// transposed paths, once for the whole of C at the end). Every element of C is
// in exactly one block. A dense layer adds its bias and applies its activation
// this way (activation.hpp: bias_activation_block).
struct GemmEpilogue {
    void (*fn)(void* context, index i0, index i1, index j0, index j1) = nullptr;
    void* context = nullptr;
};

// Products of fewer FLOPs (2·M·N·K) than this run on the calling thread alone.
// A fork/join costs ~1 µs on a quiet machine but can cost a whole time slice
// when another process holds the other core, so only products that take tens of
// microseconds go parallel.
constexpr double gemm_parallel_flops = double(1 << 22);

template <typename T>
void gemm(Transpose trans_a, Transpose trans_b, index m, index n, index k,
          T alpha, const T* a, index lda, const T* b, index ldb,
          T beta, T* c, index ldc, const GemmEpilogue& epilogue = {});

// The triple loop, kept beside the fast one as the C++ reference and for tests.
template <typename T>
void gemm_naive(Transpose trans_a, Transpose trans_b, index m, index n, index k,
                T alpha, const T* a, index lda, const T* b, index ldb,
                T beta, T* c, index ldc);

// How gemm() blocks one scalar type: the register tile MR × NR (fixed by the
// kernel), K blocks of KC and N blocks of NC (the packed KC × NC block of B is
// meant to stay in L2, an MR × KC sliver of A in L1), and whether the
// micro-kernel prefetches B and C.
struct GemmBlocking {
    index mr, nr, kc, nc;
    bool prefetch;
};

// The configuration gemm() runs with: a kernel and its blocking per type, the
// name of the table entry (or "model", "default") and why it was chosen.
struct GemmConfig {
    std::string name;    // "zen4", "skx", ..., "model" (Low et al. from the caches), "default"
    std::string kernel;  // "avx512", "avx2", "portable"
    GemmBlocking f32, f64;
    std::string source;  // "table", "model", "default"; "environment" or "forced" when overridden
    std::string reason;  // one line
};

GemmConfig gemm_config();
// The configurations this build and CPU can be forced to: the table's entries
// whose kernel runs here, then "model".
std::vector<std::string> gemm_config_names();
// Forces a configuration: "auto" (the automatic choice, kernel included), a
// name from gemm_config_names() (a table entry brings its own kernel; "model"
// keeps the current one), and/or overrides "kc=N", "nc=N" (rounded up to whole
// panels), "prefetch=0|1", comma separated ("skx,kc=256"; overrides alone
// apply to the current kernel's automatic choice). The FASTMLP_GEMM_CONFIG
// environment variable sets the first choice the same way. Throws
// std::invalid_argument, naming the problem, for a bad spec (an unknown name
// or key, a value out of range, an empty field, a key given twice).
void set_gemm_config(const std::string& spec);

// The analytical model's blocking (gemm_config.cpp) for an MR × NR tile of
// values of `scalar_size` bytes, given L1 and L2: what a CPU without a table
// entry gets. Exposed for tests.
struct CacheInfo;
GemmBlocking gemm_model_blocking(const CacheInfo& l1, const CacheInfo& l2, index mr, index nr,
                                 index scalar_size);

// The automatic choice for another CPU (a recorded CPUID dump), from this
// build's kernels that CPU's flags allow. Exposed for tests.
struct CpuInfo;
GemmConfig gemm_config_for(const CpuInfo& cpu);

// The kernel gemm() uses now: "avx512", "avx2" or "portable".
const char* gemm_kernel_name();
// The kernels this build has and this CPU can run, best first.
std::vector<std::string> gemm_available_kernels();
// Forces a kernel ("auto": the best available), with the blocking chosen for it
// on this CPU; throws std::invalid_argument for one this CPU or build cannot
// run. The FASTMLP_GEMM_KERNEL environment variable sets the first choice the
// same way; FASTMLP_GEMM_CONFIG, when set too, then applies as set_gemm_config
// would (overrides and "model" keep that kernel; a table name or "auto" do not).
void set_gemm_kernel(const std::string& name);

// Checks sizes and leading dimensions; throws std::invalid_argument.
void gemm_check(Transpose trans_a, Transpose trans_b, index m, index n, index k,
                index lda, index ldb, index ldc);

}  // namespace fastmlp
