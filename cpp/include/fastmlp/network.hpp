// fastmlp/network.hpp — the engine: a network as an ordered list of layers over flat buffers.
//
// The architecture is data: a list of LayerSpec (dense, layer norm, batch norm,
// activation, dropout, residual), each layer's forward and backward side by side in
// network.cpp. Parameters live in ONE buffer, layer by layer in list order (a dense
// layer's W (O, I) then b (O); a norm layer's gain then bias (W each)); gradients in
// a second buffer with the same layout; batch norm's running mean and variance in a
// third, the state buffer. The workspace is sized for a batch once and reused, so a
// training step allocates nothing.
//
// Per dense layer, with input A (B batch, I in, O out):
//   forward   Z = A · Wᵀ + b
//   backward  dW += dZᵀ · A,  db += Σ_batch dZ,  dA = dZ · W
// An activation layer that directly follows a dense or norm layer runs in that
// layer's pass (the GEMM's epilogue, or the norm's loop), so a plain MLP runs as one
// GEMM per layer and direction. A residual layer closes a block: it adds the block's
// input (the input of layer skip_from) to the block's output; its backward sends the
// gradient down both paths. Blocks do not nest.
//
// Modes: forward/backward and fit train (batch statistics, fresh dropout masks);
// predict and evaluate run in eval mode (running statistics, no dropout).
//
// Gradient checkpointing (fit's checkpoint = k): the forward pass keeps the
// activations only at the start of every k-th block (a block: a dense layer and
// the layers up to the next dense one, a residual block whole; counted from the
// last, whose segment is not recomputed); backward recomputes each segment's
// forward from its checkpoint, then runs its backward. The
// recomputation does the same arithmetic on the same inputs (dropout masks are kept,
// batch statistics are recomputed without moving the running ones), so gradients and
// fits are bit-identical to the run without it.
//
// Backward overwrites the gradient buffer, or accumulates into it (+=) when
// asked; zero_grad clears it.
//
// Not thread-safe by itself: one call at a time per network (the bindings lock).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "fastmlp/activation.hpp"
#include "fastmlp/common.hpp"
#include "fastmlp/layers.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/names.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/random.hpp"
#include "fastmlp/threading.hpp"

namespace fastmlp {

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

enum class LayerKind { dense, layer_norm, batch_norm, activation, dropout, residual };

inline constexpr NameTable<LayerKind, 6> layer_kind_names{
    "layer type",
    {{{LayerKind::dense, "dense"},
      {LayerKind::layer_norm, "layer_norm"},
      {LayerKind::batch_norm, "batch_norm"},
      {LayerKind::activation, "activation"},
      {LayerKind::dropout, "dropout"},
      {LayerKind::residual, "residual"}}}};
static_assert(layer_kind_names.in_enum_order());

// One layer of the list. inputs == outputs for every kind but dense.
struct LayerSpec {
    LayerKind kind = LayerKind::dense;
    index inputs = 0, outputs = 0;
    Init init = Init::he_normal;                  // dense
    Activation activation = Activation::linear;   // activation
    double eps = norm_default_eps;                // layer_norm, batch_norm
    double momentum = batch_norm_default_momentum;  // batch_norm
    double p = 0;                                 // dropout
    index skip_from = -1;                         // residual: adds the input of this layer
};

// A layer of a built network: its spec and where its numbers live.
struct Layer : LayerSpec {
    index weight_offset = -1, bias_offset = -1;  // dense: W, b; norms: gain, bias
    index state_offset = -1;                     // batch norm: running mean, running var
    index stage = -1;                            // the stage that runs it (see network.cpp)
};

struct FitOptions {
    index epochs = 1;
    index batch_size = 0;  // 0 or >= n: full batch
    bool shuffle = true;
    Loss loss = Loss::mse;
    double huber_delta = 1.0;
    OptimizerConfig optimizer;
    Schedule schedule;
    bool count_correct = false;  // classification: fill FitRecord::accuracy
    index checkpoint = 0;        // keep every k-th block's input (0: everything)
    // Data-parallel training (fastmlp.distributed): this process is rank `rank` of
    // `ranks`, all with the same X, Y, weights, parameters and generator. Each global
    // batch (batch_size rows, drawn from the one shuffled order) is cut into `ranks`
    // contiguous parts; this rank runs its part, its gradient scaled for the whole
    // batch's mean, and fit's GradientReduce sums the gradients across the ranks.
    int rank = 0, ranks = 1;
    // Sharded (fit's shard=True): each rank holds only its own rows, and shard_rows
    // lists every rank's count (`ranks` values, this rank's the n fit is given); empty:
    // every rank holds the same rows (above). The epoch interleaves the ranks' rows
    // (shard_prefix) into N = Σ shard_rows global rows, cut into global batches of
    // batch_size rows, each rank's part of a batch being its next rows in proportion
    // to its shard; a rank shuffles its own rows, with a generator seeded by one draw
    // of the network's generator and its rank (every rank's generator moves alike).
    std::vector<index> shard_rows;
};

// Sums, across the ranks and in place, a step's flat gradient (n values) and its
// figures (the batch's summed loss and its right predictions: 2 doubles). It may
// throw (a failed all-reduce); the step then changes nothing. Called with no
// gradient (null, 0) it sums the figures alone: batch norm's statistics; sharded
// with sample weights, the global batches' weights (a chunk of steps at a time,
// before their forward passes) and once per fit the epoch's total weight.
template <typename T>
using GradientReduce = std::function<void(T* grads, index n, double* figures, index n_figures)>;

// The sharded epoch's interleave of the ranks' rows (shard_rows: each rank's
// count, all >= 1): rank q's k-th row sits at (2k + 1) / (2 n_q) in (0, 1), and the
// ranks' rows are merged by that position (a tie: the lower rank first), Webster's
// apportionment seat by seat. Returns how many of rank q's rows are among the
// first e (0 <= e <= N) rows of the merge: non-decreasing in e, Σ over the ranks e,
// within about 1 of n_q · e / N. `from` (<= the answer, 0 when unknown) narrows the search.
index shard_prefix(const std::vector<index>& shard_rows, index q, index e, index from = 0);

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
    // The layers in order (checked: widths chain, at least one dense layer, residual
    // blocks whose input and output widths agree and that do not nest). The initial
    // weights come from the network's generator, dense layer after dense layer.
    Network(const std::vector<LayerSpec>& layers, std::uint64_t seed);

    // What the forward and backward passes run: one layer, or a dense or norm layer
    // together with the activation layer right after it (the device engine runs the same).
    struct Stage {
        LayerKind kind = LayerKind::dense;
        index layer = 0;       // the (first) layer it runs
        index inputs = 0, width = 0;
        Activation activation = Activation::linear;  // fused, or the activation stage's own
        index skip = -1;       // residual: the stage whose input it adds
        index closes = -1;     // a block's first stage: the residual stage that ends the block
        bool keeps_z = false;  // its pre-activation is kept apart from its output
    };

    const std::vector<Layer>& layers() const { return layers_; }
    const std::vector<Stage>& stages() const { return stages_; }
    // The dense layers' indices into layers(), in order.
    const std::vector<index>& dense_layers() const { return dense_; }
    index inputs() const { return layers_.front().inputs; }
    index outputs() const { return layers_.back().outputs; }
    index parameter_count() const { return index(params_.size()); }
    index state_count() const { return index(state_.size()); }
    T* params() { return params_.data(); }
    T* grads() { return grads_.data(); }
    T* state() { return state_.data(); }
    Rng& rng() { return rng_; }
    // Draws every dense layer's weights again with its scheme, in order; zero
    // biases; norm gains 1 and biases 0; running means 0 and variances 1.
    void initialize();

    // X is (B, I), rows contiguous. Training mode (batch statistics, which also move
    // batch norm's running ones; fresh dropout masks). Keeps what backward needs;
    // returns the output (B, O), valid until the next call that uses the workspace.
    const T* forward(const T* x, index batch);
    // From dY = dL/dA_last (B, O): all parameter gradients, written into the
    // gradient buffer (added to it when accumulate). Needs the cache of a
    // forward on the same X and batch size just before.
    void backward(const T* x, const T* d_out, index batch, bool accumulate = false);
    void zero_grad();

    // Bytes of the workspace a training step of `batch` rows keeps (activations,
    // pre-activations, normalised values, dropout masks, backward's gradient
    // buffers), with checkpoint = k (every k-th block kept; 0: no checkpointing).
    std::int64_t activation_memory(index batch, index checkpoint) const;
    // The k that checkpoint="sqrt" means: ⌈√blocks⌉, at least 1.
    index sqrt_checkpoint() const;

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

    // Mean loss of the whole (X, Y) in chunks (no training cache touched),
    // weighted when weight (n) is not null; when correct is not null, also how
    // many predictions were right (count_correct, weighted alike).
    double evaluate(const T* x, const T* y, const T* weight, index n, Loss loss,
                    double huber_delta, double* correct);

    // Inference: X (n, I) -> out (n, O), in chunks; does not touch the training cache.
    void predict(const T* x, index n, T* out);

    // fit's checks of its arguments (std::invalid_argument naming the bad one): what
    // fit runs first, and what the device engine's fit runs too.
    void check_fit_options(index n, const FitOptions& options) const;

    // The whole training loop, in C++. X (n, I), Y (n, O), rows contiguous (Y
    // dense: one-hot rows for cross_entropy); weight (n): the samples' weights
    // (>= 0; null: all 1), which make each batch's loss the weighted mean
    // (loss.hpp) and the accuracy a weighted fraction. `record` receives each epoch's
    // figures. should_stop is polled between batches; returning true ends the
    // fit with status interrupted. When the loss or the gradient is not finite,
    // the update is skipped and the fit stops; when an update would make a
    // parameter non-finite, that parameter keeps its value and the fit stops.
    // With options.ranks > 1, `reduce` sums each step's gradient across the ranks.
    // gradient_memory (parameter_count() values, or null): where the fit keeps the
    // gradient instead of grads() — memory that the ranks of one machine share, so
    // that `reduce` sums their gradients where they lie; grads() gets the last one
    // back when the fit ends.
    FitResult fit(const T* x, const T* y, const T* weight, index n, const FitOptions& options,
                  const FitRecord& record, const std::function<bool()>& should_stop,
                  const GradientReduce<T>& reduce = {}, T* gradient_memory = nullptr);

    // The cached values of the last forward() of the stage that runs layer `layer`:
    // its pre-activation and its output (a dense or norm layer with the activation
    // fused into it: Z and f(Z); an activation layer: its input and output; any
    // other: its output twice). Each (B, outputs of the layer).
    index cached_batch() const { return cached_batch_; }
    std::pair<const T*, const T*> cached(index layer) const;

private:
    struct FitPlan;
    struct EpochSums;

    // Where a stage's values live in a workspace (offsets; -1: none; z -1 means z is out).
    struct Slot {
        index out = -1, z = -1, xhat = -1, rstd = -1, mask = -1;
    };
    // The workspace of training steps of up to `capacity` rows, with `checkpoint`.
    struct Workspace {
        index capacity = 0, checkpoint = -1;
        index row_stride = 0;  // a piece's first row × this (0: × the stage's width)
        std::vector<index> segments;  // first stage of each segment, then stages_.size()
        std::vector<Slot> slots;      // per stage
        index values = 0, mask_bytes = 0;  // sizes of storage and masks
        std::vector<T> storage;
        std::vector<std::uint8_t> masks;
        std::vector<T> delta, delta_next, skip_delta;  // capacity × max width each
    };
    struct Buffers;  // one piece's pointers into a workspace

    void build_stages();
    std::vector<index> block_starts() const;
    Workspace layout(index batch, index checkpoint) const;
    void reserve_workspace(index batch, index checkpoint);
    void reserve_predict(index chunk);
    // Dropout's masks of a batch of `rows` rows (each dropout layer's, from the
    // generator, in layer order); rows [first, first + count) of them go to the
    // workspace (a rank's part of a global batch; all of them in one process).
    void draw_masks(index rows, index first, index count);
    const T* stage_input(const Buffers& b, index stage) const;
    void forward_stages(const Buffers& b, index first_stage, index end_stage, bool move_stats);
    void backward_stages(Buffers& b, index first_stage, index end_stage, bool accumulate);
    // loss_and_delta(output rows, delta rows): a callable, inlined (no std::function:
    // a step allocates nothing).
    template <typename LossAndDelta>
    void train_rows(const T* x, index first, index count, T* grads, LossAndDelta&& loss_and_delta,
                    bool accumulate);
    const T* output_rows(index first) const;
    void forward_eval(const T* x, index rows, T* out);
    index step_pieces(index batch) const;
    double forward_backward(const T* x, const T* y, const T* weight, index batch,
                            double batch_weight, const FitOptions& options, double* correct,
                            index mask_rows, index mask_first);
    // fit, in steps: (check_fit_options, public above), then a plan made once, then epoch after epoch.
    FitPlan plan_fit(const T* x, const T* y, const T* weight, index n, const FitOptions& options,
                     const GradientReduce<T>& reduce);
    bool run_epoch(FitPlan& plan, const FitOptions& options, index epoch, EpochSums& sums,
                   const std::function<bool()>& should_stop, FitResult& result,
                   const GradientReduce<T>& reduce);
    void shuffle(std::vector<index>& order, Rng& rng);
    void gather_batch(FitPlan& plan, index start, index rows);
    const char* train_batch(FitPlan& plan, const FitOptions& options, index start,
                            EpochSums& sums, const GradientReduce<T>& reduce);
    double batch_weight(const FitPlan& plan, index start, index rows) const;
    void sum_step_weights(FitPlan& plan, const FitOptions& options, index first_step,
                          const GradientReduce<T>& reduce);

    std::vector<Layer> layers_;
    std::vector<index> dense_;
    std::vector<Stage> stages_;
    bool has_batch_norm_ = false;
    index max_width_ = 0;
    std::vector<T> params_, grads_, state_;
    T* grad_memory_ = nullptr;  // fit's gradient_memory while a fit runs with one
    const SumAcrossRanks* across_ = nullptr;  // while a fit runs across ranks: batch norm's sums
    // Where the gradient is computed: grads_, or a fit's gradient_memory.
    T* grad_data() { return grad_memory_ != nullptr ? grad_memory_ : grads_.data(); }
    std::vector<Segment> segments_;  // one per parameter tensor, in layer order
    Rng rng_;

    OptimizerKind opt_kind_ = OptimizerKind::sgd;
    int opt_buffers_ = -1;  // -1: no state yet
    std::int64_t opt_steps_ = 0;
    std::vector<T> opt_s1_, opt_s2_;

    Workspace ws_;
    index cached_batch_ = -1;  // batch of the last forward(), -1 when none
    std::vector<T> piece_grads_;  // the second piece's gradient (step_pieces)
    std::vector<std::uint8_t> mask_scratch_;  // a global batch's masks, across ranks (draw_masks)
    ThreadChoice step_threads_;  // fit's steps: on one thread or all
    std::vector<T> predict_buffers_, predict_rstd_, evaluate_out_;
};

}  // namespace fastmlp
