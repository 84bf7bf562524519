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

}  // namespace fastmlp
