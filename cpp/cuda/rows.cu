// rows.cu — gathering a batch's rows on the device: dst row r = src row
// order[first + r] (or first + r without an order), `width` values a row. The
// epoch's order lives on the device, and a training step's batch position comes
// from its StepState (gather_step_rows), so a step reads no value from the host.
#include "device.cuh"

namespace fastmlp::cuda {
namespace {

// With a state: the step's batch (kernels.cuh, gather_step_rows) instead of `first`.
template <typename T>
__global__ void gather_rows_kernel(T* dst, const T* src, const std::int32_t* order, index first,
                                   index rows, index width, const StepState* state, index n,
                                   index batch, index steps_per_epoch) {
    if (state != nullptr) {
        if (state->status != step_ok) return;
        const std::int64_t step = state->step;
        const index epoch = index(step / steps_per_epoch), k = index(step % steps_per_epoch);
        first = k * batch;
        if (order != nullptr) order += epoch * n;
    }
    const index total = rows * width;
    for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
         e += index(gridDim.x) * blockDim.x) {
        const index r = e / width, j = e % width;
        const index from = order != nullptr ? index(order[first + r]) : first + r;
        dst[e] = src[from * width + j];
    }
}

}  // namespace

template <typename T>
void gather_rows(cudaStream_t stream, T* dst, const T* src, const std::int32_t* order, index first,
                 index rows, index width) {
    require(rows >= 0 && width >= 0 && first >= 0, "gather_rows: sizes must be non-negative");
    if (rows == 0 || width == 0) return;
    gather_rows_kernel<T><<<blocks_for(rows * width, 256), 256, 0, stream>>>(dst, src, order, first,
                                                                            rows, width, nullptr, 0, 0, 1);
    check_launch("gather_rows");
}

template <typename T>
void gather_step_rows(cudaStream_t stream, T* dst, const T* src, const std::int32_t* order,
                      const StepState* state, index n, index batch, index steps_per_epoch, index rows,
                      index width) {
    require(state != nullptr && steps_per_epoch >= 1 && rows >= 0 && width >= 0,
            "gather_step_rows: a state, steps_per_epoch >= 1 and non-negative sizes");
    if (rows == 0 || width == 0) return;
    gather_rows_kernel<T><<<blocks_for(rows * width, 256), 256, 0, stream>>>(
        dst, src, order, 0, rows, width, state, n, batch, steps_per_epoch);
    check_launch("gather_step_rows");
}

template void gather_rows<float>(cudaStream_t, float*, const float*, const std::int32_t*, index,
                                 index, index);
template void gather_rows<double>(cudaStream_t, double*, const double*, const std::int32_t*, index,
                                  index, index);
template void gather_step_rows<float>(cudaStream_t, float*, const float*, const std::int32_t*,
                                      const StepState*, index, index, index, index, index);
template void gather_step_rows<double>(cudaStream_t, double*, const double*, const std::int32_t*,
                                       const StepState*, index, index, index, index, index);

}  // namespace fastmlp::cuda
