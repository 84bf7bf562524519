// dense.cpp — bias add and bias gradient of a dense layer.
#include "fastmlp/dense.hpp"

#include "fastmlp/threading.hpp"

namespace fastmlp {

// z is (B, O), bias is (O).
template <typename T>
void bias_add_forward(T* z, const T* bias, index batch, index outputs) {
    require(batch >= 0 && outputs >= 0, "bias_add_forward: sizes must be non-negative");
    const int nt = threads_for(double(batch) * double(outputs), 1 << 16);
    parallel_for(nt, batch, [=](index i) {
        T* row = z + i * outputs;
        for (index j = 0; j < outputs; ++j) row[j] += bias[j];
    });
}

// d_bias is (O), dz is (B, O). Threads split the columns into fixed blocks;
// each column sums its rows top to bottom, so the order never changes.
template <typename T>
void bias_add_backward(T* d_bias, const T* dz, index batch, index outputs) {
    require(batch >= 0 && outputs >= 0, "bias_add_backward: sizes must be non-negative");
    constexpr index block = 64;
    const index blocks = (outputs + block - 1) / block;
    const int nt = threads_for(double(batch) * double(outputs), 1 << 16);
    parallel_for(nt, blocks, [=](index blk) {
        const index j0 = blk * block, j1 = j0 + block < outputs ? j0 + block : outputs;
        for (index i = 0; i < batch; ++i) {
            const T* row = dz + i * outputs;
            for (index j = j0; j < j1; ++j) d_bias[j] += row[j];
        }
    });
}

template void bias_add_forward<float>(float*, const float*, index, index);
template void bias_add_forward<double>(double*, const double*, index, index);
template void bias_add_backward<float>(float*, const float*, index, index);
template void bias_add_backward<double>(double*, const double*, index, index);

}  // namespace fastmlp
