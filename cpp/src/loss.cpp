// loss.cpp — mean squared error and its gradient.
#include "fastmlp/loss.hpp"

namespace fastmlp {

// Sums in blocks of fixed size, then the block sums in order: the rounding is
// the same whatever the thread count, and better than one long running sum.
template <typename T>
T mse_forward(const T* pred, const T* target, index n) {
    require(n >= 0, "mse_forward: n must be non-negative");
    if (n == 0) return T(0);
    constexpr index block = 256;
    double total = 0;
    for (index start = 0; start < n; start += block) {
        const index end = start + block < n ? start + block : n;
        T partial = 0;
        for (index i = start; i < end; ++i) {
            const T d = pred[i] - target[i];
            partial += d * d;
        }
        total += double(partial);
    }
    return T(total / double(n));
}

template <typename T>
void mse_backward(T* d_pred, const T* pred, const T* target, index n, T scale) {
    require(n >= 0, "mse_backward: n must be non-negative");
    for (index i = 0; i < n; ++i) d_pred[i] = scale * (pred[i] - target[i]);
}

template float mse_forward<float>(const float*, const float*, index);
template double mse_forward<double>(const double*, const double*, index);
template void mse_backward<float>(float*, const float*, const float*, index, float);
template void mse_backward<double>(double*, const double*, const double*, index, double);

}  // namespace fastmlp
