// fastmlp/optimizer.hpp — parameter updates over the flat buffers.
//
// All parameters of a network live in one buffer and their gradients in a
// second with the same layout, so each optimizer is one loop over both.
#pragma once

#include "fastmlp/common.hpp"

namespace fastmlp {

// Plain gradient descent: params -= lr · grads. params, grads are (n).
template <typename T>
void sgd_update(T* params, const T* grads, index n, T lr);

// True when params - lr · grads would be finite everywhere (checked before an
// update, so a diverging fit can stop with the parameters still finite).
template <typename T>
bool sgd_update_stays_finite(const T* params, const T* grads, index n, T lr);

}  // namespace fastmlp
