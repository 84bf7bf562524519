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
    static constexpr bool has_transpose = false;
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

}  // namespace portable

const Kernel& portable_kernel() {
    // float tiles 4 × 8, double 4 × 4; K blocks of 256; N blocks of 512 floats, 256 doubles.
    static const Kernel kernel =
        portable::make_kernel<portable::Vector16<float>, 4, 2, 256, 512,
                              portable::Vector16<double>, 4, 2, 256, 256>("portable");
    return kernel;
}

}  // namespace fastmlp::gemm_detail
