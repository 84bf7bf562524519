// network.cpp — the engine; see network.hpp for the equations and the layout.
#include "fastmlp/network.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>
#include <string>
#include <thread>

#include "fastmlp/gemm.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/threading.hpp"

namespace fastmlp {
namespace {
constexpr index predict_chunk = 256;  // rows per inference chunk
// A training step whose products are all too small to go parallel by themselves
// (gemm_parallel_flops) is cut into two pieces of the batch, of at least this
// many rows each, which run forward and backward side by side (see step_pieces).
constexpr index piece_min_rows = 32;
double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
// A shuffled batch is gathered by rows, this many per task, on two threads from
// this many values on.
constexpr index gather_rows = 16;
constexpr double gather_parallel = double(1 << 16);
}

template <typename T>
Network<T>::Network(const std::vector<index>& sizes, const std::vector<Activation>& activations,
                    std::uint64_t seed, const std::vector<Init>& inits)
    : rng_(seed) {
    require(sizes.size() >= 2, "Network: layer_sizes needs at least an input and an output size");
    require(activations.size() == sizes.size() - 1,
            "Network: expected one activation per layer");
    std::string listed;
    for (const index size : sizes) listed += (listed.empty() ? "[" : ", ") + std::to_string(size);
    listed += "]";
    require(*std::min_element(sizes.begin(), sizes.end()) >= 1,
            "Network: every entry of layer_sizes must be >= 1, got " + listed);
    // The offsets are summed with overflow checks: a product that wrapped around
    // would build a network far smaller than asked for.
    const std::string too_large = "Network: layer_sizes " + listed +
                                  " hold more parameters than an index can count";
    index offset = 0;
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
        Layer layer;
        layer.inputs = sizes[l];
        layer.outputs = sizes[l + 1];
        layer.activation = activations[l];
        const index weights = checked_product(layer.inputs, layer.outputs, too_large.c_str());
        layer.weight_offset = offset;
        layer.bias_offset = checked_sum(offset, weights, too_large.c_str());
        offset = checked_sum(layer.bias_offset, layer.outputs, too_large.c_str());
        layers_.push_back(layer);
        segments_.push_back(Segment{layer.weight_offset, weights});
        segments_.push_back(Segment{layer.bias_offset, layer.outputs});
    }
    max_width_ = *std::max_element(sizes.begin(), sizes.end());
    params_.assign(offset, T(0));
    grads_.assign(offset, T(0));
    z_.resize(layers_.size());
    a_.resize(layers_.size());
    initialize(inits.empty() ? std::vector<Init>(layers_.size(), Init::he_normal) : inits);
}

template <typename T>
void Network<T>::initialize(const std::vector<Init>& inits) {
    require(inits.size() == layers_.size(), "initialize: expected one scheme per layer");
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        const Layer& layer = layers_[l];
        const double fan_in = double(layer.inputs), fan_out = double(layer.outputs);
        const Init init = inits[l];
        const bool uniform = init == Init::he_uniform || init == Init::xavier_uniform ||
                             init == Init::lecun_uniform;
        double scale = 0;  // the standard deviation, or the uniform bound
        switch (init) {
            case Init::he_normal: scale = std::sqrt(2.0 / fan_in); break;
            case Init::he_uniform: scale = std::sqrt(6.0 / fan_in); break;
            case Init::xavier_normal: scale = std::sqrt(2.0 / (fan_in + fan_out)); break;
            case Init::xavier_uniform: scale = std::sqrt(6.0 / (fan_in + fan_out)); break;
            case Init::lecun_normal: scale = std::sqrt(1.0 / fan_in); break;
            case Init::lecun_uniform: scale = std::sqrt(3.0 / fan_in); break;
        }
        T* w = params_.data() + layer.weight_offset;
        for (index i = 0; i < layer.inputs * layer.outputs; ++i)
            w[i] = T(uniform ? (2.0 * rng_.uniform() - 1.0) * scale : rng_.normal() * scale);
        std::fill_n(params_.data() + layer.bias_offset, layer.outputs, T(0));
    }
}

template <typename T>
void Network<T>::reserve_workspace(index batch) {
    if (batch <= capacity_) return;
    // batch × width for the widest layer; every other buffer is smaller.
    const index widest = checked_product(batch, max_width_,
                                         "the batch size × the widest layer overflows an index");
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        z_[l].assign(batch * layers_[l].outputs, T(0));
        a_[l].assign(batch * layers_[l].outputs, T(0));
    }
    delta_.assign(widest, T(0));
    delta_next_.assign(widest, T(0));
    capacity_ = batch;
    cached_batch_ = -1;
}

// The one layer walk of every forward pass (forward, fit's steps, predict and
// evaluate): `rows` rows of x (rows, I) through each layer, Z_l = A_{l-1} · W_lᵀ
// then, tile by tile while in cache, Z_l += b_l and A_l = f(Z_l). where(l)
// gives the pair {Z_l, A_l} of row pointers (O_l apart); inference passes the
// same buffer twice (A_l overwrites Z_l).
template <typename T>
template <typename Where>
void Network<T>::walk_layers(const T* x, index rows, Where where) {
    const T* input = x;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        const Layer& layer = layers_[l];
        const auto [z, a] = where(l);
        BiasActivation<T> epilogue{layer.activation, a, z, params_.data() + layer.bias_offset,
                                   layer.outputs};
        gemm<T>(Transpose::none, Transpose::transpose, rows, layer.outputs, layer.inputs, T(1),
                input, layer.inputs, params_.data() + layer.weight_offset, layer.inputs, T(0), z,
                layer.outputs, GemmEpilogue{&bias_activation_block<T>, &epilogue});
        input = a;
    }
}

// Rows [first, first + count) of the batch, kept for backward: x points at row
// `first` of the input; Z_l and A_l are written at the same rows of the workspace.
template <typename T>
void Network<T>::forward_rows(const T* x, index first, index count) {
    walk_layers(x, count, [&](std::size_t l) {
        const index at = first * layers_[l].outputs;
        return std::pair<T*, T*>{z_[l].data() + at, a_[l].data() + at};
    });
}

template <typename T>
const T* Network<T>::forward(const T* x, index batch) {
    require(batch >= 1, "forward: the batch must hold at least one sample");
    reserve_workspace(batch);
    forward_rows(x, 0, batch);
    cached_batch_ = batch;
    return a_.back().data();
}

// Rows [first, first + batch) of the cached batch; x points at row `first` of the
// input. d (dL/dA_last of these rows on entry) and d_next are scratch of batch ×
// max width each; the deltas ping-pong between them. accumulate: add to grads
// (+=); otherwise overwrite them (no zero_grad pass needed).
template <typename T>
static void backward_layers(const std::vector<Layer>& layers, const T* params, T* grads,
                            const std::vector<std::vector<T>>& z,
                            const std::vector<std::vector<T>>& a, const T* x, index first,
                            index batch, T* d, T* d_next, bool accumulate) {
    for (index l = index(layers.size()) - 1; l >= 0; --l) {
        const Layer& layer = layers[l];
        const T* input = l == 0 ? x : a[l - 1].data() + first * layer.inputs;
        const index at = first * layer.outputs;
        // dZ_l = dA_l ⊙ f'(Z_l), in place (d is (B, O_l)), and db_l = Σ_batch dZ_l.
        activation_bias_backward(layer.activation, d, grads + layer.bias_offset, d,
                                 z[l].data() + at, a[l].data() + at, batch, layer.outputs,
                                 accumulate);
        // dW_l (O, I) (+)= dZ_lᵀ (O, B) · A_{l-1} (B, I)
        gemm<T>(Transpose::transpose, Transpose::none, layer.outputs, layer.inputs, batch, T(1),
                d, layer.outputs, input, layer.inputs, accumulate ? T(1) : T(0),
                grads + layer.weight_offset, layer.inputs);
        if (l > 0) {
            // dA_{l-1} (B, I) = dZ_l (B, O) · W_l (O, I)
            gemm<T>(Transpose::none, Transpose::none, batch, layer.inputs, layer.outputs, T(1), d,
                    layer.outputs, params + layer.weight_offset, layer.inputs, T(0), d_next,
                    layer.inputs);
            std::swap(d, d_next);
        }
    }
}

template <typename T>
void Network<T>::backward(const T* x, const T* d_out, index batch, bool accumulate) {
    require(cached_batch_ >= 1, "backward: call forward on this batch first");
    require(batch == cached_batch_,
            "backward: the batch size differs from the last forward's; call forward first");
    std::memcpy(delta_.data(), d_out, sizeof(T) * batch * outputs());
    backward_layers(layers_, params_.data(), grads_.data(), z_, a_, x, 0, batch, delta_.data(),
                    delta_next_.data(), accumulate);
}

template <typename T>
void Network<T>::zero_grad() {
    std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
void Network<T>::reserve_predict(index chunk) {
    const index size =
        checked_product(chunk, max_width_, "predict: chunk × the widest layer overflows an index");
    if (index(predict_front_.size()) < size) {
        predict_front_.assign(size, T(0));
        predict_back_.assign(size, T(0));
    }
}

template <typename T>
void Network<T>::predict(const T* x, index n, T* out) {
    if (n <= 0) return;
    const index chunk = std::min(n, predict_chunk);
    reserve_predict(chunk);
    for (index start = 0; start < n; start += chunk) {
        const index rows = std::min(chunk, n - start);
        T* const buffers[2] = {predict_front_.data(), predict_back_.data()};
        walk_layers(x + start * inputs(), rows, [&](std::size_t l) {
            T* z = l + 1 == layers_.size() ? out + start * outputs() : buffers[l % 2];
            return std::pair<T*, T*>{z, z};
        });
    }
}

template <typename T>
void Network<T>::reset_optimizer() {
    opt_buffers_ = -1;
    opt_steps_ = 0;
    opt_s1_.clear();
    opt_s2_.clear();
}

template <typename T>
void Network<T>::prepare_optimizer(const OptimizerConfig& config) {
    const int buffers = config.state_buffers();
    if (opt_buffers_ == buffers && opt_kind_ == config.kind) return;
    reset_optimizer();
    opt_kind_ = config.kind;
    opt_buffers_ = buffers;
    if (buffers >= 1) opt_s1_.assign(params_.size(), T(0));
    if (buffers >= 2) opt_s2_.assign(params_.size(), T(0));
}

template <typename T>
StepResult Network<T>::optimizer_step(const OptimizerConfig& config, const Schedule& schedule,
                                      SgdBounds* bounds) {
    prepare_optimizer(config);
    StepResult result;
    result.lr = config.lr * schedule.factor(index(opt_steps_));
    // SGD without norm clipping measures the gradient in its own checking pass.
    const bool measured_by_update = config.kind == OptimizerKind::sgd && config.clip_norm <= 0;
    double scale = 1.0;
    if (!measured_by_update) {
        result.grad_norm = grad_norm(grads_.data(), parameter_count(), config.clip_value);
        if (!std::isfinite(result.grad_norm)) {
            result.gradient_finite = false;
            return result;
        }
        if (config.clip_norm > 0)  // torch.nn.utils.clip_grad_norm_'s rule
            scale = std::min(1.0, config.clip_norm / (result.grad_norm + 1e-6));
    }
    double grad_sq = 0;
    result.kept = optimizer_update(config, params_.data(), grads_.data(), opt_s1_.data(),
                                   opt_s2_.data(), parameter_count(), segments_, opt_steps_ + 1,
                                   result.lr, scale, measured_by_update ? &grad_sq : nullptr,
                                   bounds);
    if (measured_by_update) {
        result.grad_norm = std::sqrt(grad_sq);
        if (!std::isfinite(result.grad_norm)) {
            result.gradient_finite = false;  // nothing was changed
            result.kept = 0;
            return result;
        }
    }
    if (result.kept == 0 || config.kind != OptimizerKind::sgd) ++opt_steps_;
    return result;
}

template <typename T>
double Network<T>::evaluate(const T* x, const T* y, index n, Loss loss, double huber_delta,
                            index* correct) {
    require(n >= 1, "evaluate: needs at least one sample");
    const index chunk = std::min(n, predict_chunk);
    reserve_predict(chunk);
    if (index(evaluate_out_.size()) < chunk * outputs())  // within predict's buffers' size
        evaluate_out_.assign(chunk * outputs(), T(0));
    T* out = evaluate_out_.data();  // kept: a validation set is evaluated every epoch
    double total = 0;
    index right = 0;
    for (index start = 0; start < n; start += chunk) {
        const index rows = std::min(chunk, n - start);
        predict(x + start * inputs(), rows, out);
        const T* target = y + start * outputs();
        total += loss_forward_backward(loss, out, target, static_cast<T*>(nullptr), rows,
                                       outputs(), huber_delta) *
                 loss_normalizer(loss, rows, outputs());
        if (correct != nullptr) right += count_correct(loss, out, target, rows, outputs());
    }
    if (correct != nullptr) *correct = right;
    return total / loss_normalizer(loss, n, outputs());
}

// How many pieces a training step of `batch` rows is cut into: 2 when the batch
// has rows enough and no layer's product reaches gemm_parallel_flops, else 1.
// Each piece runs its rows forward, through the loss and backward on one thread
// (the caller the first, a helper the second), writing its own gradient; the
// second piece's is then added to the first's. The threads thus meet once per
// step instead of once per product. The rule looks only at the shapes, never at
// the thread count: one thread runs the same two pieces one after the other and
// gets the same bits.
template <typename T>
index Network<T>::step_pieces(index batch) const {
    if (batch < 2 * piece_min_rows) return 1;
    index widest = 0;
    for (const Layer& layer : layers_) widest = std::max(widest, layer.inputs * layer.outputs);
    return 2.0 * double(batch) * double(widest) < gemm_parallel_flops ? 2 : 1;
}

// One training step's forward, loss and backward over rows [0, batch) of x and
// y: grads_ gets the batch's gradient; returns the batch's summed loss (divide by
// loss_normalizer for the mean) and adds the right predictions to *correct.
template <typename T>
double Network<T>::forward_backward(const T* x, const T* y, index batch,
                                    const FitOptions& options, index* correct) {
    const index in = inputs(), out = outputs();
    const index pieces = step_pieces(batch);
    double loss[2] = {0, 0};
    index right[2] = {0, 0};
    // The second piece's rows a multiple of 16 (whole register tiles of rows);
    // the first, which the caller runs, gets the rest: a helper starts a little
    // later.
    const index split = pieces > 1 ? batch - batch / 2 / 16 * 16 : batch;
    auto piece = [&](index r) {
        const index first = r == 0 ? 0 : split, count = r == 0 ? split : batch - split;
        const T* xr = x + first * in;
        forward_rows(xr, first, count);
        const T* prediction = a_.back().data() + first * out;
        const T* target = y + first * out;
        if (options.count_correct)
            right[r] = count_correct(options.loss, prediction, target, count, out);
        T* d = delta_.data() + first * max_width_;
        T* d_next = delta_next_.data() + first * max_width_;
        loss[r] = loss_rows(options.loss, prediction, target, d, count, out, options.huber_delta,
                            batch);
        backward_layers(layers_, params_.data(), r == 0 ? grads_.data() : piece_grads_.data(),
                        z_, a_, xr, first, count, d, d_next, /*accumulate=*/false);
    };
    // The caller runs the first piece and a helper the second, step after step,
    // so each piece's rows stay in one core's cache. Either thread runs both
    // when the other does not come (one thread: the caller, in order).
    std::atomic<int> taken{0};
    const std::thread::id caller = std::this_thread::get_id();
    parallel_for(get_num_threads(), pieces, [&](index) {
        const int preferred = std::this_thread::get_id() == caller ? 0 : 1;
        const int r =
            taken.fetch_or(1 << preferred) & (1 << preferred) ? 1 - preferred : preferred;
        piece(r);
    });
    cached_batch_ = batch;
    if (pieces > 1) {
        T* __restrict g = grads_.data();
        const T* __restrict second = piece_grads_.data();
        for (index i = 0, count = parameter_count(); i < count; ++i) g[i] += second[i];
    }
    *correct += right[0] + right[1];
    return loss[0] + loss[1];
}

// What fit works out once, before the first epoch: the batches, the gather
// buffers of shuffled mini-batches, and what SGD's updates learn of the
// parameters' size (unknown at the start: they may have changed since the last fit).
template <typename T>
struct Network<T>::FitPlan {
    const T* x;
    const T* y;
    index n;
    index batch_size;   // rows per step; the last batch of an epoch may hold fewer
    bool gather;        // shuffled mini-batches: each batch's rows are copied together
    std::vector<index> order;      // the epoch's order of the rows (n), when gathering
    std::vector<T> x_batch, y_batch;  // (batch_size, I) and (batch_size, O), when gathering
    double normalizer;      // loss_normalizer of all n rows
    double accuracy_units;  // what FitRecord::accuracy divides by
    SgdBounds bounds;
};

// One epoch's sums over its batches.
template <typename T>
struct Network<T>::EpochSums {
    double loss = 0, grad_norm = 0, lr = 0;  // lr: the last update's
    index batches = 0, correct = 0;
    std::vector<double> layer_grad_norm;  // one per layer when recorded, else empty
};

template <typename T>
void Network<T>::check_fit_options(index n, const FitOptions& options) const {
    require(n >= 1, "fit: needs at least one sample");
    require(options.epochs >= 1, "fit: epochs must be >= 1");
    options.optimizer.validate();
    options.schedule.validate();
    require(options.loss != Loss::huber ||
                (options.huber_delta > 0 && std::isfinite(options.huber_delta)),
            "fit: huber's delta must be positive and finite");
}

// Everything the loop needs is allocated here, before the first epoch.
template <typename T>
typename Network<T>::FitPlan Network<T>::plan_fit(const T* x, const T* y, index n,
                                                  const FitOptions& options) {
    FitPlan plan{x, y, n};
    plan.batch_size = options.batch_size <= 0 || options.batch_size >= n ? n : options.batch_size;
    plan.gather = options.shuffle && plan.batch_size < n;
    reserve_workspace(plan.batch_size);
    prepare_optimizer(options.optimizer);
    if (std::max(step_pieces(plan.batch_size), step_pieces(n % plan.batch_size)) > 1)
        piece_grads_.resize(params_.size());
    if (plan.gather) {
        const char* overflow = "fit: batch_size × the layer width overflows an index";
        plan.order.resize(n);
        plan.x_batch.resize(checked_product(plan.batch_size, inputs(), overflow));
        plan.y_batch.resize(checked_product(plan.batch_size, outputs(), overflow));
    }
    plan.normalizer = loss_normalizer(options.loss, n, outputs());
    plan.accuracy_units = options.loss == Loss::cross_entropy ? double(n)
                                                              : double(n) * double(outputs());
    return plan;
}

// Fisher–Yates over 0..n-1 from the network's generator: i from n - 1 down to
// 1 swaps order[i] with order[below(i + 1)], n - 1 draws. Each epoch's order
// depends only on the generator, so fit(3) + fit(3) is fit(6);
// reference.Network.fit makes the same draws in the same order.
template <typename T>
void Network<T>::shuffle(std::vector<index>& order) {
    std::iota(order.begin(), order.end(), index(0));
    for (index i = index(order.size()) - 1; i > 0; --i)
        std::swap(order[i], order[rng_.below(std::uint64_t(i) + 1)]);
}

// Copies rows order[start .. start + rows) of X and Y into the batch buffers.
// Rows picked at random from a large X come from memory, one cache miss after
// another: two threads fetch them faster.
template <typename T>
void Network<T>::gather_batch(FitPlan& plan, index start, index rows) {
    const index in = inputs(), out = outputs();
    const int threads = threads_for(double(rows) * double(in + out), gather_parallel);
    parallel_for(threads, ceil_div(rows, gather_rows), [&](index task) {
        const index end = std::min(rows, (task + 1) * gather_rows);
        for (index r = task * gather_rows; r < end; ++r) {
            const index src = plan.order[start + r];
            std::memcpy(plan.x_batch.data() + r * in, plan.x + src * in, sizeof(T) * in);
            std::memcpy(plan.y_batch.data() + r * out, plan.y + src * out, sizeof(T) * out);
        }
    });
}

// One step on the batch that starts at row `start` of the epoch: gather,
// forward, loss, backward, update; adds its figures to `sums`. Returns what
// turned non-finite (the step then changed nothing), or nullptr.
template <typename T>
const char* Network<T>::train_batch(FitPlan& plan, const FitOptions& options, index start,
                                    EpochSums& sums) {
    const index rows = std::min(plan.batch_size, plan.n - start);
    // The step runs on all threads or on one, whichever ThreadChoice finds
    // faster here: the same bits either way.
    const int threads = step_threads_.next();
    const auto step_start = std::chrono::steady_clock::now();
    ThreadLimit limit(threads);
    const T* xb = plan.x + start * inputs();
    const T* yb = plan.y + start * outputs();
    if (plan.gather) {
        gather_batch(plan, start, rows);
        xb = plan.x_batch.data();
        yb = plan.y_batch.data();
    }
    const double normalizer = loss_normalizer(options.loss, rows, outputs());
    const double loss = forward_backward(xb, yb, rows, options, &sums.correct) / normalizer;
    // Summed in double, but a loss the network's dtype cannot hold counts as
    // non-finite: its outputs are about to overflow.
    if (!(std::abs(loss) <= double(std::numeric_limits<T>::max()))) return "the loss";
    const StepResult step = optimizer_step(options.optimizer, options.schedule, &plan.bounds);
    step_threads_.record(threads, seconds_since(step_start));
    if (!step.gradient_finite) return "the gradient";
    if (step.kept > 0) return "an update";
    for (std::size_t l = 0; l < sums.layer_grad_norm.size(); ++l) {  // the update leaves grads_ as they were
        const Layer& layer = layers_[l];
        sums.layer_grad_norm[l] += grad_norm(grads_.data() + layer.weight_offset,
                                             layer.bias_offset + layer.outputs - layer.weight_offset,
                                             options.optimizer.clip_value);
    }
    sums.loss += loss * normalizer;
    sums.grad_norm += step.grad_norm;
    sums.lr = step.lr;
    ++sums.batches;
    return nullptr;
}

// One pass over the data, its order shuffled first when gathering. Returns
// false, with result's status set, when should_stop asked or a step failed.
template <typename T>
bool Network<T>::run_epoch(FitPlan& plan, const FitOptions& options, index epoch,
                           EpochSums& sums, const std::function<bool()>& should_stop,
                           FitResult& result) {
    if (plan.gather) shuffle(plan.order);
    for (index start = 0; start < plan.n; start += plan.batch_size) {
        if (should_stop && should_stop()) {
            result.status = FitStatus::interrupted;
            return false;
        }
        if (const char* failed = train_batch(plan, options, start, sums)) {
            result.status = FitStatus::non_finite;
            result.failed_epoch = epoch;
            result.failed_batch = sums.batches;
            result.reason = failed;
            return false;
        }
    }
    return true;
}

template <typename T>
FitResult Network<T>::fit(const T* x, const T* y, index n, const FitOptions& options,
                          const FitRecord& record, const std::function<bool()>& should_stop) {
    check_fit_options(n, options);
    FitPlan plan = plan_fit(x, y, n, options);
    FitResult result;
    for (index epoch = 0; epoch < options.epochs; ++epoch) {
        EpochSums sums;
        if (record.layer_grad_norm) sums.layer_grad_norm.assign(layers_.size(), 0.0);
        if (!run_epoch(plan, options, epoch, sums, should_stop, result)) return result;
        if (record.loss) record.loss[epoch] = sums.loss / plan.normalizer;
        if (record.grad_norm) record.grad_norm[epoch] = sums.grad_norm / double(sums.batches);
        if (record.lr) record.lr[epoch] = sums.lr;
        if (record.accuracy) record.accuracy[epoch] = double(sums.correct) / plan.accuracy_units;
        for (std::size_t l = 0; l < sums.layer_grad_norm.size(); ++l)
            record.layer_grad_norm[epoch * index(layers_.size()) + index(l)] =
                sums.layer_grad_norm[l] / double(sums.batches);
        result.epochs_completed = epoch + 1;
    }
    return result;
}

template class Network<float>;
template class Network<double>;

}  // namespace fastmlp
