// fastmlp/common.hpp — types and checks shared by every kernel family.
//
// Sizes are std::ptrdiff_t ("index"), as in BLIS and Eigen: signed, so loop
// arithmetic never wraps. Kernels check their own preconditions and throw
// std::invalid_argument; the bindings turn that into a Python ValueError.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace fastmlp {

using index = std::ptrdiff_t;

// Throws std::invalid_argument with `message` unless `condition` holds.
inline void require(bool condition, const char* message) {
    if (!condition) throw std::invalid_argument(message);
}
inline void require(bool condition, const std::string& message) {
    if (!condition) throw std::invalid_argument(message);
}

// a · b for sizes a, b >= 0; throws std::invalid_argument with `message` when
// the product does not fit an index (never wraps around).
inline index checked_product(index a, index b, const char* message) {
    index product = 0;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &product))
        throw std::invalid_argument(message);
    return product;
}

// a + b for sizes a, b >= 0, with the same check.
inline index checked_sum(index a, index b, const char* message) {
    index sum = 0;
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &sum))
        throw std::invalid_argument(message);
    return sum;
}

// ⌈a / b⌉ for a >= 0, b >= 1, without forming a + b - 1.
constexpr index ceil_div(index a, index b) { return a / b + (a % b != 0); }

}  // namespace fastmlp

// Elementwise loops marked FASTMLP_CLONES are compiled three times (AVX-512,
// AVX2, baseline) and the dynamic loader picks one for this CPU (GCC function
// multiversioning, x86-64 Linux). GCC contracts a·b + c into one FMA in the
// AVX2 and AVX-512 clones (C++ defaults to -ffp-contract=fast), so their results
// can differ from the baseline clone's by a rounding (about an ulp); on one CPU
// they do not depend on the thread count.
//
// Not with GCC 13: its target_clones pass stops with an internal compiler error
// ("in add_to_same_comdat_group, at symtab.cc:492", seen with 13.3.0 on
// activation.cpp), so there the loops are compiled once, for the baseline.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ != 13
#define FASTMLP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTMLP_CLONES
#endif
