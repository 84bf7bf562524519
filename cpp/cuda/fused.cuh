// cuda/fused.cuh — the fused path: a whole training step of a small plain MLP
// (dense layers, each with its activation) in one thread block, many steps per
// launch.
//
// The anchor is tiny-cuda-nn's "fully fused MLP": when a network is narrow, a
// framework's step is dominated by launches (a few per layer and direction, then
// the optimizer's) rather than arithmetic. Here one block keeps the batch's
// activations, pre-activations and deltas in shared memory and runs gather,
// forward, loss, backward, the gradient's norm and the update with barriers in
// between — then the next step, without going back to the host. Weights,
// gradients and the optimizer's state stay in global memory (L1/L2 resident at
// these sizes); the gradient is written there, as the layer path writes it, so
// net.grads holds the last step's after a fit. Float32 exact (FFMA), sums over the
// batch in a fixed order: the same bits run after run.
//
// One block uses one multiprocessor: the path pays when a step's work is a few
// microseconds at most (fused_fits decides, from the shared memory a batch needs
// and the step's multiply-adds).
#pragma once

#include <cstdint>

#include "kernels.cuh"

namespace fastmlp::cuda {

inline constexpr int fused_max_layers = 16;

template <typename T>
struct FusedArgs {
    // The network: `layers` dense layers, sizes[0] inputs → sizes[layers] outputs.
    int layers = 0;
    index sizes[fused_max_layers + 1] = {};
    Activation activation[fused_max_layers] = {};
    index weight_offset[fused_max_layers] = {}, bias_offset[fused_max_layers] = {};
    T* params = nullptr;
    T* grads = nullptr;
    T* s1 = nullptr;
    T* s2 = nullptr;
    index n_params = 0;
    // The data on the device and the epochs' orders (null: rows in order).
    const T* x = nullptr;
    const T* y = nullptr;
    const T* weight = nullptr;  // null: unweighted
    const std::int32_t* order = nullptr;  // epoch e of the group at order + e·n
    index n = 0, batch = 0, steps_per_epoch = 0;
    // The step.
    Loss loss = Loss::mse;
    double huber_delta = 1.0;
    bool count_correct = false;
    OptimizerConfig config;
    Schedule schedule;
    StepState* state = nullptr;
    StepFigures* figures = nullptr;  // figures[state->step]
    std::int64_t steps = 0;          // steps this launch runs
};

// Shared memory (bytes) one step of `batch` rows needs; the threads of the block.
template <typename T>
std::size_t fused_shared_bytes(const FusedArgs<T>& a, index batch);
inline constexpr int fused_threads = 1024;

// Whether the fused path runs this network at this batch size on this device
// (max_shared: the device's per-block opt-in limit).
template <typename T>
bool fused_fits(const FusedArgs<T>& a, index batch, std::size_t max_shared);

// Runs a.steps steps from state->step on (each: status checked first; a failed
// step's update is skipped, and later ones return at once).
template <typename T>
void fused_steps(cudaStream_t stream, const FusedArgs<T>& a);

}  // namespace fastmlp::cuda
