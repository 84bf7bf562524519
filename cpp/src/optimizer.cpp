// optimizer.cpp — parameter updates over the flat buffers.
#include "fastmlp/optimizer.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastmlp/threading.hpp"

namespace fastmlp {

template <typename T>
void sgd_update(T* params, const T* grads, index n, T lr) {
    require(n >= 0, "sgd_update: n must be non-negative");
    constexpr index chunk = 1 << 14;
    const int nt = threads_for(double(n), 1 << 17);
    parallel_for(nt, (n + chunk - 1) / chunk, [=](index c) {
        const index end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
        for (index i = c * chunk; i < end; ++i) params[i] -= lr * grads[i];
    });
}

template <typename T>
bool sgd_update_stays_finite(const T* params, const T* grads, index n, T lr) {
    // A value is finite unless its exponent bits are all ones. OR-ing a flag per
    // element is an integer reduction, which the compiler vectorizes (a float
    // sum would not be, without -ffast-math).
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
    Bits bad = 0;
    for (index i = 0; i < n; ++i) {
        const T updated = params[i] - lr * grads[i];
        Bits bits;
        std::memcpy(&bits, &updated, sizeof bits);
        bad |= Bits((bits & exponent) == exponent);
    }
    return bad == 0;
}

template void sgd_update<float>(float*, const float*, index, float);
template void sgd_update<double>(double*, const double*, index, double);
template bool sgd_update_stays_finite<float>(const float*, const float*, index, float);
template bool sgd_update_stays_finite<double>(const double*, const double*, index, double);

}  // namespace fastmlp
