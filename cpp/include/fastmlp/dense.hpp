// fastmlp/dense.hpp — the bias of a dense layer, forward and backward.
//
// A dense layer computes Z = A_prev · Wᵀ + b (W is (O, I), as torch.nn.Linear);
// the product is gemm(), the bias is here.
#pragma once

#include "fastmlp/common.hpp"

namespace fastmlp {

// z is (B, O), bias is (O): z[i, :] += bias.
template <typename T>
void bias_add_forward(T* z, const T* bias, index batch, index outputs);

// d_bias is (O), dz is (B, O): d_bias += Σ_i dz[i, :]  (accumulates; column sums
// in a fixed order, so the result does not depend on the thread count).
template <typename T>
void bias_add_backward(T* d_bias, const T* dz, index batch, index outputs);

}  // namespace fastmlp
