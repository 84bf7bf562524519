// fastmlp/loss.hpp — losses and their gradients.
//
// MSE over all n elements (B samples × O outputs), as torch.nn.MSELoss:
//   L = (1/n) Σ (pred - target)²        dL/dpred = (2/n) (pred - target)
// mse_backward takes the scale explicitly (2/n for that L), so the article's
// convention, L = 1/(2B) Σ (pred - target)² with gradient (pred - target)/B, is
// the same kernel with scale 1/B.
#pragma once

#include "fastmlp/common.hpp"

namespace fastmlp {

// pred, target are (n); returns the mean of squared differences (0 for n == 0).
// Summed in fixed blocks, so the value does not depend on the thread count.
template <typename T>
T mse_forward(const T* pred, const T* target, index n);

// d_pred = scale · (pred - target); d_pred is (n) and may alias pred.
template <typename T>
void mse_backward(T* d_pred, const T* pred, const T* target, index n, T scale);

}  // namespace fastmlp
