// optimizer.cpp — parameter updates over the flat buffers.
#include "fastmlp/optimizer.hpp"

#include <cmath>

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
    // v - v is 0 for finite v and NaN otherwise: a branch-free scan.
    T probe = 0;
    for (index i = 0; i < n; ++i) {
        const T updated = params[i] - lr * grads[i];
        probe += updated - updated;
    }
    return probe == T(0);
}

template void sgd_update<float>(float*, const float*, index, float);
template void sgd_update<double>(double*, const double*, index, double);
template bool sgd_update_stays_finite<float>(const float*, const float*, index, float);
template bool sgd_update_stays_finite<double>(const double*, const double*, index, double);

}  // namespace fastmlp
