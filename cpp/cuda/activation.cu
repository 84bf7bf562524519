// activation.cu — elementwise activations on the device, forward and backward side
// by side (twins: reference.activation_forward / activation_backward /
// activation_bias_backward), with math.cuh's activate and activate_grad.
//
//   forward:  a = f(z)                (a may alias z)
//   backward: dz = da ⊙ f'(z)         (dz may alias da)
//   dense backward: dz as above and d_bias = Σ_rows dz (+= when accumulate)
//
// d_bias: one block of 256 threads per group of up to 32 columns (reduce.cuh's
// column tiling), each row lane summing its rows in order in double, then the
// lanes by a fixed tree: a fixed order for every launch, so the same bits every run.
#include "device.cuh"
#include "math.cuh"
#include "reduce.cuh"

namespace fastmlp::cuda {
namespace {

constexpr int elementwise_threads = 256;

template <typename T>
__global__ void activation_forward_kernel(Activation activation, T* a, const T* z, index n) {
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += index(gridDim.x) * blockDim.x)
        a[i] = activate(activation, z[i]);
}

template <typename T>
__global__ void activation_backward_kernel(Activation activation, T* dz, const T* da, const T* z,
                                           const T* a, index n) {
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += index(gridDim.x) * blockDim.x)
        dz[i] = da[i] * activate_grad(activation, z[i], a[i]);
}

// Grid: x over groups of tiling.width columns (a loop when there are more groups than blocks).
template <typename T>
__global__ void __launch_bounds__(column_threads)
    activation_bias_backward_kernel(Activation activation, T* dz, T* d_bias, const T* da,
                                    const T* z, const T* a, index rows, index cols,
                                    bool accumulate, ColumnTiling tiling) {
    __shared__ double partial[column_threads];
    const bool linear = activation == Activation::linear;
    const int lane = threadIdx.x / tiling.width;
    const index groups = (cols + tiling.width - 1) / tiling.width;
    for (index group = blockIdx.x; group < groups; group += gridDim.x) {
        const index col = group * tiling.width + threadIdx.x % tiling.width;
        double sum = 0;
        if (col < cols) {
            for (index r = lane; r < rows; r += tiling.lanes) {
                const index e = r * cols + col;
                T value;
                if (linear) {
                    value = da[e];
                    if (dz != da) dz[e] = value;
                } else {
                    value = da[e] * activate_grad(activation, z[e], a[e]);
                    dz[e] = value;
                }
                sum += double(value);
            }
        }
        const double total = lanes_sum(partial, sum, tiling);
        if (lane == 0 && col < cols)
            d_bias[col] = accumulate ? T(double(d_bias[col]) + total) : T(total);
    }
}

}  // namespace

template <typename T>
void activation_forward(cudaStream_t stream, Activation activation, T* a, const T* z, index n) {
    require(n >= 0, "activation_forward: n must be non-negative");
    if (n == 0) return;
    activation_forward_kernel<T><<<blocks_for(n, elementwise_threads), elementwise_threads, 0,
                                   stream>>>(activation, a, z, n);
    check_launch("activation_forward");
}

template <typename T>
void activation_backward(cudaStream_t stream, Activation activation, T* dz, const T* da, const T* z,
                         const T* a, index n) {
    require(n >= 0, "activation_backward: n must be non-negative");
    if (n == 0) return;
    activation_backward_kernel<T><<<blocks_for(n, elementwise_threads), elementwise_threads, 0,
                                    stream>>>(activation, dz, da, z, a, n);
    check_launch("activation_backward");
}

template <typename T>
void activation_bias_backward(cudaStream_t stream, Activation activation, T* dz, T* d_bias,
                              const T* da, const T* z, const T* a, index rows, index cols,
                              bool accumulate) {
    require(rows >= 0 && cols >= 0, "activation_bias_backward: sizes must be non-negative");
    if (d_bias == nullptr) {
        if (activation == Activation::linear && dz == da) return;
        activation_backward(stream, activation, dz, da, z, a, rows * cols);
        return;
    }
    if (cols == 0) return;
    const ColumnTiling tiling = column_tiling(cols);
    activation_bias_backward_kernel<T><<<column_blocks(cols, tiling), column_threads, 0, stream>>>(
        activation, dz, d_bias, da, z, a, rows, cols, accumulate, tiling);
    check_launch("activation_bias_backward");
}

#define FASTMLP_INSTANTIATE(T)                                                                   \
    template void activation_forward<T>(cudaStream_t, Activation, T*, const T*, index);         \
    template void activation_backward<T>(cudaStream_t, Activation, T*, const T*, const T*,      \
                                         const T*, index);                                       \
    template void activation_bias_backward<T>(cudaStream_t, Activation, T*, T*, const T*,       \
                                              const T*, const T*, index, index, bool);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp::cuda
