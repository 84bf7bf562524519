// cuda/reduce.cuh — the fixed-order sums the kernels share. Every sum here adds
// the same values in the same order whatever the launch, so results are the same
// bits run after run (kernels.cuh: determinism).
#pragma once

#include "device.cuh"

namespace fastmlp::cuda {

// Σ over a block of `threads` threads (a power of two, the block's size) of each
// one's value, by a fixed tree; every thread gets the total. buffer holds
// `threads` doubles of shared memory. All threads must call it.
template <int threads>
__device__ __forceinline__ double block_sum(double* buffer, double value) {
    static_assert((threads & (threads - 1)) == 0, "a power of two");
    const int tid = threadIdx.x;
    buffer[tid] = value;
    __syncthreads();
    for (int stride = threads / 2; stride > 0; stride /= 2) {
        if (tid < stride) buffer[tid] += buffer[tid + stride];
        __syncthreads();
    }
    const double total = buffer[0];
    __syncthreads();  // everyone has read it before the buffer is reused
    return total;
}

// Column-wise work (column sums, batch norm): a block of column_threads threads
// takes `width` adjacent columns and column_threads / width row lanes, width the
// smallest power of two >= the columns, at most 32 (so a narrow matrix, 1 to 31
// columns, still has every thread at work). Thread t: column t % width, lane
// t / width; lane l takes rows l, l + lanes, ... in order.
constexpr int column_threads = 256;

struct ColumnTiling {
    int width = 32;  // columns per block
    int lanes = 8;   // row lanes per block
};

inline ColumnTiling column_tiling(index cols) {
    ColumnTiling tiling;
    tiling.width = 1;
    while (tiling.width < 32 && tiling.width < cols) tiling.width *= 2;
    tiling.lanes = column_threads / tiling.width;
    return tiling;
}

// Blocks for `cols` columns (kernels loop when there are more column groups).
inline unsigned column_blocks(index cols, const ColumnTiling& tiling) {
    const index groups = (cols + tiling.width - 1) / tiling.width;
    return unsigned(groups < 1 ? 1 : (groups < 65535 ? groups : 65535));
}

// Σ over the row lanes of each column's value, by a fixed tree (lanes is a power
// of two); every thread gets its column's total. buffer holds column_threads
// doubles of shared memory. All threads must call it.
__device__ __forceinline__ double lanes_sum(double* buffer, double value, const ColumnTiling& tiling) {
    const int tid = threadIdx.x, lane = tid / tiling.width;
    buffer[tid] = value;
    __syncthreads();
    for (int stride = tiling.lanes / 2; stride > 0; stride /= 2) {
        if (lane < stride) buffer[tid] += buffer[tid + stride * tiling.width];
        __syncthreads();
    }
    const double total = buffer[tid % tiling.width];
    __syncthreads();  // everyone has read it before the buffer is reused
    return total;
}

}  // namespace fastmlp::cuda
