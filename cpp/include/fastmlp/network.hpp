// fastmlp/network.hpp — the engine: a dense network over flat buffers.
//
// Parameters live in ONE buffer, layer by layer: W_0 (O_0, I_0), b_0 (O_0),
// W_1, b_1, ...; gradients in a second buffer with the same layout. The
// workspace (pre-activations Z_l, activations A_l, two delta buffers) is sized
// for a batch once and reused, so a training step allocates nothing.
//
// Per layer l, with A_{-1} = X (B batch, I in, O out):
//   forward   Z_l = A_{l-1} · W_lᵀ + b_l,   A_l = f_l(Z_l)
//   backward  dZ_l = dA_l ⊙ f_l'(Z_l)
//             dW_l += dZ_lᵀ · A_{l-1},  db_l += Σ_batch dZ_l,  dA_{l-1} = dZ_l · W_l
// Backward overwrites the gradient buffer, or accumulates into it (+=) when
// asked; zero_grad clears it.
//
// Not thread-safe by itself: one call at a time per network (the bindings lock).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "fastmlp/activation.hpp"
#include "fastmlp/common.hpp"
#include "fastmlp/random.hpp"

namespace fastmlp {

struct Layer {
    index inputs = 0, outputs = 0;
    index weight_offset = 0, bias_offset = 0;  // into the flat buffers
    Activation activation = Activation::linear;
};

struct FitOptions {
    index epochs = 1;
    index batch_size = 0;  // 0 or >= n: full batch
    double learning_rate = 0.01;
    bool shuffle = true;
};

enum class FitStatus { completed, non_finite, interrupted };

struct FitResult {
    FitStatus status = FitStatus::completed;
    index epochs_completed = 0;  // epochs whose loss was written
    index failed_epoch = -1;     // epoch in which the loss or an update turned non-finite
    index failed_batch = -1;
};

template <typename T>
class Network {
public:
    // sizes: I, H_1, ..., O (at least two entries, each >= 1);
    // activations: one per layer (sizes.size() - 1). Weights are drawn He-normal
    // (N(0, 2 / fan_in)) from the network's generator, biases are zero.
    Network(const std::vector<index>& sizes, const std::vector<Activation>& activations,
            std::uint64_t seed);

    const std::vector<Layer>& layers() const { return layers_; }
    index inputs() const { return layers_.front().inputs; }
    index outputs() const { return layers_.back().outputs; }
    index parameter_count() const { return index(params_.size()); }
    T* params() { return params_.data(); }
    T* grads() { return grads_.data(); }
    Rng& rng() { return rng_; }

    // He-normal weights, zero biases, from the network's generator.
    void init_he_normal();

    // X is (B, I), rows contiguous. Keeps Z_l and A_l for backward; returns A_last (B, O),
    // valid until the next call that uses the workspace.
    const T* forward(const T* x, index batch);
    // From dY = dL/dA_last (B, O): all parameter gradients, written into the
    // gradient buffer (added to it when accumulate). Needs the cache of a
    // forward on the same X and batch size just before.
    void backward(const T* x, const T* d_out, index batch, bool accumulate = false);
    void zero_grad();
    void sgd_step(T learning_rate);

    // Inference: X (n, I) -> out (n, O), in chunks; does not touch the training cache.
    void predict(const T* x, index n, T* out);

    // The whole training loop, in C++. X (n, I), Y (n, O), rows contiguous.
    // losses (epochs) receives the mean training loss of each epoch, measured on
    // each batch before its update (as the article does). should_stop is polled
    // between batches; returning true ends the fit with status interrupted.
    // When the loss, or the update it would make, is not finite, the update is
    // skipped and the fit stops: the parameters keep their last finite values.
    FitResult fit(const T* x, const T* y, index n, const FitOptions& options, T* losses,
                  const std::function<bool()>& should_stop);

    // The cached forward values of the last forward(): Z_l and A_l, each (B, O_l).
    index cached_batch() const { return cached_batch_; }
    const T* cached_pre_activation(index layer) const { return z_[layer].data(); }
    const T* cached_activation(index layer) const { return a_[layer].data(); }

private:
    void reserve_workspace(index batch);
    void forward_layers(const T* x, index batch);

    std::vector<Layer> layers_;
    index max_width_ = 0;
    std::vector<T> params_, grads_;
    Rng rng_;

    index capacity_ = 0;     // batch size the workspace holds
    index cached_batch_ = -1;  // batch of the last forward, -1 when none
    std::vector<std::vector<T>> z_, a_;
    std::vector<T> delta_, delta_next_;
    std::vector<T> predict_front_, predict_back_;
};

}  // namespace fastmlp
