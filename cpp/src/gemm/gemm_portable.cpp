// gemm_portable.cpp — the GEMM kernel for any CPU, in plain C++.
//
// 16-byte vectors (4 floats, 2 doubles) for whatever the baseline ISA is:
// tiles of 4 × 8 floats and 4 × 4 doubles, 8 accumulator registers of 16.
#define FASTMLP_GEMM_ISA portable
#include "gemm_tile.hpp"

namespace fastmlp::gemm_detail {
namespace portable {

// 16-byte vectors through the compiler's vector extensions: SSE2 on x86-64,
// NEON on arm64, plain scalar code elsewhere. a·b + c is rounded twice
// (no FMA contraction), as the baseline ISA computes it.
template <typename Scalar>
struct Vector16 {
    using T = Scalar;
    typedef Scalar R __attribute__((vector_size(16)));
    static constexpr int width = int(16 / sizeof(Scalar));
    static constexpr bool has_pack_transposed = false;
    static R zero() { return R{}; }
    static R load(const T* p) {
        R r;
        __builtin_memcpy(&r, p, sizeof r);
        return r;
    }
    static void store(T* p, R r) { __builtin_memcpy(p, &r, sizeof r); }
    static R broadcast(T x) { return R{} + x; }
    static R fma(R a, R b, R c) { return a * b + c; }
    static R mul(R a, R b) { return a * b; }
    static T reduce(R r) {
        T sum = 0;
        for (int i = 0; i < width; ++i) sum += r[i];
        return sum;
    }
};

constexpr Blocking f32_blocking{4, 8, 256, 512};
constexpr Blocking f64_blocking{4, 4, 256, 256};

void gemv_f32(const GemmArgs<float>& g, index i0, index i1, const float* x) {
    gemv_rows<Vector16<float>>(g, i0, i1, x);
}
void gemv_f64(const GemmArgs<double>& g, index i0, index i1, const double* x) {
    gemv_rows<Vector16<double>>(g, i0, i1, x);
}
void tile_f32(const GemmArgs<float>& g, index i0, index i1, index j0, index j1, float* pack) {
    gemm_tile<Vector16<float>, 4, 2, f32_blocking.kc, f32_blocking.nc>(g, i0, i1, j0, j1, pack);
}
void tile_f64(const GemmArgs<double>& g, index i0, index i1, index j0, index j1, double* pack) {
    gemm_tile<Vector16<double>, 4, 2, f64_blocking.kc, f64_blocking.nc>(g, i0, i1, j0, j1, pack);
}

}  // namespace portable

const Kernel& portable_kernel() {
    static const Kernel kernel{"portable", portable::f32_blocking, portable::f64_blocking,
                               portable::tile_f32, portable::tile_f64, portable::gemv_f32, portable::gemv_f64};
    return kernel;
}

}  // namespace fastmlp::gemm_detail
