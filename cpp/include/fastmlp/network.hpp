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
#include "fastmlp/loss.hpp"
#include "fastmlp/names.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/random.hpp"
#include "fastmlp/threading.hpp"

namespace fastmlp {

struct Layer {
    index inputs = 0, outputs = 0;
    index weight_offset = 0, bias_offset = 0;  // into the flat buffers
    Activation activation = Activation::linear;
};

// Initial weights of a layer (fan_in = inputs, fan_out = outputs), drawn in
// row-major order from the network's generator; biases start at zero.
//   he_normal N(0, 2/fan_in)          he_uniform U(±√(6/fan_in))
//   xavier_normal N(0, 2/(in + out))  xavier_uniform U(±√(6/(in + out)))
//   lecun_normal N(0, 1/fan_in)       lecun_uniform U(±√(3/fan_in))
enum class Init { he_normal, he_uniform, xavier_normal, xavier_uniform, lecun_normal, lecun_uniform };

inline constexpr NameTable<Init, 6> init_names{
    "init",
    {{{Init::he_normal, "he_normal"},
      {Init::he_uniform, "he_uniform"},
      {Init::xavier_normal, "xavier_normal"},
      {Init::xavier_uniform, "xavier_uniform"},
      {Init::lecun_normal, "lecun_normal"},
      {Init::lecun_uniform, "lecun_uniform"}}}};
static_assert(init_names.in_enum_order());

inline Init init_from_name(const std::string& name) { return init_names.from_name(name); }

struct FitOptions {
    index epochs = 1;
    index batch_size = 0;  // 0 or >= n: full batch
    bool shuffle = true;
    Loss loss = Loss::mse;
    double huber_delta = 1.0;
    OptimizerConfig optimizer;
    Schedule schedule;
    bool count_correct = false;  // classification: fill FitRecord::accuracy
};

// Per-epoch figures, each an array of `epochs` values (any pointer may be null).
struct FitRecord {
    double* loss = nullptr;       // mean training loss, each batch measured before its update
    double* grad_norm = nullptr;  // mean over the epoch's updates of the global gradient norm
    double* lr = nullptr;         // learning rate of the epoch's last update
    double* accuracy = nullptr;   // fraction right, each batch measured before its update
    // epochs × layers, row-major: mean over the epoch's updates of each layer's gradient
    // norm (its W and b together, after clip_value as grad_norm is). Costs one more pass
    // over the gradient a step, so it is null unless asked for.
    double* layer_grad_norm = nullptr;
};

enum class FitStatus { completed, non_finite, interrupted };

inline constexpr NameTable<FitStatus, 3> fit_status_names{
    "fit status",
    {{{FitStatus::completed, "completed"},
      {FitStatus::non_finite, "non_finite"},
      {FitStatus::interrupted, "interrupted"}}}};
static_assert(fit_status_names.in_enum_order());

inline const char* fit_status_name(FitStatus status) { return fit_status_names.name(status); }

struct FitResult {
    FitStatus status = FitStatus::completed;
    index epochs_completed = 0;  // epochs whose figures were written
    index failed_epoch = -1;     // epoch in which the loss, gradient or an update turned non-finite
    index failed_batch = -1;
    const char* reason = "";     // which of them
};

// What one update did.
struct StepResult {
    double grad_norm = 0;  // global gradient norm before norm clipping
    double lr = 0;         // learning rate after the schedule
    bool gradient_finite = true;
    index kept = 0;        // parameters whose update was not finite (they kept their value)
};

template <typename T>
class Network {
public:
    // sizes: I, H_1, ..., O (at least two entries, each >= 1); activations: one
    // per layer (sizes.size() - 1); inits: one per layer, or empty for He-normal
    // everywhere. The initial weights come from the network's generator.
    Network(const std::vector<index>& sizes, const std::vector<Activation>& activations,
            std::uint64_t seed, const std::vector<Init>& inits = {});

    const std::vector<Layer>& layers() const { return layers_; }
    index inputs() const { return layers_.front().inputs; }
    index outputs() const { return layers_.back().outputs; }
    index parameter_count() const { return index(params_.size()); }
    T* params() { return params_.data(); }
    T* grads() { return grads_.data(); }
    Rng& rng() { return rng_; }
    // Draws every layer's weights again with its scheme; zero biases.
    void initialize(const std::vector<Init>& inits);

    // X is (B, I), rows contiguous. Keeps Z_l and A_l for backward; returns A_last (B, O),
    // valid until the next call that uses the workspace.
    const T* forward(const T* x, index batch);
    // From dY = dL/dA_last (B, O): all parameter gradients, written into the
    // gradient buffer (added to it when accumulate). Needs the cache of a
    // forward on the same X and batch size just before.
    void backward(const T* x, const T* d_out, index batch, bool accumulate = false);
    void zero_grad();

    // The optimizer's state (velocity, or Adam's m and v, and the update count)
    // is part of the network: it carries over from one fit to the next, and is
    // created afresh (zeros, t = 0) when the rule changes or after reset.
    void reset_optimizer();
    std::int64_t optimizer_steps() const { return opt_steps_; }
    // The state buffers (0, 1 or 2 of them, each parameter_count() long) and rule.
    int optimizer_buffers() const { return opt_buffers_ < 0 ? 0 : opt_buffers_; }
    T* optimizer_state(int buffer) { return buffer == 0 ? opt_s1_.data() : opt_s2_.data(); }
    OptimizerKind optimizer_kind() const { return opt_kind_; }
    // Makes the state fit `config` (keeping it when the rule is unchanged) and
    // sets the update count, for restoring a saved state.
    void prepare_optimizer(const OptimizerConfig& config);
    void set_optimizer_steps(std::int64_t steps) { opt_steps_ = steps; }
    // One update from the current gradients: norm (after value clipping), clip
    // by norm, schedule, rule. Leaves params untouched if the gradient is not finite.
    // bounds: see SgdBounds (fit keeps one across its steps).
    StepResult optimizer_step(const OptimizerConfig& config, const Schedule& schedule,
                              SgdBounds* bounds = nullptr);

    // Mean loss of the whole (X, Y) in chunks (no training cache touched); when
    // correct is not null, also how many predictions were right (count_correct).
    double evaluate(const T* x, const T* y, index n, Loss loss, double huber_delta,
                    index* correct);

    // Inference: X (n, I) -> out (n, O), in chunks; does not touch the training cache.
    void predict(const T* x, index n, T* out);

    // The whole training loop, in C++. X (n, I), Y (n, O), rows contiguous (Y
    // dense: one-hot rows for cross_entropy). `record` receives each epoch's
    // figures. should_stop is polled between batches; returning true ends the
    // fit with status interrupted. When the loss or the gradient is not finite,
    // the update is skipped and the fit stops; when an update would make a
    // parameter non-finite, that parameter keeps its value and the fit stops.
    FitResult fit(const T* x, const T* y, index n, const FitOptions& options,
                  const FitRecord& record, const std::function<bool()>& should_stop);

    // The cached forward values of the last forward(): Z_l and A_l, each (B, O_l).
    index cached_batch() const { return cached_batch_; }
    const T* cached_pre_activation(index layer) const { return z_[layer].data(); }
    const T* cached_activation(index layer) const { return a_[layer].data(); }

private:
    struct FitPlan;
    struct EpochSums;

    void reserve_workspace(index batch);
    void reserve_predict(index chunk);
    template <typename Where>
    void walk_layers(const T* x, index rows, Where where);
    void forward_rows(const T* x, index first, index count);
    index step_pieces(index batch) const;
    double forward_backward(const T* x, const T* y, index batch, const FitOptions& options,
                            index* correct);
    // fit, in steps: checks, then a plan made once, then epoch after epoch.
    void check_fit_options(index n, const FitOptions& options) const;
    FitPlan plan_fit(const T* x, const T* y, index n, const FitOptions& options);
    bool run_epoch(FitPlan& plan, const FitOptions& options, index epoch, EpochSums& sums,
                   const std::function<bool()>& should_stop, FitResult& result);
    void shuffle(std::vector<index>& order);
    void gather_batch(FitPlan& plan, index start, index rows);
    const char* train_batch(FitPlan& plan, const FitOptions& options, index start,
                            EpochSums& sums);

    std::vector<Layer> layers_;
    index max_width_ = 0;
    std::vector<T> params_, grads_;
    std::vector<Segment> segments_;  // one per parameter tensor: W_0, b_0, W_1, b_1, ...
    Rng rng_;

    OptimizerKind opt_kind_ = OptimizerKind::sgd;
    int opt_buffers_ = -1;  // -1: no state yet
    std::int64_t opt_steps_ = 0;
    std::vector<T> opt_s1_, opt_s2_;

    index capacity_ = 0;     // batch size the workspace holds
    index cached_batch_ = -1;  // batch of the last forward, -1 when none
    std::vector<std::vector<T>> z_, a_;
    std::vector<T> delta_, delta_next_;
    std::vector<T> piece_grads_;  // the second piece's gradient (step_pieces)
    ThreadChoice step_threads_;  // fit's steps: on one thread or all
    std::vector<T> predict_front_, predict_back_, evaluate_out_;
};

}  // namespace fastmlp
