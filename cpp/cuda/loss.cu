// loss.cu — one batch's loss, its gradient and the right predictions, on the
// device (twins: reference.loss_forward / loss_backward / count_correct; the CPU's
// loss_rows and count_correct, with the same arithmetic: each row's loss in
// double, a row's gradient factor double(w_i) · inv rounded to T once).
//
// One block of 512 threads walks the whole batch (rows up to ~10^5 × a few
// outputs: a few microseconds of work, and one launch): thread i takes rows i,
// i + 512, ... in order; the batch weight, the loss and the count are each summed
// per thread, then over a fixed tree of the threads, so every run gives the same
// bits. The figures go to figures[state->step] (figures[0] without a state): a
// graph of steps replays with the same pointers.
#include <cfloat>

#include "device.cuh"
#include "math.cuh"
#include "reduce.cuh"

namespace fastmlp::cuda {
namespace {

constexpr int loss_threads = 512;

template <typename T>
__global__ void __launch_bounds__(loss_threads, 1)
    loss_kernel(Loss loss, const T* pred, const T* target, const T* weight, T* grad, index rows,
                index outputs, double delta, bool count, StepFigures* figures, StepState* state) {
    __shared__ double buffer[loss_threads];
    if (state != nullptr && state->status != step_ok) return;  // the whole block returns
    const int tid = threadIdx.x;

    // The batch weight W: Σ w (each thread its rows in order, then the tree), or rows.
    double batch_weight = double(rows);
    if (weight != nullptr) {
        double mine = 0;
        for (index i = tid; i < rows; i += loss_threads) mine += double(weight[i]);
        batch_weight = block_sum<loss_threads>(buffer, mine);
    }
    const double normalizer = normalizer_of(loss, batch_weight, outputs);
    const double inv = gradient_factor(loss, normalizer);
    const T base = T(inv);

    double loss_sum = 0, correct = 0;
    for (index i = tid; i < rows; i += loss_threads) {
        const T* p = pred + i * outputs;
        const T* t = target + i * outputs;
        T* g = grad == nullptr ? nullptr : grad + i * outputs;
        const double w = weight == nullptr ? 1.0 : double(weight[i]);
        const T scale = weight == nullptr ? base : T(w * inv);
        const double row = loss_row(loss, p, t, g, outputs, delta, scale, w, count ? &correct : nullptr);
        loss_sum += weight == nullptr ? row : row * w;
    }
    loss_sum = block_sum<loss_threads>(buffer, loss_sum);
    if (count) correct = block_sum<loss_threads>(buffer, correct);

    if (tid == 0) {
        const double mean =
            rows == 0 || outputs == 0 || !(normalizer > 0) ? 0.0 : loss_sum / normalizer;
        const std::int64_t step = state != nullptr ? state->step : 0;
        if (figures != nullptr) {
            StepFigures& f = figures[step];
            f.loss_sum = loss_sum;
            f.correct = count ? correct : 0.0;
            f.normalizer = normalizer;
        }
        const double largest = sizeof(T) == 4 ? double(FLT_MAX) : DBL_MAX;
        if (state != nullptr && !(fabs(mean) <= largest)) {  // NaN, ±inf or beyond T
            state->status = step_bad_loss;
            state->failed_step = step;
        }
    }
}

}  // namespace

template <typename T>
void loss_forward_backward(cudaStream_t stream, Loss loss, const T* pred, const T* target,
                           const T* weight, T* grad, index rows, index outputs, double huber_delta,
                           bool count_correct, StepFigures* figures, StepState* state) {
    require(rows >= 0 && outputs >= 0, "loss: sizes must be non-negative");
    require(loss != Loss::huber || (huber_delta > 0 && huber_delta <= DBL_MAX),
            "loss: huber's delta must be positive and finite");
    loss_kernel<T><<<1, loss_threads, 0, stream>>>(loss, pred, target, weight, grad, rows, outputs,
                                                   huber_delta, count_correct, figures, state);
    check_launch("loss_forward_backward");
}

#define FASTMLP_INSTANTIATE(T)                                                                   \
    template void loss_forward_backward<T>(cudaStream_t, Loss, const T*, const T*, const T*, T*, \
                                           index, index, double, bool, StepFigures*, StepState*);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp::cuda
