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
#include "fastmlp/layers.hpp"
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

// ---- sharded fits: the interleave of the ranks' rows ----------------------------------

namespace {
// How many of rank q's rows (n_q) sit before rank p's k-th row (of n_p) in the
// interleave: (2j + 1) / (2 n_q) < (2k + 1) / (2 n_p), or <= when q comes first on a
// tie (q < p). That is (2j + 1) < M, or <= M, with M = (2k + 1) n_q / n_p: ⌈M⌉ / 2
// odd numbers below M, (⌊M⌋ + 1) / 2 up to it. In 128 bits, exact for any counts.
index rows_before(index n_q, bool q_first, index k, index n_p) {
    using wide = unsigned __int128;
    const wide a = wide(2 * std::uint64_t(k) + 1) * std::uint64_t(n_q);
    const std::uint64_t d = std::uint64_t(n_p);
    wide quotient, remainder;
    if (a >> 64 == 0) {  // the common case, in 64 bits (a 128-bit division is a library call)
        quotient = std::uint64_t(a) / d;
        remainder = std::uint64_t(a) % d;
    } else {
        quotient = a / d;
        remainder = a % d;
    }
    const wide count = q_first ? (quotient + 1) / 2 : (quotient + (remainder != 0 ? 1 : 0)) / 2;
    return index(std::min(count, wide(std::uint64_t(n_q))));
}

// How many rows of the interleave come before rank p's k-th row.
index interleave_position(const std::vector<index>& shard_rows, index p, index k) {
    index position = k;
    for (index q = 0; q < index(shard_rows.size()); ++q)
        if (q != p) position += rows_before(shard_rows[q], q < p, k, shard_rows[p]);
    return position;
}
}  // namespace

index shard_prefix(const std::vector<index>& shard_rows, index q, index e, index from) {
    // Rank q's rows among the first e: the first of its rows at a position >= e
    // (positions grow with k), found by bisection in [from, n_q], narrowed first to
    // a few rows around n_q · e / N (the answer lies within about 1.5 (1 + ranks ·
    // n_q / N) of it) when the window's ends show that it holds the answer (in
    // double, beyond 2^53 rows, they may not: then the whole range).
    index low = from, high = shard_rows[q];
    const double total = double(std::accumulate(shard_rows.begin(), shard_rows.end(), index(0)));
    const double share = double(high) / total, guess = share * double(e);
    const double slack = 2.0 + 2.0 * double(shard_rows.size()) * share;
    const index near_low = std::max(low, index(std::max(0.0, std::floor(guess - slack))));
    const index near_high = std::min(high, index(std::ceil(guess + slack)));
    if (near_low <= near_high &&
        (near_low == low || interleave_position(shard_rows, q, near_low - 1) < e) &&
        (near_high == high || interleave_position(shard_rows, q, near_high) >= e)) {
        low = near_low;
        high = near_high;
    }
    while (low < high) {
        const index mid = low + (high - low) / 2;
        if (interleave_position(shard_rows, q, mid) < e)
            low = mid + 1;
        else
            high = mid;
    }
    return low;
}

// ---- building: the layer list checked, the flat buffers laid out, the stages ----------

namespace {
std::string layer_name(const LayerSpec& spec, std::size_t l) {
    return "layer " + std::to_string(l) + " (" + layer_kind_names.name(spec.kind) + ")";
}
}  // namespace

template <typename T>
Network<T>::Network(const std::vector<LayerSpec>& layers, std::uint64_t seed) : rng_(seed) {
    require(!layers.empty(), "Network: the layer list is empty");
    index offset = 0, state = 0, open_block = -1;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        Layer layer;
        static_cast<LayerSpec&>(layer) = layers[l];
        const std::string name = layer_name(layer, l);
        const std::string too_large = "Network: " + name + " (" + std::to_string(layer.inputs) +
                                      " → " + std::to_string(layer.outputs) +
                                      ") brings the layers to more parameters than an index can count";
        if (layer.kind != LayerKind::dense) layer.outputs = layer.inputs;
        require(layer.inputs >= 1 && layer.outputs >= 1, "Network: " + name + " has a width below 1");
        if (l > 0)
            require(layer.inputs == layers_.back().outputs,
                    "Network: " + name + " takes " + std::to_string(layer.inputs) +
                        " inputs but the layer before gives " +
                        std::to_string(layers_.back().outputs));
        switch (layer.kind) {
            case LayerKind::dense: {
                const index weights = checked_product(layer.inputs, layer.outputs, too_large.c_str());
                layer.weight_offset = offset;
                layer.bias_offset = checked_sum(offset, weights, too_large.c_str());
                offset = checked_sum(layer.bias_offset, layer.outputs, too_large.c_str());
                segments_.push_back(Segment{layer.weight_offset, weights});
                segments_.push_back(Segment{layer.bias_offset, layer.outputs});
                dense_.push_back(index(l));
                break;
            }
            case LayerKind::batch_norm:
                require(layer.momentum > 0 && layer.momentum <= 1,
                        "Network: " + name + "'s momentum must be in (0, 1]");
                layer.state_offset = state;
                state = checked_sum(state, checked_product(2, layer.inputs, too_large.c_str()),
                                    too_large.c_str());
                has_batch_norm_ = true;
                [[fallthrough]];
            case LayerKind::layer_norm:
                require(layer.eps > 0 && std::isfinite(layer.eps),
                        "Network: " + name + "'s eps must be positive and finite");
                layer.weight_offset = offset;
                layer.bias_offset = checked_sum(offset, layer.inputs, too_large.c_str());
                offset = checked_sum(layer.bias_offset, layer.inputs, too_large.c_str());
                segments_.push_back(Segment{layer.weight_offset, layer.inputs});
                segments_.push_back(Segment{layer.bias_offset, layer.inputs});
                break;
            case LayerKind::dropout:
                require(layer.p >= 0 && layer.p < 1, "Network: " + name + "'s p must be in [0, 1)");
                break;
            case LayerKind::residual: {
                const index from = layer.skip_from;
                require(from >= 0 && from < index(l),
                        "Network: " + name + " adds the input of layer " + std::to_string(from) +
                            ", which is not a layer before it");
                require(from > open_block,
                        "Network: " + name + "'s block overlaps the residual block before it; "
                                             "residual blocks do not nest");
                require(layers_[from].inputs == layer.inputs,
                        "Network: " + name + " adds a block input of width " +
                            std::to_string(layers_[from].inputs) + " to an output of width " +
                            std::to_string(layer.inputs));
                open_block = index(l);
                break;
            }
            case LayerKind::activation:
                break;
        }
        max_width_ = std::max({max_width_, layer.inputs, layer.outputs});
        layers_.push_back(layer);
    }
    require(!dense_.empty(), "Network: the layer list has no dense layer");
    params_.assign(offset, T(0));
    grads_.assign(offset, T(0));
    state_.assign(state, T(0));
    build_stages();
    initialize();
}

// An activation layer right after a dense or norm layer runs in that layer's pass,
// unless a residual block starts at it (the block's input, the activation's input,
// must then stay apart).
template <typename T>
void Network<T>::build_stages() {
    std::vector<bool> block_start(layers_.size(), false);
    for (const Layer& layer : layers_)
        if (layer.kind == LayerKind::residual) block_start[layer.skip_from] = true;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        Layer& layer = layers_[l];
        const bool fuse = layer.kind == LayerKind::activation && !stages_.empty() &&
                          !block_start[l] && stages_.back().activation == Activation::linear &&
                          (stages_.back().kind == LayerKind::dense ||
                           stages_.back().kind == LayerKind::layer_norm ||
                           stages_.back().kind == LayerKind::batch_norm);
        if (fuse) {
            stages_.back().activation = layer.activation;
            stages_.back().keeps_z = layer.activation != Activation::linear;
            layer.stage = index(stages_.size()) - 1;
            continue;
        }
        Stage stage;
        stage.kind = layer.kind;
        stage.layer = index(l);
        stage.inputs = layer.inputs;
        stage.width = layer.outputs;
        if (layer.kind == LayerKind::activation) stage.activation = layer.activation;
        if (layer.kind == LayerKind::residual) {
            stage.skip = layers_[layer.skip_from].stage;
            stages_[stage.skip].closes = index(stages_.size());
        }
        layer.stage = index(stages_.size());
        stages_.push_back(stage);
    }
}

template <typename T>
void Network<T>::initialize() {
    for (const Layer& layer : layers_) {
        T* first = params_.data() + layer.weight_offset;
        if (layer.kind == LayerKind::layer_norm || layer.kind == LayerKind::batch_norm) {
            std::fill_n(first, layer.inputs, T(1));
            std::fill_n(params_.data() + layer.bias_offset, layer.inputs, T(0));
            if (layer.kind == LayerKind::batch_norm) {
                std::fill_n(state_.data() + layer.state_offset, layer.inputs, T(0));
                std::fill_n(state_.data() + layer.state_offset + layer.inputs, layer.inputs, T(1));
            }
        }
        if (layer.kind != LayerKind::dense) continue;
        const double fan_in = double(layer.inputs), fan_out = double(layer.outputs);
        const Init init = layer.init;
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
        for (index i = 0; i < layer.inputs * layer.outputs; ++i)
            first[i] = T(uniform ? (2.0 * rng_.uniform() - 1.0) * scale : rng_.normal() * scale);
        std::fill_n(params_.data() + layer.bias_offset, layer.outputs, T(0));
    }
}

// ---- the workspace ----------------------------------------------------------------------

// Offsets of every stage's values for `batch` rows. Without checkpointing each stage
// has its own. With checkpoint = k the stages are cut into segments at the start of
// every k-th block (a dense stage outside any residual block); a segment's last
// stage keeps its output (the next segment's checkpoint), and every other value
// lives in scratch shared by all segments, slot by position within the segment.
// Masks and row statistics (small) stay per stage.
template <typename T>
typename Network<T>::Workspace Network<T>::layout(index batch, index checkpoint) const {
    Workspace ws;
    ws.capacity = batch;
    ws.checkpoint = checkpoint;
    ws.segments.push_back(0);
    if (checkpoint > 0) {
        // Counted from the end, so that the last segment, whose forward values
        // backward finds still there, is a whole one: k blocks are not recomputed.
        const std::vector<index> starts = block_starts();
        const index blocks = index(starts.size());
        for (index i = 1; i < blocks; ++i)
            if ((blocks - i) % checkpoint == 0) ws.segments.push_back(starts[i]);
    }
    ws.segments.push_back(index(stages_.size()));
    // With checkpointing, stages of different widths share scratch, and the two pieces
    // of a step (step_pieces) run different segments at once: each piece's rows then
    // start max_width_ values a row apart in every slot, so that neither writes over
    // the other's rows, whatever the stage's width.
    ws.row_stride = checkpoint > 0 ? max_width_ : 0;
    const char* overflow = "fit: the batch × the layer widths overflow an index";
    auto take = [&](index& total, index size) {
        const index at = total;
        total = checked_sum(total, checked_product(batch, size, overflow), overflow);
        return at;
    };
    ws.slots.resize(stages_.size());
    std::vector<Slot> scratch;  // by position within a segment
    for (std::size_t g = 0; g + 1 < ws.segments.size(); ++g) {
        const index first = ws.segments[g], end = ws.segments[g + 1];
        for (index s = first; s < end; ++s) {
            const Stage& stage = stages_[s];
            Slot& slot = ws.slots[s];
            const bool norm = stage.kind == LayerKind::layer_norm || stage.kind == LayerKind::batch_norm;
            // Row statistics and masks: per stage.
            if (stage.kind == LayerKind::layer_norm) slot.rstd = take(ws.values, 1);  // per row
            if (stage.kind == LayerKind::batch_norm) {  // per column
                slot.rstd = ws.values;
                ws.values = checked_sum(ws.values, stage.width, overflow);
            }
            if (stage.kind == LayerKind::dropout) slot.mask = take(ws.mask_bytes, stage.width);
            // Values: each stage its own without checkpointing; with it, a segment's last
            // output its own and the rest in the scratch slot of its position.
            auto value = [&](index Slot::*field, bool needed, bool own) {
                if (!needed) return;
                if (own) {
                    slot.*field = take(ws.values, ws.row_stride > 0 ? ws.row_stride : stage.width);
                    return;
                }
                const std::size_t position = std::size_t(s - first);
                if (scratch.size() <= position) scratch.resize(position + 1);
                if (scratch[position].*field < 0) scratch[position].*field = take(ws.values, max_width_);
                slot.*field = scratch[position].*field;
            };
            const bool own = checkpoint <= 0;
            value(&Slot::out, true, own || s + 1 == end);
            value(&Slot::z, stage.keeps_z, own);
            value(&Slot::xhat, norm, own);
        }
    }
    return ws;
}

template <typename T>
void Network<T>::reserve_workspace(index batch, index checkpoint) {
    if (ws_.checkpoint == checkpoint && batch <= ws_.capacity) return;
    Workspace ws = layout(std::max(batch, ws_.checkpoint == checkpoint ? ws_.capacity : 0), checkpoint);
    const index deltas = checked_product(ws.capacity, max_width_,
                                         "fit: the batch × the widest layer overflows an index");
    ws.storage.assign(ws.values, T(0));
    ws.masks.assign(ws.mask_bytes, 0);
    ws.delta.assign(deltas, T(0));
    ws.delta_next.assign(deltas, T(0));
    ws.skip_delta.assign(deltas, T(0));
    ws_ = std::move(ws);
    cached_batch_ = -1;
}

template <typename T>
std::int64_t Network<T>::activation_memory(index batch, index checkpoint) const {
    require(batch >= 1, "activation_memory: the batch must hold at least one sample");
    const Workspace ws = layout(batch, checkpoint);
    const double deltas = 3.0 * double(batch) * double(max_width_);
    return std::int64_t((double(ws.values) + deltas) * sizeof(T) + double(ws.mask_bytes));
}

// The stages where a block starts: dense stages outside any residual block (a
// residual block's own dense stage starts it).
template <typename T>
std::vector<index> Network<T>::block_starts() const {
    std::vector<index> starts;
    index open_until = -1;
    for (index s = 0; s < index(stages_.size()); ++s) {
        if (stages_[s].kind == LayerKind::dense && s > open_until) starts.push_back(s);
        if (stages_[s].closes >= 0) open_until = stages_[s].closes;
    }
    if (starts.empty() || starts.front() != 0) starts.insert(starts.begin(), 0);
    return starts;
}

template <typename T>
index Network<T>::sqrt_checkpoint() const {
    const double blocks = double(block_starts().size());
    return std::max<index>(1, index(std::ceil(std::sqrt(blocks))));
}

// One piece's view of the workspace: rows [first, first + count) of the batch,
// x pointing at row `first` of the input.
template <typename T>
struct Network<T>::Buffers {
    const Workspace& ws;
    const T* x;
    index first, count;
    T* grads;
    T* d;
    T* d_next;
    T* skip_d;

    T* at(index offset, index width) const {
        return const_cast<T*>(ws.storage.data()) + offset +
               first * (ws.row_stride > 0 ? ws.row_stride : width);
    }
    T* out(const Stage& s, index i) const { return at(ws.slots[i].out, s.width); }
    T* z(const Stage& s, index i) const {
        return ws.slots[i].z < 0 ? out(s, i) : at(ws.slots[i].z, s.width);
    }
    T* xhat(const Stage& s, index i) const { return at(ws.slots[i].xhat, s.width); }
    T* rstd(const Stage& s, index i) const {
        // layer norm: one per row; batch norm: one per column (the whole batch)
        return const_cast<T*>(ws.storage.data()) + ws.slots[i].rstd +
               (s.kind == LayerKind::layer_norm ? first : 0);
    }
    std::uint8_t* mask(const Stage& s, index i) const {
        return const_cast<std::uint8_t*>(ws.masks.data()) + ws.slots[i].mask + first * s.width;
    }
};

template <typename T>
const T* Network<T>::stage_input(const Buffers& b, index stage) const {
    return stage == 0 ? b.x : b.out(stages_[stage - 1], stage - 1);
}

template <typename T>
void Network<T>::draw_masks(index rows, index first, index count) {
    for (index s = 0; s < index(stages_.size()); ++s) {
        const Stage& stage = stages_[s];
        if (stage.kind != LayerKind::dropout) continue;
        std::uint8_t* mine = ws_.masks.data() + ws_.slots[s].mask;
        if (count == rows) {  // the whole batch
            dropout_mask(rng_, mine, rows * stage.width, layers_[stage.layer].p);
            continue;
        }
        // A rank's part: the whole batch's masks drawn (so every rank's generator moves
        // alike, and each row gets the mask one process would give it), this part kept.
        dropout_mask(rng_, mask_scratch_.data(), rows * stage.width, layers_[stage.layer].p);
        if (count > 0)
            std::memcpy(mine, mask_scratch_.data() + first * stage.width, std::size_t(count * stage.width));
    }
}

// ---- forward and backward, stage by stage ------------------------------------------------

// Training forward of stages [first_stage, end_stage) on the piece's rows.
// move_stats: batch norm's running statistics move (not when recomputing).
template <typename T>
void Network<T>::forward_stages(const Buffers& b, index first_stage, index end_stage,
                                bool move_stats) {
    const index rows = b.count;
    for (index s = first_stage; s < end_stage; ++s) {
        const Stage& stage = stages_[s];
        const Layer& layer = layers_[stage.layer];
        const T* in = stage_input(b, s);
        T* out = b.out(stage, s);
        T* z = b.z(stage, s);
        const index n = rows * stage.width;
        switch (stage.kind) {
            case LayerKind::dense: {
                // Z = A · Wᵀ, then, tile by tile while in cache, Z += b and A = f(Z).
                BiasActivation<T> epilogue{stage.activation, out, z,
                                           params_.data() + layer.bias_offset, stage.width};
                gemm<T>(Transpose::none, Transpose::transpose, rows, stage.width, stage.inputs,
                        T(1), in, stage.inputs, params_.data() + layer.weight_offset,
                        stage.inputs, T(0), z, stage.width,
                        GemmEpilogue{&bias_activation_block<T>, &epilogue});
                break;
            }
            case LayerKind::layer_norm:
                layer_norm_forward(in, params_.data() + layer.weight_offset,
                                   params_.data() + layer.bias_offset, b.xhat(stage, s),
                                   b.rstd(stage, s), z, rows, stage.width, layer.eps);
                if (stage.keeps_z) activation_forward(stage.activation, out, z, n);
                break;
            case LayerKind::batch_norm: {
                T* state = state_.data() + layer.state_offset;
                batch_norm_forward_train(in, params_.data() + layer.weight_offset,
                                         params_.data() + layer.bias_offset, b.xhat(stage, s),
                                         b.rstd(stage, s), z, move_stats ? state : nullptr,
                                         move_stats ? state + stage.width : nullptr, rows,
                                         stage.width, layer.eps, layer.momentum, across_);
                if (stage.keeps_z) activation_forward(stage.activation, out, z, n);
                break;
            }
            case LayerKind::activation:
                activation_forward(stage.activation, out, in, n);
                break;
            case LayerKind::dropout:
                dropout_forward(in, b.mask(stage, s), out, n, layer.p);
                break;
            case LayerKind::residual:
                residual_add(in, stage_input(b, stage.skip), out, n);
                break;
        }
    }
}

// Backward of stages [first_stage, end_stage), last first: on entry b.d holds
// dL/d(output of end_stage - 1) for the piece's rows, on exit dL/d(input of
// first_stage) (not computed for the first dense stage: nothing needs dL/dX).
// The deltas rotate between b.d, b.d_next and b.skip_d.
template <typename T>
void Network<T>::backward_stages(Buffers& b, index first_stage, index end_stage,
                                 bool accumulate) {
    const index rows = b.count;
    T* grads = b.grads;
    for (index s = end_stage - 1; s >= first_stage; --s) {
        const Stage& stage = stages_[s];
        const Layer& layer = layers_[stage.layer];
        const T* in = stage_input(b, s);
        const index n = rows * stage.width;
        const bool closes_block = stage.closes >= 0 && s > 0;  // its input also took the skip
        switch (stage.kind) {
            case LayerKind::dense: {
                // dZ = dA ⊙ f'(Z), in place, and db = Σ_batch dZ.
                activation_bias_backward(stage.activation, b.d, grads + layer.bias_offset, b.d,
                                         b.z(stage, s), b.out(stage, s), rows, stage.width,
                                         accumulate);
                // dW (O, I) (+)= dZᵀ (O, B) · A (B, I)
                gemm<T>(Transpose::transpose, Transpose::none, stage.width, stage.inputs, rows,
                        T(1), b.d, stage.width, in, stage.inputs, accumulate ? T(1) : T(0),
                        grads + layer.weight_offset, stage.inputs);
                if (s > 0) {
                    // dA (B, I) = dZ (B, O) · W (O, I); at a block's start added to
                    // the skip path's gradient, already in skip_d (β = 1).
                    T* target = closes_block ? b.skip_d : b.d_next;
                    gemm<T>(Transpose::none, Transpose::none, rows, stage.inputs, stage.width,
                            T(1), b.d, stage.width, params_.data() + layer.weight_offset,
                            stage.inputs, closes_block ? T(1) : T(0), target, stage.inputs);
                    if (closes_block) {
                        std::swap(b.skip_d, b.d);  // d: the sum; skip_d: free again
                    } else {
                        std::swap(b.d, b.d_next);
                    }
                }
                continue;  // the skip was added by the GEMM
            }
            case LayerKind::layer_norm:
            case LayerKind::batch_norm: {
                if (stage.keeps_z)
                    activation_backward(stage.activation, b.d, b.d, b.z(stage, s),
                                        b.out(stage, s), n);
                const T* gain = params_.data() + layer.weight_offset;
                if (stage.kind == LayerKind::layer_norm)
                    layer_norm_backward(b.d, b.xhat(stage, s), b.rstd(stage, s), gain, b.d,
                                        grads + layer.weight_offset, grads + layer.bias_offset,
                                        rows, stage.width, accumulate);
                else
                    batch_norm_backward(b.d, b.xhat(stage, s), b.rstd(stage, s), gain, b.d,
                                        grads + layer.weight_offset, grads + layer.bias_offset,
                                        rows, stage.width, accumulate, across_);
                break;
            }
            case LayerKind::activation:
                activation_backward(stage.activation, b.d, b.d, in, b.out(stage, s), n);
                break;
            case LayerKind::dropout:
                dropout_backward(b.d, b.mask(stage, s), b.d, n, layer.p);
                break;
            case LayerKind::residual:
                // d goes on into the block and, unchanged, along the skip.
                std::memcpy(b.skip_d, b.d, sizeof(T) * n);
                break;
        }
        if (closes_block) residual_add(b.d, b.skip_d, b.d, rows * stage.inputs);
    }
}

template <typename T>
const T* Network<T>::output_rows(index first) const {
    const index last = index(stages_.size()) - 1;
    return ws_.storage.data() + ws_.slots[last].out +
           first * (ws_.row_stride > 0 ? ws_.row_stride : stages_[last].width);
}

// A piece's whole step: forward of every segment (kept: each segment's last
// output), the loss's delta, then segment by segment from the last: recompute
// its forward (the last segment's values are still there), backward.
template <typename T>
template <typename LossAndDelta>
void Network<T>::train_rows(const T* x, index first, index count, T* grads,
                            LossAndDelta&& loss_and_delta, bool accumulate) {
    Buffers b{ws_, x, first, count, grads,
              ws_.delta.data() + first * max_width_, ws_.delta_next.data() + first * max_width_,
              ws_.skip_delta.data() + first * max_width_};
    const std::vector<index>& seg = ws_.segments;
    const index segments = index(seg.size()) - 1;
    for (index g = 0; g < segments; ++g) forward_stages(b, seg[g], seg[g + 1], true);
    loss_and_delta(output_rows(first), b.d);
    for (index g = segments - 1; g >= 0; --g) {
        if (g + 1 < segments) forward_stages(b, seg[g], seg[g + 1], false);
        backward_stages(b, seg[g], seg[g + 1], accumulate);
    }
}

template <typename T>
const T* Network<T>::forward(const T* x, index batch) {
    require(batch >= 1, "forward: the batch must hold at least one sample");
    require(!has_batch_norm_ || batch >= 2,
            "forward: batch norm in training needs at least 2 samples per batch, got 1");
    reserve_workspace(batch, 0);
    draw_masks(batch, 0, batch);
    Buffers b{ws_, x, 0, batch, grad_data(), ws_.delta.data(), ws_.delta_next.data(),
              ws_.skip_delta.data()};
    forward_stages(b, 0, index(stages_.size()), true);
    cached_batch_ = batch;
    return output_rows(0);
}

template <typename T>
void Network<T>::backward(const T* x, const T* d_out, index batch, bool accumulate) {
    require(cached_batch_ >= 1, "backward: call forward on this batch first");
    require(batch == cached_batch_,
            "backward: the batch size differs from the last forward's; call forward first");
    Buffers b{ws_, x, 0, batch, grad_data(), ws_.delta.data(), ws_.delta_next.data(),
              ws_.skip_delta.data()};
    std::memcpy(b.d, d_out, sizeof(T) * batch * outputs());
    backward_stages(b, 0, index(stages_.size()), accumulate);
}

template <typename T>
std::pair<const T*, const T*> Network<T>::cached(index layer) const {
    require(cached_batch_ >= 1 && ws_.checkpoint == 0, "cache: no forward pass yet");
    require(layer >= 0 && layer < index(layers_.size()), "cache: layer out of range");
    const index s = layers_[layer].stage;
    const Stage& stage = stages_[s];
    Buffers b{ws_, nullptr, 0, cached_batch_, nullptr, nullptr, nullptr, nullptr};
    if (stage.kind != LayerKind::activation) return {b.z(stage, s), b.out(stage, s)};
    require(s > 0, "cache: the first layer's input is X itself");
    return {b.out(stages_[s - 1], s - 1), b.out(stage, s)};
}

template <typename T>
void Network<T>::zero_grad() {
    std::fill_n(grad_data(), parameter_count(), T(0));
}

// ---- eval mode: predict ---------------------------------------------------------------

template <typename T>
void Network<T>::reserve_predict(index chunk) {
    const index size =
        checked_product(chunk, max_width_, "predict: chunk × the widest layer overflows an index");
    if (index(predict_buffers_.size()) < 3 * size) {
        predict_buffers_.assign(checked_product(3, size, "predict: workspace overflow"), T(0));
        predict_rstd_.assign(chunk, T(0));
    }
}

// Eval mode on `rows` rows (within predict's chunk): three buffers rotate, none
// overwriting the stage's input or an open block's input; dropout passes through.
template <typename T>
void Network<T>::forward_eval(const T* x, index rows, T* out) {
    const index size = index(predict_buffers_.size()) / 3;
    T* buffers[3] = {predict_buffers_.data(), predict_buffers_.data() + size,
                     predict_buffers_.data() + 2 * size};
    const T* in = x;
    const T* skip = nullptr;
    const index last = index(stages_.size()) - 1;
    for (index s = 0; s <= last; ++s) {
        const Stage& stage = stages_[s];
        const Layer& layer = layers_[stage.layer];
        if (stage.closes >= 0) skip = in;
        if (stage.kind == LayerKind::dropout) continue;
        T* o = out;
        if (s < last)
            for (T* buffer : buffers)
                if (buffer != in && buffer != skip) {
                    o = buffer;
                    break;
                }
        const index n = rows * stage.width;
        const T* gain = params_.data() + layer.weight_offset;
        const T* bias = params_.data() + layer.bias_offset;
        switch (stage.kind) {
            case LayerKind::dense: {
                BiasActivation<T> epilogue{stage.activation, o, o, bias, stage.width};
                gemm<T>(Transpose::none, Transpose::transpose, rows, stage.width, stage.inputs,
                        T(1), in, stage.inputs, params_.data() + layer.weight_offset,
                        stage.inputs, T(0), o, stage.width,
                        GemmEpilogue{&bias_activation_block<T>, &epilogue});
                break;
            }
            case LayerKind::layer_norm:
                layer_norm_forward(in, gain, bias, o, predict_rstd_.data(), o, rows, stage.width,
                                   layer.eps);
                if (stage.activation != Activation::linear)
                    activation_forward(stage.activation, o, o, n);
                break;
            case LayerKind::batch_norm: {
                const T* state = state_.data() + layer.state_offset;
                batch_norm_forward_eval(in, gain, bias, state, state + stage.width, o, rows,
                                        stage.width, layer.eps);
                if (stage.activation != Activation::linear)
                    activation_forward(stage.activation, o, o, n);
                break;
            }
            case LayerKind::activation:
                activation_forward(stage.activation, o, in, n);
                break;
            case LayerKind::residual:
                residual_add(in, skip, o, n);
                skip = nullptr;
                break;
            case LayerKind::dropout:
                break;
        }
        in = o;
    }
    if (in != out) std::memcpy(out, in, sizeof(T) * rows * outputs());
}

template <typename T>
void Network<T>::predict(const T* x, index n, T* out) {
    if (n <= 0) return;
    const index chunk = std::min(n, predict_chunk);
    reserve_predict(chunk);
    for (index start = 0; start < n; start += chunk) {
        const index rows = std::min(chunk, n - start);
        forward_eval(x + start * inputs(), rows, out + start * outputs());
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
        result.grad_norm = grad_norm(grad_data(), parameter_count(), config.clip_value);
        if (!std::isfinite(result.grad_norm)) {
            result.gradient_finite = false;
            return result;
        }
        if (config.clip_norm > 0)  // torch.nn.utils.clip_grad_norm_'s rule
            scale = std::min(1.0, config.clip_norm / (result.grad_norm + 1e-6));
    }
    double grad_sq = 0;
    result.kept = optimizer_update(config, params_.data(), grad_data(), opt_s1_.data(),
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
double Network<T>::evaluate(const T* x, const T* y, const T* weight, index n, Loss loss,
                            double huber_delta, double* correct) {
    require(n >= 1, "evaluate: needs at least one sample");
    const index chunk = std::min(n, predict_chunk);
    reserve_predict(chunk);
    if (index(evaluate_out_.size()) < chunk * outputs())  // within predict's buffers' size
        evaluate_out_.assign(chunk * outputs(), T(0));
    T* out = evaluate_out_.data();  // kept: a validation set is evaluated every epoch
    double total = 0, right = 0;
    for (index start = 0; start < n; start += chunk) {
        const index rows = std::min(chunk, n - start);
        predict(x + start * inputs(), rows, out);
        const T* target = y + start * outputs();
        const T* w = weight == nullptr ? nullptr : weight + start;
        total += loss_rows(loss, out, target, static_cast<T*>(nullptr), rows, outputs(), huber_delta,
                           weight_sum(w, rows), w);
        if (correct != nullptr) right += count_correct(loss, out, target, rows, outputs(), w);
    }
    if (correct != nullptr) *correct = right;
    const double normalizer = loss_normalizer(loss, weight_sum(weight, n), outputs());
    return normalizer > 0 ? total / normalizer : 0.0;
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
    if (batch < 2 * piece_min_rows || has_batch_norm_) return 1;  // batch norm: whole-batch statistics
    index widest = 0;
    for (const index l : dense_) widest = std::max(widest, layers_[l].inputs * layers_[l].outputs);
    return 2.0 * double(batch) * double(widest) < gemm_parallel_flops ? 2 : 1;
}

// One training step's forward, loss and backward over rows [0, batch) of x and
// y, with the rows' weights when weight is not null (batch_weight: their sum, or
// batch): grad_data() gets the batch's gradient; returns the batch's summed loss
// (divide by loss_normalizer for the mean) and adds the right predictions to *correct.
template <typename T>
double Network<T>::forward_backward(const T* x, const T* y, const T* weight, index batch,
                                    double batch_weight, const FitOptions& options,
                                    double* correct, index mask_rows, index mask_first) {
    const index in = inputs(), out = outputs();
    const index pieces = step_pieces(batch);
    // Before the pieces, in layer order: the same masks at any thread count.
    draw_masks(mask_rows, mask_first, batch);
    double loss[2] = {0, 0}, right[2] = {0, 0};
    // The second piece's rows a multiple of 16 (whole register tiles of rows);
    // the first, which the caller runs, gets the rest: a helper starts a little
    // later.
    const index split = pieces > 1 ? batch - batch / 2 / 16 * 16 : batch;
    auto piece = [&](index r) {
        const index first = r == 0 ? 0 : split, count = r == 0 ? split : batch - split;
        const T* target = y + first * out;
        const T* w = weight == nullptr ? nullptr : weight + first;
        train_rows(x + first * in, first, count, r == 0 ? grad_data() : piece_grads_.data(),
                   [&](const T* prediction, T* d) {
                       if (options.count_correct)
                           right[r] = count_correct(options.loss, prediction, target, count, out, w);
                       loss[r] = loss_rows(options.loss, prediction, target, d, count, out,
                                           options.huber_delta, batch_weight, w);
                   },
                   /*accumulate=*/false);
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
    cached_batch_ = options.checkpoint > 0 ? -1 : batch;  // recomputed segments hold the first segment's
    if (pieces > 1) {
        T* __restrict g = grad_data();
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
    const T* weight;  // the samples' weights (n), or null
    index n;
    index batch_size;   // rows per step; the last batch of an epoch may hold fewer
    bool gather;        // shuffled mini-batches: each batch's rows are copied together
    std::vector<index> order;      // the epoch's order of the rows (n), when gathering
    std::vector<T> x_batch, y_batch, weight_batch;  // (batch_size, I), (batch_size, O), (batch_size)
    std::vector<T> state_before;      // the running statistics before a step (batch norm)
    double normalizer;      // loss_normalizer of all n rows (with their weights)
    double accuracy_units;  // what FitRecord::accuracy divides by (their weight)
    SgdBounds bounds;
    // Sharded (FitOptions::shard_rows): the rows of every rank, and where each rank
    // up to this one stands in the epoch (its shard_prefix at the batch's start).
    bool sharded = false;
    index global_n = 0;  // the epoch's rows: n, or Σ shard_rows
    std::vector<index> prefix;
    Rng shard_rng;  // this epoch's generator of this rank's order
    bool mask_offsets = false;  // whether a part's offset in its global batch is needed (dropout)
    // Sharded with weights: the global batches' weights of steps [weights_from,
    // weights_from + size), summed across the ranks a chunk of steps at a time.
    std::vector<double> step_weights;
    index weights_from = 0;
};

// One epoch's sums over its batches.
template <typename T>
struct Network<T>::EpochSums {
    double loss = 0, grad_norm = 0, lr = 0;  // lr: the last update's
    index batches = 0;
    double correct = 0;  // right predictions, each counted with its weight
    std::vector<double> layer_grad_norm;  // one per layer when recorded, else empty
};

template <typename T>
void Network<T>::check_fit_options(index n, const FitOptions& options) const {
    require(n >= 1, "fit: needs at least one sample");
    require(options.epochs >= 1, "fit: epochs must be >= 1");
    require(options.checkpoint >= 0, "fit: checkpoint must be >= 0");
    require(options.ranks >= 1 && options.rank >= 0 && options.rank < options.ranks,
            "fit: rank must be in [0, ranks)");
    if (!options.shard_rows.empty()) {
        require(index(options.shard_rows.size()) == options.ranks,
                "fit: shard_rows must hold one count per rank");
        require(options.shard_rows[options.rank] == n,
                "fit: shard_rows must give this rank's own count of rows, " + std::to_string(n));
        index total = 0;
        for (const index rows : options.shard_rows) {
            require(rows >= 1, "fit: every rank's shard needs at least one row");
            total = checked_sum(total, rows, "fit: the ranks' rows overflow an index");
        }
        // A rank may have no row in a batch, and would then miss the batch's sums: not yet.
        require(!has_batch_norm_ || options.ranks == 1,
                "fit: batch norm is not supported with sharded data across ranks yet");
    }
    if (options.ranks > 1 && has_batch_norm_ && options.shard_rows.empty()) {
        // Every rank takes part in each batch's statistics: each needs a row of every batch.
        const index batch = options.batch_size <= 0 || options.batch_size >= n ? n : options.batch_size;
        const index last = n % batch == 0 ? batch : n % batch;
        require(std::min(batch, last) >= options.ranks,
                "fit: batch norm across " + std::to_string(options.ranks) +
                    " ranks needs a row of every batch on every rank; with " + std::to_string(n) +
                    " samples and batch_size " + std::to_string(batch) + " a batch of " +
                    std::to_string(std::min(batch, last)) +
                    " occurs (change batch_size, or drop or add samples)");
    }
    if (has_batch_norm_) {
        const index batch = options.batch_size <= 0 || options.batch_size >= n ? n : options.batch_size;
        require(batch >= 2 && (n % batch != 1),
                "fit: batch norm in training needs at least 2 samples per batch; with " +
                    std::to_string(n) + " samples and batch_size " + std::to_string(batch) +
                    " a batch of 1 occurs (drop or add a sample, or change batch_size)");
    }
    options.optimizer.validate();
    options.schedule.validate();
    require(options.loss != Loss::huber ||
                (options.huber_delta > 0 && std::isfinite(options.huber_delta)),
            "fit: huber's delta must be positive and finite");
}

// Everything the loop needs is allocated here, before the first epoch.
template <typename T>
typename Network<T>::FitPlan Network<T>::plan_fit(const T* x, const T* y, const T* weight,
                                                  index n, const FitOptions& options,
                                                  const GradientReduce<T>& reduce) {
    FitPlan plan{x, y, weight, n};
    plan.sharded = !options.shard_rows.empty();
    plan.global_n = n;
    if (plan.sharded)
        plan.global_n = std::accumulate(options.shard_rows.begin(), options.shard_rows.end(), index(0));
    const index global_n = plan.global_n;
    plan.batch_size = options.batch_size <= 0 || options.batch_size >= global_n ? global_n : options.batch_size;
    plan.gather = options.shuffle && plan.batch_size < global_n;
    plan.mask_offsets = std::any_of(stages_.begin(), stages_.end(),
                                    [](const Stage& stage) { return stage.kind == LayerKind::dropout; });
    // The most rows this rank runs in a step: the global batch, or, sharded, its part
    // of one: B rows of the interleave span at most (B + ranks) / N of its positions,
    // so at most n (B + ranks) / N + 1 of this rank's rows (train_batch grows the
    // buffers should a part ever be larger).
    index part = plan.batch_size;
    if (plan.sharded)
        part = std::min(part, std::min(n, index(double(n) * double(plan.batch_size + options.ranks) /
                                                double(global_n)) + 2));
    reserve_workspace(part, options.checkpoint);
    prepare_optimizer(options.optimizer);
    // A rank's part of a batch (any size up to `part`) may be cut into pieces where the
    // whole batch is not: step_pieces gives 2 from 2 · piece_min_rows rows up to a size
    // that depends on the widest layer, so some part is when the smallest of those is.
    const bool parts_in_pieces = options.ranks > 1 && part >= 2 * piece_min_rows &&
                                 step_pieces(2 * piece_min_rows) > 1;
    if (parts_in_pieces || std::max(step_pieces(plan.batch_size), step_pieces(n % plan.batch_size)) > 1)
        piece_grads_.resize(params_.size());
    if (plan.gather) {
        const char* overflow = "fit: batch_size × the layer width overflows an index";
        plan.order.resize(n);
        plan.x_batch.resize(checked_product(part, inputs(), overflow));
        plan.y_batch.resize(checked_product(part, outputs(), overflow));
        if (weight != nullptr) plan.weight_batch.resize(part);
    }
    plan.state_before.resize(state_.size());
    if (options.ranks > 1) {  // a global batch's masks, drawn whole on every rank (draw_masks)
        index widest = 0;
        for (const Stage& stage : stages_)
            if (stage.kind == LayerKind::dropout) widest = std::max(widest, stage.width);
        mask_scratch_.resize(checked_product(plan.batch_size, widest,
                                             "fit: batch_size × the layer width overflows an index"));
    }
    double total_weight = weight_sum(weight, n);
    if (plan.sharded) {  // the epoch's figures are over every rank's rows
        if (weight == nullptr)
            total_weight = double(global_n);
        else if (options.ranks > 1)
            reduce(nullptr, 0, &total_weight, 1);
    }
    plan.normalizer = loss_normalizer(options.loss, total_weight, outputs());
    plan.accuracy_units = options.loss == Loss::cross_entropy ? total_weight
                                                              : total_weight * double(outputs());
    return plan;
}

// Fisher–Yates over 0..n-1 from `rng` (the network's generator, or a sharded
// rank's own): i from n - 1 down to 1 swaps order[i] with order[below(i + 1)],
// n - 1 draws. Each epoch's order depends only on the generator, so fit(3) +
// fit(3) is fit(6); reference.Network.fit makes the same draws in the same order.
template <typename T>
void Network<T>::shuffle(std::vector<index>& order, Rng& rng) {
    std::iota(order.begin(), order.end(), index(0));
    for (index i = index(order.size()) - 1; i > 0; --i)
        std::swap(order[i], order[rng.below(std::uint64_t(i) + 1)]);
}

// Copies rows order[start .. start + rows) of X and Y (and the weights) into the batch buffers.
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
            if (plan.weight != nullptr) plan.weight_batch[r] = plan.weight[src];
        }
    });
}

// The weight of the global batch of `rows` rows at `start` of the epoch's order:
// its row count, or the sum of its rows' weights (in order, as weight_sum sums).
template <typename T>
double Network<T>::batch_weight(const FitPlan& plan, index start, index rows) const {
    if (plan.weight == nullptr) return double(rows);
    if (!plan.gather) return weight_sum(plan.weight + start, rows);
    double sum = 0;
    for (index r = 0; r < rows; ++r) sum += double(plan.weight[plan.order[start + r]]);
    return sum;
}

// Sharded with weights: the weights of the global batches of steps [first_step,
// first_step + shard_weight_steps) (fewer at the epoch's end), each rank's part's
// summed in its epoch order (as weight_sum sums a batch), then across the ranks in
// one all-reduce: one per chunk of steps instead of one per step (a call of a few
// microseconds, a tenth of a small step).
constexpr index shard_weight_steps = 4096;

template <typename T>
void Network<T>::sum_step_weights(FitPlan& plan, const FitOptions& options, index first_step,
                                  const GradientReduce<T>& reduce) {
    const index steps = ceil_div(plan.global_n, plan.batch_size);
    const index count = std::min(shard_weight_steps, steps - first_step);
    plan.step_weights.assign(count, 0.0);
    plan.weights_from = first_step;
    index at = shard_prefix(options.shard_rows, options.rank, first_step * plan.batch_size);
    for (index i = 0; i < count; ++i) {
        const index e = std::min((first_step + i + 1) * plan.batch_size, plan.global_n);
        const index end = shard_prefix(options.shard_rows, options.rank, e, at);
        double sum = 0;
        for (; at < end; ++at) sum += double(plan.weight[plan.gather ? plan.order[at] : at]);
        plan.step_weights[i] = sum;
    }
    if (options.ranks > 1) reduce(nullptr, 0, plan.step_weights.data(), count);
}

// One step on the batch that starts at row `start` of the epoch: gather,
// forward, loss, backward, (across ranks: sum the gradients,) update; adds its
// figures to `sums`. Returns what turned non-finite (the step then changed
// nothing), or nullptr.
template <typename T>
const char* Network<T>::train_batch(FitPlan& plan, const FitOptions& options, index start,
                                    EpochSums& sums, const GradientReduce<T>& reduce) {
    const index rows = std::min(plan.batch_size, plan.global_n - start);  // the global batch's
    // This rank's part of the global batch: `count` rows from row `first` of its
    // epoch order, rows [offset, offset + count) of the global batch.
    index first = 0, count = 0, offset = 0;
    if (plan.sharded) {  // its next rows of the interleave, after those of the ranks before it
        // The ranks before it matter only for the offset, which only dropout's masks read.
        for (int q = plan.mask_offsets ? 0 : options.rank; q <= options.rank; ++q) {
            const index end = shard_prefix(options.shard_rows, q, start + rows, plan.prefix[q]);
            if (q < options.rank) {
                offset += end - plan.prefix[q];
            } else {
                first = plan.prefix[q];
                count = end - first;
            }
            plan.prefix[q] = end;
        }
        if (count > ws_.capacity) {  // not expected (plan_fit's bound); grown, not overrun
            reserve_workspace(count, options.checkpoint);
            if (plan.gather) {
                plan.x_batch.resize(count * inputs());
                plan.y_batch.resize(count * outputs());
                if (plan.weight != nullptr) plan.weight_batch.resize(count);
            }
            if (step_pieces(count) > 1) piece_grads_.resize(params_.size());
        }
    } else {
        offset = rows * options.rank / options.ranks;
        count = rows * (options.rank + 1) / options.ranks - offset;
        first = start + offset;
    }
    // The step runs on all threads or on one, whichever ThreadChoice finds
    // faster here: the same bits either way.
    const int threads = step_threads_.next();
    const auto step_start = std::chrono::steady_clock::now();
    ThreadLimit limit(threads);
    const T* xb = plan.x + first * inputs();
    const T* yb = plan.y + first * outputs();
    const T* wb = plan.weight == nullptr ? nullptr : plan.weight + first;
    if (plan.gather) {
        gather_batch(plan, first, count);
        xb = plan.x_batch.data();
        yb = plan.y_batch.data();
        if (wb != nullptr) wb = plan.weight_batch.data();
    }
    // The forward pass moves batch norm's running statistics; a step that fails puts
    // them back, so that the network keeps its last finite state whole.
    if (has_batch_norm_) std::copy(state_.begin(), state_.end(), plan.state_before.begin());
    auto failed = [&](const char* what) {
        if (has_batch_norm_) std::copy(plan.state_before.begin(), plan.state_before.end(), state_.begin());
        return what;
    };
    // The whole batch's weight, whatever this rank's part: sharded with weights, the
    // sum of every rank's part's, one small all-reduce before the forward pass.
    double global_weight = double(rows);
    if (!plan.sharded) {
        global_weight = batch_weight(plan, start, rows);
    } else if (plan.weight != nullptr) {
        const index step = start / plan.batch_size;
        if (step < plan.weights_from || step >= plan.weights_from + index(plan.step_weights.size()))
            sum_step_weights(plan, options, step, reduce);
        global_weight = plan.step_weights[step - plan.weights_from];
    }
    const double normalizer = loss_normalizer(options.loss, global_weight, outputs());
    double figures[2] = {0, 0};  // the summed loss and the right predictions of this rank's rows
    try {
        if (count > 0) {
            figures[0] = forward_backward(xb, yb, wb, count, global_weight, options, &figures[1], rows, offset);
        } else {  // nothing of this rank in this batch, but the sum needs this rank
            draw_masks(rows, offset, 0);  // the generator moves as on the other ranks
            std::fill_n(grad_data(), parameter_count(), T(0));
        }
        if (options.ranks > 1) reduce(grad_data(), parameter_count(), figures, 2);
    } catch (...) {  // a failed reduce (batch norm's sums, or the gradient's): the statistics put back
        failed(nullptr);
        throw;
    }
    sums.correct += figures[1];
    const double summed = figures[0];
    const double loss = normalizer > 0 ? summed / normalizer : 0.0;  // a batch of weight 0: 0
    // Summed in double, but a loss the network's dtype cannot hold counts as
    // non-finite: its outputs are about to overflow.
    if (!(std::abs(loss) <= double(std::numeric_limits<T>::max()))) return failed("the loss");
    const StepResult step = optimizer_step(options.optimizer, options.schedule, &plan.bounds);
    step_threads_.record(threads, seconds_since(step_start));
    if (!step.gradient_finite) return failed("the gradient");
    if (step.kept > 0) return failed("an update");
    for (std::size_t l = 0; l < sums.layer_grad_norm.size(); ++l) {  // the update leaves the gradient as it was
        const Layer& layer = layers_[dense_[l]];
        sums.layer_grad_norm[l] += grad_norm(grad_data() + layer.weight_offset,
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
                           FitResult& result, const GradientReduce<T>& reduce) {
    if (plan.gather && plan.sharded) {
        // One draw of the network's generator (which thus moves alike on every rank),
        // mixed with the rank, seeds this rank's shuffle of its own rows.
        plan.shard_rng.reseed(rng_.next() ^ (0xD1B54A32D192ED03ULL * std::uint64_t(options.rank + 1)));
        shuffle(plan.order, plan.shard_rng);
    } else if (plan.gather) {
        shuffle(plan.order, rng_);
    }
    if (plan.sharded) {
        plan.prefix.assign(options.shard_rows.size(), 0);
        plan.step_weights.clear();  // this epoch's order: summed again
    }
    for (index start = 0; start < plan.global_n; start += plan.batch_size) {
        if (should_stop && should_stop()) {
            result.status = FitStatus::interrupted;
            return false;
        }
        if (const char* failed = train_batch(plan, options, start, sums, reduce)) {
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
FitResult Network<T>::fit(const T* x, const T* y, const T* weight, index n,
                          const FitOptions& options, const FitRecord& record,
                          const std::function<bool()>& should_stop,
                          const GradientReduce<T>& reduce, T* gradient_memory) {
    check_fit_options(n, options);
    require(options.ranks == 1 || bool(reduce), "fit: training across ranks needs a gradient reduce");
    FitPlan plan = plan_fit(x, y, weight, n, options, reduce);
    // For the length of the fit, however it ends: the gradient lives in gradient_memory,
    // when given (and comes back to grads_ after); batch norm's statistics are summed
    // across the ranks, when there are several.
    struct FitScope {
        Network& net;
        ~FitScope() {
            net.across_ = nullptr;
            if (net.grad_memory_ == nullptr) return;
            std::copy_n(net.grad_memory_, net.parameter_count(), net.grads_.data());
            net.grad_memory_ = nullptr;
        }
    } scope{*this};
    if (gradient_memory != nullptr) {
        std::copy(grads_.begin(), grads_.end(), gradient_memory);
        grad_memory_ = gradient_memory;
    }
    const SumAcrossRanks across = [&reduce](double* values, index count) {
        reduce(nullptr, 0, values, count);
    };
    if (options.ranks > 1) across_ = &across;
    FitResult result;
    for (index epoch = 0; epoch < options.epochs; ++epoch) {
        EpochSums sums;
        if (record.layer_grad_norm) sums.layer_grad_norm.assign(dense_.size(), 0.0);
        if (!run_epoch(plan, options, epoch, sums, should_stop, result, reduce)) return result;
        if (record.loss) record.loss[epoch] = plan.normalizer > 0 ? sums.loss / plan.normalizer : 0.0;
        if (record.grad_norm) record.grad_norm[epoch] = sums.grad_norm / double(sums.batches);
        if (record.lr) record.lr[epoch] = sums.lr;
        if (record.accuracy)
            record.accuracy[epoch] = plan.accuracy_units > 0 ? sums.correct / plan.accuracy_units : 0.0;
        for (std::size_t l = 0; l < sums.layer_grad_norm.size(); ++l)
            record.layer_grad_norm[epoch * index(dense_.size()) + index(l)] =
                sums.layer_grad_norm[l] / double(sums.batches);
        result.epochs_completed = epoch + 1;
    }
    return result;
}

template class Network<float>;
template class Network<double>;

}  // namespace fastmlp
