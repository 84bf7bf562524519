// fma_portable.cpp — the FMA peak probe's chains for any CPU, in plain C++: accumulators
// of 16-byte vectors (4 floats, 2 doubles) through the compiler's vector extensions, SSE2
// on x86-64, NEON on arm64. a·x + y is a multiply and an add on SSE2, and one FMA where the
// compiler contracts it (GCC does on arm64): 2 FLOP per lane either way. Each chain waits
// on its own result (a multiply and an add, ≈ 8 cycles, on SSE2; an FMA on arm64), so
// enough chains must be in flight to fill two to four pipes: 12 on x86-64, where 16 xmm
// registers also hold x and y, and 24 on arm64, which has 32 vector registers.
#define FASTMLP_PROBE_ISA portable
#include "fma_chains.hpp"

namespace fastmlp::probe_detail {
namespace portable {

template <typename Scalar>
struct Vector16 {
    using T = Scalar;
    typedef Scalar R __attribute__((vector_size(16)));
    static constexpr int width = int(16 / sizeof(Scalar));
    static R broadcast(T x) { return R{} + x; }
    static R fma(R a, R b, R c) { return a * b + c; }
    static R add(R a, R b) { return a + b; }
    static T reduce(R r) {
        T sum = 0;
        for (int i = 0; i < width; ++i) sum += r[i];
        return sum;
    }
};

#if defined(__aarch64__)
constexpr int chains = 24;
#else
constexpr int chains = 12;
#endif
double run_f32(std::int64_t iterations, float seed) {
    return fma_chains<Vector16<float>, chains>(iterations, seed);
}
double run_f64(std::int64_t iterations, double seed) {
    return fma_chains<Vector16<double>, chains>(iterations, seed);
}

}  // namespace portable

const FmaChains& portable_chains() {
    static const FmaChains chains = {"portable", portable::Vector16<float>::width,
                                     portable::Vector16<double>::width, portable::chains,
                                     portable::run_f32, portable::run_f64};
    return chains;
}

}  // namespace fastmlp::probe_detail
