// optimizer.cpp — parameter updates over the flat buffers.
#include "fastmlp/optimizer.hpp"

#include <algorithm>
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
    // sum would not be, without -ffast-math). Long buffers are checked in up to
    // 256 pieces on the pool's threads, each writing its own flag.
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
    constexpr index max_pieces = 256;
    const index piece = std::max<index>(1 << 14, (n + max_pieces - 1) / max_pieces);
    const index pieces = (n + piece - 1) / piece;
    unsigned char bad[max_pieces] = {};
    parallel_for(threads_for(double(n), 1 << 17), pieces, [&](index c) {
        const index begin = c * piece, end = std::min(n, begin + piece);
        Bits flags = 0;
        for (index i = begin; i < end; ++i) {
            const T updated = params[i] - lr * grads[i];
            Bits bits;
            std::memcpy(&bits, &updated, sizeof bits);
            flags |= Bits((bits & exponent) == exponent);
        }
        bad[c] = flags != 0;
    });
    for (index c = 0; c < pieces; ++c)
        if (bad[c]) return false;
    return true;
}

template void sgd_update<float>(float*, const float*, index, float);
template void sgd_update<double>(double*, const double*, index, double);
template bool sgd_update_stays_finite<float>(const float*, const float*, index, float);
template bool sgd_update_stays_finite<double>(const double*, const double*, index, double);

}  // namespace fastmlp
