// cuda/kernels.cuh — the CUDA kernels of fastmlp, as host functions that enqueue
// them on a stream. Device pointers everywhere; every array row-major with rows
// contiguous unless an `ld` says otherwise; T is float or double. Nothing here
// allocates, synchronizes or copies between host and device: the device engine
// (network.cu) owns the buffers and the stream, and can capture these calls in a
// CUDA graph. Each kernel has a NumPy twin in fastmlp.reference (named beside it)
// and the same definition as the CPU kernel of the same name (cpp/include/fastmlp).
//
// Determinism: every reduction (column sums, norms, the loss) runs in a fixed
// order that does not depend on the launch (fixed chunks, then a fixed tree), so
// the same inputs give the same bits run after run.
//
// Launch errors are checked after each launch (check_launch): a failed launch
// throws std::runtime_error naming the kernel.
#pragma once

#include <cstdint>
#include <string>

#include <cuda_runtime.h>

#include "fastmlp/activation.hpp"
#include "fastmlp/common.hpp"
#include "fastmlp/layers.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/optimizer.hpp"

namespace fastmlp::cuda {

// ---- errors ------------------------------------------------------------------------
// Throws std::runtime_error("CUDA error in <what>: <cudaGetErrorString>") unless ok.
void check(cudaError_t status, const char* what);
// check(cudaGetLastError(), what): after each launch.
void check_launch(const char* what);

// ---- the step's shared state, in device memory -----------------------------------
// One per device network; the kernels of a training step read and write it, so a
// step needs no value from the host (and a graph of steps replays unchanged).
// A kernel that finds status != 0 at its start returns at once: after a failure
// nothing more changes in the parameters, the optimizer state or the figures.
enum StepStatus : int { step_ok = 0, step_bad_loss = 1, step_bad_gradient = 2, step_bad_update = 3 };

struct StepState {
    std::int64_t t = 0;            // updates made so far (the schedule's t; Adam's t is t + 1)
    std::int64_t step = 0;         // steps run since the engine last set it to 0: the index into `figures`
    int status = step_ok;          // the first failure (StepStatus) of this fit call
    std::int64_t failed_step = -1; // `step` at that failure
    double grad_norm = 0;          // this step's global gradient norm (after clip_value)
    double scale = 1;              // this step's gradient scale (clip_norm's rule, else 1)
    double lr = 0;                 // this step's learning rate (config.lr · schedule factor(t))
    double bias1 = 1, bias2 = 1;   // Adam/LAMB: 1 − β1^(t+1), 1 − β2^(t+1) for this step
    unsigned long long kept = 0;   // parameters that kept their value (non-finite update)
};

// What each step leaves for the epoch's record. `figures` arguments below are the
// base of an array: a kernel given a state writes figures[state->step] (read at
// its start), one given no state writes figures[0]. The host reads them after a
// group of steps; epoch sums are made there in step order, as on the CPU.
struct StepFigures {
    double loss_sum = 0;     // Σ over the batch's rows of row loss × weight (not normalized)
    double correct = 0;      // right predictions (weighted), when counted
    double normalizer = 0;   // loss_normalizer(loss, batch weight, outputs)
    double grad_norm = 0;
    double lr = 0;
};

// ---- matrix products (gemm.cu) -------------------------------------------------------
enum class Op { N, T };

// Applied to C after the product, element (r, c): z = C + bias[c] (bias may be
// null); C = f(z); when z_out is not null the pre-activation z is stored there
// too ((m, n), rows ldz apart). f = linear leaves C = z.
template <typename T>
struct Epilogue {
    const T* bias = nullptr;
    Activation activation = Activation::linear;
    T* z_out = nullptr;
    index ldz = 0;
};

// C (m × n, rows ldc apart) = op(A) · op(B) + beta · C, then the epilogue.
// op(A) is m × k: A is stored m × k (Op::N, rows lda apart) or k × m (Op::T);
// op(B) is k × n: B is stored k × n (Op::N) or n × k (Op::T). beta is 0 or 1
// (0: C is not read). k = 0 gives beta · C (then the epilogue). Runs cuBLAS
// when it is loaded (cublas_load) and the product is large, else fastmlp's own
// tiled kernel (float32 exact: FFMA, no tensor cores).
template <typename T>
void gemm(cudaStream_t stream, Op op_a, Op op_b, index m, index n, index k, const T* a, index lda,
          const T* b, index ldb, T beta, T* c, index ldc, const Epilogue<T>& epilogue = {});

// cuBLAS is not linked: it is loaded at run time from `path` (a libcublas.so; empty:
// the dynamic loader's search for libcublas.so.13, then .12). Returns the path or
// name it loaded, or "" when it found none (gemm then runs its own kernel always).
// FASTMLP_CUDA_GEMM=own in the environment, or use_cublas(false), turns it off.
std::string cublas_load(const std::string& path);
void use_cublas(bool on);
bool cublas_active();
// cuBLAS handles are per device and stream, each with a 32 MiB workspace, made on
// the stream's first large product; a stream being captured cannot make one (gemm
// then throws std::runtime_error): call cublas_prepare(stream) before capturing.
// cublas_release(stream) frees them (waiting for the stream): call it before
// destroying the stream, after destroying the graphs captured on it, and not
// while another thread still enqueues work on it. Both do nothing without cuBLAS.
void cublas_prepare(cudaStream_t stream);
void cublas_release(cudaStream_t stream);

// gemm with the own kernel for every product, whatever cuBLAS (tests hold both to the twin).
template <typename T>
void gemm_own_kernel(cudaStream_t stream, Op op_a, Op op_b, index m, index n, index k, const T* a,
                     index lda, const T* b, index ldb, T beta, T* c, index ldc,
                     const Epilogue<T>& epilogue = {});

// ---- activations (activation.cu), twins reference.activation_* -----------------------
// a = f(z) (n elements); a may alias z.
template <typename T>
void activation_forward(cudaStream_t stream, Activation activation, T* a, const T* z, index n);
// dz = da ⊙ f'(z) (a = f(z) given too, for the rules that read it); dz may alias da.
template <typename T>
void activation_backward(cudaStream_t stream, Activation activation, T* dz, const T* da, const T* z,
                         const T* a, index n);
// dz = da ⊙ f'(z) over (rows, cols) as above, and d_bias = Σ_rows dz (+= when
// accumulate): a dense layer's backward before its two products. da, z, a, dz
// are (rows, cols) with rows `cols` apart. d_bias may be null (then only dz).
// With f linear dz may alias da (nothing is computed but d_bias).
template <typename T>
void activation_bias_backward(cudaStream_t stream, Activation activation, T* dz, T* d_bias,
                              const T* da, const T* z, const T* a, index rows, index cols,
                              bool accumulate);

// ---- rows ------------------------------------------------------------------------------
// dst row r = src row order[first + r] (r < rows; width values a row); order null:
// src row first + r. A gathered batch of X or Y; weights are width 1.
template <typename T>
void gather_rows(cudaStream_t stream, T* dst, const T* src, const std::int32_t* order, index first,
                 index rows, index width);
// The same for a training step, the batch found on the device: step k = state->step
// of a group of epochs runs batch k mod steps_per_epoch of epoch k / steps_per_epoch,
// so first = (k mod steps_per_epoch) · batch, its order at order + epoch · n (the
// engine's groups, network.cu). Does nothing once state->status is not step_ok.
template <typename T>
void gather_step_rows(cudaStream_t stream, T* dst, const T* src, const std::int32_t* order,
                      const StepState* state, index n, index batch, index steps_per_epoch, index rows,
                      index width);

// ---- the loss (loss.cu), twin reference.loss_rows / count_correct -------------------------
// One batch: pred, target (rows, outputs); weight (rows) or null. Computes the
// batch weight W (Σ w, or rows), normalizer = loss_normalizer(loss, W, outputs),
// each row's loss (double) and, when grad is not null, grad = dL/dpred for the
// batch's mean (grad may alias pred). Writes figures->loss_sum (Σ row loss × w),
// figures->correct (count_correct's, when count_correct) and figures->normalizer.
// When state is not null: does nothing if state->status != 0; sets status to
// step_bad_loss (and failed_step = state->step) when the mean loss is not finite
// or beyond T's range. figures may be null (then only grad); the figures go to
// figures[state->step] (figures[0] without a state), so a graph replays unchanged.
template <typename T>
void loss_forward_backward(cudaStream_t stream, Loss loss, const T* pred, const T* target,
                           const T* weight, T* grad, index rows, index outputs, double huber_delta,
                           bool count_correct, StepFigures* figures, StepState* state);

// ---- optimizer (optimizer.cu), twin reference.optimizer_update ---------------------------
// The scratch an update needs (doubles), for n parameters in `segments`.
index optimizer_scratch(index n, index segments);

// One update of the flat parameters from the flat gradient, all on the device:
//   1. Σ g² of the gradient clamped to ±clip_value (fixed chunks, then in order);
//      not finite: status = step_bad_gradient (nothing changes).
//   2. grad_norm, scale (clip_norm: min(1, clip_norm / (norm + 1e-6))), lr =
//      config.lr · schedule.factor(t), bias corrections for t + 1; figures->grad_norm,
//      figures->lr (when figures is not null); t += 1.
//   3. the rule (optimizer.hpp), element by element; LAMB's per-segment trust
//      ratios in between. A parameter whose new value is not finite keeps its
//      value, and status = step_bad_update.
// Returns at once when state->status != 0 at the start. After the last kernel,
// state->step += 1 (whatever happened). segments: device array (n_segments) of
// Segment (offset, size), in order, disjoint, inside [0, n) (LAMB's tensors;
// parameters outside every segment get trust 1, as on the CPU). The figures go
// to figures[state->step]. SGD, whose step is unbounded, changes nothing when a
// new value would not be finite (status = step_bad_update, t not advanced), as
// the CPU's SGD.
template <typename T>
void optimizer_update(cudaStream_t stream, const OptimizerConfig& config, const Schedule& schedule,
                      T* params, const T* grads, T* s1, T* s2, index n, const Segment* segments,
                      index n_segments, double* scratch, StepState* state, StepFigures* figures);

// ---- layers between dense ones (layers.cu), twins reference.layer_norm_* etc. -------------
template <typename T>
void layer_norm_forward(cudaStream_t stream, const T* x, const T* gain, const T* bias, T* xhat, T* rstd,
                        T* y, index rows, index width, double eps);
template <typename T>
void layer_norm_backward(cudaStream_t stream, const T* dy, const T* xhat, const T* rstd, const T* gain,
                         T* dx, T* d_gain, T* d_bias, index rows, index width, bool accumulate);
template <typename T>
void batch_norm_forward_train(cudaStream_t stream, const T* x, const T* gain, const T* bias, T* xhat,
                              T* rstd, T* y, T* running_mean, T* running_var, index rows, index width,
                              double eps, double momentum);
template <typename T>
void batch_norm_forward_eval(cudaStream_t stream, const T* x, const T* gain, const T* bias,
                             const T* running_mean, const T* running_var, T* y, index rows,
                             index width, double eps);
template <typename T>
void batch_norm_backward(cudaStream_t stream, const T* dy, const T* xhat, const T* rstd, const T* gain,
                         T* dx, T* d_gain, T* d_bias, index rows, index width, bool accumulate);
// Dropout's mask on the device: element i of a step's mask is kept when
// hash(seed, counter, i) (a counter-based generator, SplitMix64 of the three)
// < keep_threshold(p); the CPU draws its masks from the network's generator instead,
// so a GPU fit with dropout follows other masks than a CPU fit (same distribution).
void dropout_mask(cudaStream_t stream, std::uint8_t* mask, index n, double p, std::uint64_t seed,
                  const std::int64_t* counter);
template <typename T>
void dropout_forward(cudaStream_t stream, const T* x, const std::uint8_t* mask, T* y, index n, double p);
template <typename T>
void dropout_backward(cudaStream_t stream, const T* dy, const std::uint8_t* mask, T* dx, index n, double p);
template <typename T>
void residual_add(cudaStream_t stream, const T* x, const T* skip, T* y, index n);
// dst += src (n): a residual's second path in backward.
template <typename T>
void add_into(cudaStream_t stream, T* dst, const T* src, index n);

}  // namespace fastmlp::cuda
