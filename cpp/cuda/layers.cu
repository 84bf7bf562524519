// layers.cu — the layers between dense ones on the device: layer norm, batch norm,
// dropout, the residual add (twins: reference.layer_norm, batch_norm, dropout,
// residual_add and their backward; formulas in fastmlp/layers.hpp).
//
// As on the CPU (layers.cpp), statistics and the sums of the backward passes are
// taken in double, elementwise steps in T, and a mean enters the normalisation in
// two parts (mean_hi = T(mean), mean_lo = T(mean − mean_hi)).
//
//   row-wise (layer norm): one warp per row, lane l taking columns l, l + 32, ...
//     in order, the 32 lane sums folded by a fixed shuffle tree; the row's
//     statistics are complete before the warp writes any of it (xhat, y may
//     alias x; dx may alias dy).
//   column-wise (batch norm, d_gain, d_bias): one block of 256 threads per group
//     of up to 32 columns (reduce.cuh's column tiling), each row lane summing its
//     rows in order, the lanes then by a fixed tree. A block owns its columns for
//     all rows, so batch norm's statistics, normalisation and backward run in one
//     kernel.
// Every order is fixed: the same bits run after run.
#include <cstdint>

#include "device.cuh"
#include "math.cuh"
#include "reduce.cuh"

namespace fastmlp::cuda {
namespace {

constexpr int warp = 32;
constexpr int rows_per_block = 8;   // row-wise kernels: 8 warps, a row each
constexpr int elementwise_threads = 256;

unsigned capped(index blocks) { return unsigned(blocks < 1 ? 1 : (blocks < 65535 ? blocks : 65535)); }

// Σ of the warp's 32 values by a fixed tree; every lane gets the total.
__device__ __forceinline__ double warp_sum(double value) {
    for (int offset = warp / 2; offset > 0; offset /= 2)
        value += __shfl_down_sync(0xffffffffu, value, offset);
    return __shfl_sync(0xffffffffu, value, 0);
}

// ---- layer norm --------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(warp * rows_per_block)
    layer_norm_forward_kernel(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                              index rows, index width, double eps) {
    const int lane = threadIdx.x % warp;
    for (index r = index(blockIdx.x) * rows_per_block + threadIdx.x / warp; r < rows;
         r += index(gridDim.x) * rows_per_block) {
        const T* xr = x + r * width;
        double sum = 0;
        for (index j = lane; j < width; j += warp) sum += double(xr[j]);
        const double mean = warp_sum(sum) / double(width);
        double squares = 0;
        for (index j = lane; j < width; j += warp) {
            const double d = double(xr[j]) - mean;
            squares += d * d;
        }
        const double variance = warp_sum(squares) / double(width);
        const T mean_hi = T(mean), mean_lo = T(mean - double(mean_hi));
        const T rs = T(1.0 / sqrt(variance + eps));
        __syncwarp();  // the row is read whole before any of it is written
        if (lane == 0) rstd[r] = rs;
        for (index j = lane; j < width; j += warp) {
            const T v = ((xr[j] - mean_hi) - mean_lo) * rs;
            const T out = gain[j] * v + bias[j];
            xhat[r * width + j] = v;  // then y: when y is xhat, y wins
            y[r * width + j] = out;
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(warp * rows_per_block)
    layer_norm_backward_rows_kernel(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                                    index rows, index width) {
    const int lane = threadIdx.x % warp;
    for (index r = index(blockIdx.x) * rows_per_block + threadIdx.x / warp; r < rows;
         r += index(gridDim.x) * rows_per_block) {
        const index row = r * width;
        double sum_g = 0, sum_gx = 0;  // g = dy ⊙ gain: Σ g, Σ g ⊙ xhat
        for (index j = lane; j < width; j += warp) {
            const double g = double(dy[row + j]) * double(gain[j]);
            sum_g += g;
            sum_gx += g * double(xhat[row + j]);
        }
        const T mean_g = T(warp_sum(sum_g) / double(width));
        const T mean_gx = T(warp_sum(sum_gx) / double(width));
        const T rs = rstd[r];
        __syncwarp();  // dy's row is read whole before dx (maybe dy) is written
        for (index j = lane; j < width; j += warp)
            dx[row + j] = rs * ((dy[row + j] * gain[j] - mean_g) - xhat[row + j] * mean_gx);
    }
}

// d_gain = Σ_rows dy ⊙ xhat, d_bias = Σ_rows dy (+= when accumulate; either may be null).
template <typename T>
__global__ void __launch_bounds__(column_threads)
    gain_bias_sums_kernel(const T* dy, const T* xhat, T* d_gain, T* d_bias, index rows, index width,
                          bool accumulate, ColumnTiling tiling) {
    __shared__ double buffer[column_threads];
    const int lane = threadIdx.x / tiling.width;
    const index groups = (width + tiling.width - 1) / tiling.width;
    for (index group = blockIdx.x; group < groups; group += gridDim.x) {
        const index col = group * tiling.width + threadIdx.x % tiling.width;
        double sum_gain = 0, sum_bias = 0;
        if (col < width)
            for (index r = lane; r < rows; r += tiling.lanes) {
                const double d = double(dy[r * width + col]);
                sum_gain += d * double(xhat[r * width + col]);
                sum_bias += d;
            }
        sum_gain = lanes_sum(buffer, sum_gain, tiling);
        sum_bias = lanes_sum(buffer, sum_bias, tiling);
        if (lane == 0 && col < width) {
            if (d_gain != nullptr)
                d_gain[col] = accumulate ? T(double(d_gain[col]) + sum_gain) : T(sum_gain);
            if (d_bias != nullptr)
                d_bias[col] = accumulate ? T(double(d_bias[col]) + sum_bias) : T(sum_bias);
        }
    }
}

// ---- batch norm ---------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(column_threads)
    batch_norm_train_kernel(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                            T* running_mean, T* running_var, index rows, index width, double eps,
                            double momentum, ColumnTiling tiling) {
    __shared__ double buffer[column_threads];
    const int lane = threadIdx.x / tiling.width;
    const index groups = (width + tiling.width - 1) / tiling.width;
    for (index group = blockIdx.x; group < groups; group += gridDim.x) {
        const index col = group * tiling.width + threadIdx.x % tiling.width;
        const bool mine = col < width;
        double sum = 0;
        if (mine)
            for (index r = lane; r < rows; r += tiling.lanes) sum += double(x[r * width + col]);
        const double mean = lanes_sum(buffer, sum, tiling) / double(rows);
        double squares = 0;
        if (mine)
            for (index r = lane; r < rows; r += tiling.lanes) {
                const double d = double(x[r * width + col]) - mean;
                squares += d * d;
            }
        squares = lanes_sum(buffer, squares, tiling);  // its barrier: x read whole before the writes
        if (!mine) continue;
        const double variance = squares / double(rows);  // biased: the normalisation's
        const T mean_hi = T(mean), mean_lo = T(mean - double(mean_hi));
        const T rs = T(1.0 / sqrt(variance + eps));
        if (lane == 0) {
            rstd[col] = rs;
            if (running_mean != nullptr)
                running_mean[col] = T((1.0 - momentum) * double(running_mean[col]) + momentum * mean);
            if (running_var != nullptr)  // unbiased, as torch keeps it
                running_var[col] = T((1.0 - momentum) * double(running_var[col]) +
                                     momentum * (squares / double(rows - 1)));
        }
        const T g = gain[col], b = bias[col];
        for (index r = lane; r < rows; r += tiling.lanes) {
            const index e = r * width + col;
            const T v = ((x[e] - mean_hi) - mean_lo) * rs;
            const T out = g * v + b;
            xhat[e] = v;  // then y: when y is xhat, y wins
            y[e] = out;
        }
    }
}

template <typename T>
__global__ void batch_norm_eval_kernel(const T* x, const T* gain, const T* bias,
                                       const T* running_mean, const T* running_var, T* y,
                                       index rows, index width, double eps) {
    const index total = rows * width;
    for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
         e += index(gridDim.x) * blockDim.x) {
        const index col = e % width;
        const T inverse_std = T(1.0 / sqrt(double(running_var[col]) + eps));
        y[e] = gain[col] * ((x[e] - running_mean[col]) * inverse_std) + bias[col];
    }
}

template <typename T>
__global__ void __launch_bounds__(column_threads)
    batch_norm_backward_kernel(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                               T* d_gain, T* d_bias, index rows, index width, bool accumulate,
                               ColumnTiling tiling) {
    __shared__ double buffer[column_threads];
    const int lane = threadIdx.x / tiling.width;
    const index groups = (width + tiling.width - 1) / tiling.width;
    for (index group = blockIdx.x; group < groups; group += gridDim.x) {
        const index col = group * tiling.width + threadIdx.x % tiling.width;
        const bool mine = col < width;
        double sum_gain = 0, sum_bias = 0;  // Σ dy ⊙ xhat, Σ dy
        if (mine)
            for (index r = lane; r < rows; r += tiling.lanes) {
                const double d = double(dy[r * width + col]);
                sum_gain += d * double(xhat[r * width + col]);
                sum_bias += d;
            }
        sum_gain = lanes_sum(buffer, sum_gain, tiling);
        sum_bias = lanes_sum(buffer, sum_bias, tiling);  // its barrier: dy read whole before dx is written
        if (!mine) continue;
        if (lane == 0) {
            if (d_gain != nullptr)
                d_gain[col] = accumulate ? T(double(d_gain[col]) + sum_gain) : T(sum_gain);
            if (d_bias != nullptr)
                d_bias[col] = accumulate ? T(double(d_bias[col]) + sum_bias) : T(sum_bias);
        }
        if (rows == 0) continue;
        // dx = rstd · gain · ((dy − mean dy) − xhat · mean (dy ⊙ xhat))
        const T scale = T(double(rstd[col]) * double(gain[col]));
        const T mean_dy = T(sum_bias / double(rows));
        const T mean_dyx = T(sum_gain / double(rows));
        for (index r = lane; r < rows; r += tiling.lanes) {
            const index e = r * width + col;
            dx[e] = scale * ((dy[e] - mean_dy) - xhat[e] * mean_dyx);
        }
    }
}

// ---- dropout, residual --------------------------------------------------------------------
__device__ __forceinline__ std::uint64_t splitmix64(std::uint64_t x) {
    std::uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// keep element i when the high 32 bits of splitmix64(splitmix64(splitmix64(seed) ^
// counter) ^ i) < threshold = ⌊(1 − p) · 2³²⌋.
__global__ void dropout_mask_kernel(std::uint8_t* mask, index n, std::uint64_t threshold,
                                    std::uint64_t seed, const std::int64_t* counter) {
    const std::uint64_t stream_key =
        splitmix64(splitmix64(seed) ^ std::uint64_t(counter != nullptr ? *counter : 0));
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += index(gridDim.x) * blockDim.x)
        mask[i] = (splitmix64(stream_key ^ std::uint64_t(i)) >> 32) < threshold ? 1 : 0;
}

template <typename T>
__global__ void masked_scale_kernel(const T* x, const std::uint8_t* mask, T* y, index n, T scale) {
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += index(gridDim.x) * blockDim.x)
        y[i] = mask[i] ? x[i] * scale : T(0);
}

template <typename T>
__global__ void add_kernel(const T* x, const T* skip, T* y, index n) {
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += index(gridDim.x) * blockDim.x)
        y[i] = x[i] + skip[i];
}

void require_sizes(const char* kernel, index rows, index width) {
    require(rows >= 0 && width >= 0, std::string(kernel) + ": rows and width must be non-negative");
}

void require_eps(const char* kernel, double eps) {
    require(eps >= 0 && eps <= 1.7976931348623157e308,
            std::string(kernel) + ": eps must be finite and >= 0");
}

void require_p(const char* kernel, double p) {
    require(p >= 0 && p < 1, std::string(kernel) + ": p must be in [0, 1)");
}

template <typename T>
void masked_scale(cudaStream_t stream, const T* x, const std::uint8_t* mask, T* y, index n, double p,
                  const char* kernel) {
    require(n >= 0, std::string(kernel) + ": n must be non-negative");
    require_p(kernel, p);
    if (n == 0) return;
    masked_scale_kernel<T><<<blocks_for(n, elementwise_threads), elementwise_threads, 0, stream>>>(
        x, mask, y, n, T(1.0 / (1.0 - p)));
    check_launch(kernel);
}

}  // namespace

template <typename T>
void layer_norm_forward(cudaStream_t stream, const T* x, const T* gain, const T* bias, T* xhat, T* rstd,
                        T* y, index rows, index width, double eps) {
    require_sizes("layer_norm_forward", rows, width);
    require_eps("layer_norm_forward", eps);
    if (rows == 0) return;
    require(width >= 1, "layer_norm_forward: a row needs at least one column (width 0)");
    layer_norm_forward_kernel<T><<<capped((rows + rows_per_block - 1) / rows_per_block),
                                   warp * rows_per_block, 0, stream>>>(x, gain, bias, xhat, rstd, y,
                                                                       rows, width, eps);
    check_launch("layer_norm_forward");
}

template <typename T>
void layer_norm_backward(cudaStream_t stream, const T* dy, const T* xhat, const T* rstd, const T* gain,
                         T* dx, T* d_gain, T* d_bias, index rows, index width, bool accumulate) {
    require_sizes("layer_norm_backward", rows, width);
    if (width == 0) return;
    // Column sums first: dx may overwrite dy.
    const ColumnTiling tiling = column_tiling(width);
    gain_bias_sums_kernel<T><<<column_blocks(width, tiling), column_threads, 0, stream>>>(
        dy, xhat, d_gain, d_bias, rows, width, accumulate, tiling);
    check_launch("layer_norm_backward (sums)");
    if (rows == 0) return;
    layer_norm_backward_rows_kernel<T><<<capped((rows + rows_per_block - 1) / rows_per_block),
                                         warp * rows_per_block, 0, stream>>>(dy, xhat, rstd, gain,
                                                                             dx, rows, width);
    check_launch("layer_norm_backward");
}

template <typename T>
void batch_norm_forward_train(cudaStream_t stream, const T* x, const T* gain, const T* bias, T* xhat,
                              T* rstd, T* y, T* running_mean, T* running_var, index rows, index width,
                              double eps, double momentum) {
    require_sizes("batch_norm_forward_train", rows, width);
    require_eps("batch_norm_forward_train", eps);
    require(momentum >= 0 && momentum <= 1, "batch_norm_forward_train: momentum must be in [0, 1]");
    require(rows >= 2, "batch norm in training needs at least 2 samples per batch, got " +
                           std::to_string(rows));
    if (width == 0) return;
    const ColumnTiling tiling = column_tiling(width);
    batch_norm_train_kernel<T><<<column_blocks(width, tiling), column_threads, 0, stream>>>(
        x, gain, bias, xhat, rstd, y, running_mean, running_var, rows, width, eps, momentum, tiling);
    check_launch("batch_norm_forward_train");
}

template <typename T>
void batch_norm_forward_eval(cudaStream_t stream, const T* x, const T* gain, const T* bias,
                             const T* running_mean, const T* running_var, T* y, index rows,
                             index width, double eps) {
    require_sizes("batch_norm_forward_eval", rows, width);
    require_eps("batch_norm_forward_eval", eps);
    if (rows == 0 || width == 0) return;
    batch_norm_eval_kernel<T><<<blocks_for(rows * width, elementwise_threads), elementwise_threads, 0,
                                stream>>>(x, gain, bias, running_mean, running_var, y, rows, width,
                                          eps);
    check_launch("batch_norm_forward_eval");
}

template <typename T>
void batch_norm_backward(cudaStream_t stream, const T* dy, const T* xhat, const T* rstd, const T* gain,
                         T* dx, T* d_gain, T* d_bias, index rows, index width, bool accumulate) {
    require_sizes("batch_norm_backward", rows, width);
    if (width == 0) return;
    const ColumnTiling tiling = column_tiling(width);
    batch_norm_backward_kernel<T><<<column_blocks(width, tiling), column_threads, 0, stream>>>(
        dy, xhat, rstd, gain, dx, d_gain, d_bias, rows, width, accumulate, tiling);
    check_launch("batch_norm_backward");
}

void dropout_mask(cudaStream_t stream, std::uint8_t* mask, index n, double p, std::uint64_t seed,
                  const std::int64_t* counter) {
    require(n >= 0, "dropout_mask: n must be non-negative");
    require_p("dropout_mask", p);
    if (n == 0) return;
    const std::uint64_t threshold = std::uint64_t(std::floor((1.0 - p) * 4294967296.0));
    dropout_mask_kernel<<<blocks_for(n, elementwise_threads), elementwise_threads, 0, stream>>>(
        mask, n, threshold, seed, counter);
    check_launch("dropout_mask");
}

template <typename T>
void dropout_forward(cudaStream_t stream, const T* x, const std::uint8_t* mask, T* y, index n, double p) {
    masked_scale(stream, x, mask, y, n, p, "dropout_forward");
}

template <typename T>
void dropout_backward(cudaStream_t stream, const T* dy, const std::uint8_t* mask, T* dx, index n,
                      double p) {
    masked_scale(stream, dy, mask, dx, n, p, "dropout_backward");
}

template <typename T>
void residual_add(cudaStream_t stream, const T* x, const T* skip, T* y, index n) {
    require(n >= 0, "residual_add: n must be non-negative");
    if (n == 0) return;
    add_kernel<T><<<blocks_for(n, elementwise_threads), elementwise_threads, 0, stream>>>(x, skip, y, n);
    check_launch("residual_add");
}

template <typename T>
void add_into(cudaStream_t stream, T* dst, const T* src, index n) {
    require(n >= 0, "add_into: n must be non-negative");
    if (n == 0) return;
    add_kernel<T><<<blocks_for(n, elementwise_threads), elementwise_threads, 0, stream>>>(dst, src, dst,
                                                                                         n);
    check_launch("add_into");
}

#define FASTMLP_INSTANTIATE(T)                                                                     \
    template void layer_norm_forward<T>(cudaStream_t, const T*, const T*, const T*, T*, T*, T*,   \
                                        index, index, double);                                    \
    template void layer_norm_backward<T>(cudaStream_t, const T*, const T*, const T*, const T*, T*, \
                                         T*, T*, index, index, bool);                              \
    template void batch_norm_forward_train<T>(cudaStream_t, const T*, const T*, const T*, T*, T*, \
                                              T*, T*, T*, index, index, double, double);          \
    template void batch_norm_forward_eval<T>(cudaStream_t, const T*, const T*, const T*,          \
                                             const T*, const T*, T*, index, index, double);       \
    template void batch_norm_backward<T>(cudaStream_t, const T*, const T*, const T*, const T*, T*, \
                                         T*, T*, index, index, bool);                              \
    template void dropout_forward<T>(cudaStream_t, const T*, const std::uint8_t*, T*, index,      \
                                     double);                                                     \
    template void dropout_backward<T>(cudaStream_t, const T*, const std::uint8_t*, T*, index,     \
                                      double);                                                    \
    template void residual_add<T>(cudaStream_t, const T*, const T*, T*, index);                   \
    template void add_into<T>(cudaStream_t, T*, const T*, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp::cuda
