// gemm_portable.cpp — the GEMM kernel for any CPU, in plain C++.
//
// "Vectors" of one scalar: the compiler vectorizes the 4 × 8 (float) and
// 4 × 4 (double) tiles for whatever the baseline ISA is (SSE2, NEON), and the
// results stay exact IEEE arithmetic (a·b + c, rounded twice).
#define FASTMLP_GEMM_ISA portable
#include "gemm_tile.hpp"

namespace fastmlp::gemm_detail {
namespace portable {

template <typename Scalar>
struct Scalars {
    using T = Scalar;
    using R = Scalar;
    static constexpr int width = 1;
    static R zero() { return R(0); }
    static R load(const T* p) { return *p; }
    static void store(T* p, R r) { *p = r; }
    static R broadcast(T x) { return x; }
    static R fma(R a, R b, R c) { return a * b + c; }
    static R mul(R a, R b) { return a * b; }
    static T reduce(R r) { return r; }
};

constexpr Blocking f32_blocking{4, 8, 256, 512};
constexpr Blocking f64_blocking{4, 4, 256, 256};

void gemv_f32(const GemmArgs<float>& g, index i0, index i1, const float* x) {
    gemv_rows<Scalars<float>>(g, i0, i1, x);
}
void gemv_f64(const GemmArgs<double>& g, index i0, index i1, const double* x) {
    gemv_rows<Scalars<double>>(g, i0, i1, x);
}
void tile_f32(const GemmArgs<float>& g, index i0, index i1, index j0, index j1, float* pack) {
    gemm_tile<Scalars<float>, 4, 8, f32_blocking.kc, f32_blocking.nc>(g, i0, i1, j0, j1, pack);
}
void tile_f64(const GemmArgs<double>& g, index i0, index i1, index j0, index j1, double* pack) {
    gemm_tile<Scalars<double>, 4, 4, f64_blocking.kc, f64_blocking.nc>(g, i0, i1, j0, j1, pack);
}

}  // namespace portable

const Kernel& portable_kernel() {
    static const Kernel kernel{"portable", portable::f32_blocking, portable::f64_blocking,
                               portable::tile_f32, portable::tile_f64, portable::gemv_f32, portable::gemv_f64};
    return kernel;
}

}  // namespace fastmlp::gemm_detail
