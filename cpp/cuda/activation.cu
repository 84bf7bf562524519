// activation.cu — elementwise activations on the device, forward and backward side
// by side (twins: reference.activation_forward / activation_backward /
// activation_bias_backward), with math.cuh's activate and activate_grad.
//
//   forward:  a = f(z)                (a may alias z)
//   backward: dz = da ⊙ f'(z)         (dz may alias da)
//   dense backward: dz as above and d_bias = Σ_rows dz (+= when accumulate)
//
// d_bias: one block per 32 columns, 8 row lanes of 32 threads; lane l sums rows
// l, l + 8, l + 16, ... in order (in double), then the 8 lane sums are added in
// lane order: a fixed order for every launch, so the same bits every run.
#include "device.cuh"
#include "math.cuh"

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

constexpr int column_group = 32;  // columns per block (threadIdx.x)
constexpr int row_lanes = 8;      // row lanes per block (threadIdx.y)

// Grid: x over groups of 32 columns (a loop when there are more groups than blocks).
template <typename T>
__global__ void __launch_bounds__(column_group * row_lanes)
    activation_bias_backward_kernel(Activation activation, T* dz, T* d_bias, const T* da,
                                    const T* z, const T* a, index rows, index cols,
                                    bool accumulate) {
    __shared__ double partial[row_lanes][column_group];
    const bool linear = activation == Activation::linear;
    const index groups = (cols + column_group - 1) / column_group;
    for (index group = blockIdx.x; group < groups; group += gridDim.x) {
        const index col = group * column_group + threadIdx.x;
        double sum = 0;
        if (col < cols) {
            for (index r = threadIdx.y; r < rows; r += row_lanes) {
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
        partial[threadIdx.y][threadIdx.x] = sum;
        __syncthreads();  // every lane's sum is in
        if (threadIdx.y == 0 && col < cols) {
            double total = partial[0][threadIdx.x];
            for (int l = 1; l < row_lanes; ++l) total += partial[l][threadIdx.x];
            d_bias[col] = accumulate ? T(double(d_bias[col]) + total) : T(total);
        }
        __syncthreads();  // partial is read before the next group writes it
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
    const index groups = (cols + column_group - 1) / column_group;
    const unsigned blocks = unsigned(groups < 65535 ? groups : 65535);
    activation_bias_backward_kernel<T><<<blocks, dim3(column_group, row_lanes), 0, stream>>>(
        activation, dz, d_bias, da, z, a, rows, cols, accumulate);
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
