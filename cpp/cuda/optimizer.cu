// optimizer.cu — one update of the flat parameters on the device (twin:
// reference.optimizer_update; the CPU's Network::optimizer_step and
// optimizer_update), reading nothing from the host:
//
//   1. gradient_squares   Σ g² (g clamped to ±clip_value) over fixed chunks of
//                         4096 values, each chunk's sum into scratch;
//   2. start_update       (one block) the chunks summed in order: not finite →
//                         status = step_bad_gradient; else grad_norm, scale
//                         (clip_norm), lr = config.lr · schedule(t), bias
//                         corrections for t + 1, the figures, the rule's
//                         coefficients (math.cuh make_rule, made from the state
//                         before t moves) into scratch; t += 1;
//   3. SGD: sgd_check     counts the parameters whose new value would not be
//                         finite; finish_update then fails the step before
//                         anything changes (status = step_bad_update, t back), as
//                         the CPU's SGD changes nothing then;
//      LAMB: lamb_norms   m, v and per (piece, chunk) Σ p², Σ u², a piece being
//                         a segment or a gap between them; lamb_trust (one
//                         block) sums each piece's chunks in order into
//                         lr · trust (a gap's trust 1, as on the CPU); lamb_apply;
//   4. apply_update       (SGD, Adam, AdamW) the rule element by element; a
//                         parameter whose new value is not finite keeps its value
//                         and is counted in state->kept;
//   5. finish_update      kept > 0: status = step_bad_update; step += 1.
//
// Every kernel reads state->status first and returns when it is not step_ok
// (only the one-block kernels write it, so all blocks of a kernel agree); the
// final step += 1 happens whatever. Every sum runs in a fixed order: the same
// bits run after run. Segments (LAMB) are in order, disjoint, inside [0, n).
#include <cstring>

#include "device.cuh"
#include "math.cuh"
#include "reduce.cuh"

namespace fastmlp::cuda {
namespace {

constexpr int update_threads = 256;
constexpr index chunk = 4096;  // values per chunk of the sums
constexpr index rule_slots = 32;  // doubles of scratch holding the Rule<T>

static_assert(sizeof(Rule<double>) <= rule_slots * sizeof(double), "the rule fits its slots");

// LAMB's pieces: the segments and the gaps around them, in order (gap before
// segment 0, segment 0, gap before segment 1, ..., segment S − 1, the gap after
// it): 2S + 1 of them, some empty. A segment has its own trust ratio; a gap's is 1,
// as the CPU updates parameters outside every segment.
struct Piece {
    index offset = 0, size = 0;
    bool own_trust = false;
};

__device__ Piece piece_of(const Segment* segments, index n_segments, index n, index v) {
    Piece piece;
    const index s = v / 2;
    if (v % 2 == 1) {
        piece.offset = segments[s].offset;
        piece.size = segments[s].size;
        piece.own_trust = true;
    } else {
        piece.offset = s == 0 ? 0 : segments[s - 1].offset + segments[s - 1].size;
        const index end = s < n_segments ? segments[s].offset : n;
        piece.size = end - piece.offset;
    }
    return piece;
}

// Scratch layout (doubles), for nc = ⌈n / chunk⌉ and S segments (V = 2S + 1 pieces):
//   [0, 32)                       the step's Rule<T>
//   gradient partials             nc
//   LAMB Σ p² partials            nc + V (per (piece, chunk): V bounds the extra chunks)
//   LAMB Σ u² partials            nc + V
//   LAMB lr · trust               V
struct Layout {
    index chunks, pieces, pairs, gradient, p_squares, u_squares, steps, total;
    Layout(index n, index segments) {
        chunks = (n + chunk - 1) / chunk;
        pieces = 2 * segments + 1;
        pairs = chunks + pieces;
        gradient = rule_slots;
        p_squares = gradient + chunks;
        u_squares = p_squares + pairs;
        steps = u_squares + pairs;
        total = steps + pieces;
    }
};

// Σ over the block's threads of an integer count (exact in any order).
__device__ void add_kept(unsigned* block_count, StepState* state) {
    __syncthreads();
    if (threadIdx.x == 0 && *block_count > 0) atomicAdd(&state->kept, (unsigned long long)(*block_count));
}

template <typename T>
__device__ Rule<T> rule_from(const double* scratch) {
    Rule<T> rule;
    memcpy(&rule, scratch, sizeof rule);
    return rule;
}

// 1. Block b: Σ g² over chunk b.
template <typename T>
__global__ void __launch_bounds__(update_threads)
    gradient_squares_kernel(const T* grads, index n, double clip_value, double* partials,
                            const StepState* state) {
    __shared__ double buffer[update_threads];
    if (state->status != step_ok) return;
    const bool clip_on = clip_value > 0;
    const T clip = T(clip_value);
    const index begin = index(blockIdx.x) * chunk;
    const index end = begin + chunk < n ? begin + chunk : n;
    double mine = 0;
    for (index i = begin + threadIdx.x; i < end; i += update_threads) {
        T g = grads[i];
        if (clip_on) g = g < -clip ? -clip : (g > clip ? clip : g);
        mine += double(g) * double(g);
    }
    const double total = block_sum<update_threads>(buffer, mine);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// 2. One block.
template <typename T>
__global__ void __launch_bounds__(update_threads)
    start_update_kernel(OptimizerConfig config, Schedule schedule, const double* partials,
                        index chunks, double* scratch, StepState* state, StepFigures* figures) {
    __shared__ double buffer[update_threads];
    if (state->status != step_ok) return;
    double mine = 0;
    // Each thread its chunks in order, then the tree: fixed for every n.
    for (index c = threadIdx.x; c < chunks; c += update_threads) mine += partials[c];
    const double squares = block_sum<update_threads>(buffer, mine);
    if (threadIdx.x != 0) return;
    const double norm = sqrt(squares);
    if (!isfinite(norm)) {
        state->status = step_bad_gradient;
        state->failed_step = state->step;
        return;
    }
    const std::int64_t t = state->t;
    state->grad_norm = norm;
    state->scale = config.clip_norm > 0 ? fmin(1.0, config.clip_norm / (norm + 1e-6)) : 1.0;
    state->lr = config.lr * schedule_factor(schedule, t);
    state->bias1 = 1.0 - pow(config.beta1, double(t + 1));
    state->bias2 = 1.0 - pow(config.beta2, double(t + 1));
    state->kept = 0;
    if (figures != nullptr) {
        figures[state->step].grad_norm = norm;
        figures[state->step].lr = state->lr;
    }
    const Rule<T> rule = make_rule<T>(config, *state);  // before t moves: SGD's `first`
    memcpy(scratch, &rule, sizeof rule);
    state->t = t + 1;
}

// 3. and 4. SGD, Adam, AdamW: the update, element by element. Apply false is SGD's dry run
// (3.): nothing written, only the new values that would not be finite counted; Apply true (4.)
// writes the state and every finite new value, and counts the others.
template <typename T, bool Apply>
__global__ void __launch_bounds__(update_threads)
    update_kernel(T* params, const T* grads, T* s1, T* s2, index n, const double* scratch,
                  StepState* state) {
    __shared__ unsigned block_count;
    if (state->status != step_ok) return;
    if (threadIdx.x == 0) block_count = 0;
    __syncthreads();
    const Rule<T> rule = rule_from<T>(scratch);
    unsigned bad = 0;
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += index(gridDim.x) * blockDim.x) {
        T m = s1 != nullptr ? s1[i] : T(0);
        T v = s2 != nullptr ? s2[i] : T(0);
        const T updated = rule_update(rule, params[i], grads[i], m, v);
        if (!Apply) {
            bad += !finite(updated);
            continue;
        }
        if (s1 != nullptr) s1[i] = m;
        if (s2 != nullptr) s2[i] = v;
        if (finite(updated))
            params[i] = updated;
        else
            ++bad;
    }
    if (bad > 0) atomicAdd(&block_count, bad);
    add_kept(&block_count, state);
}

// LAMB's blocks: block b is chunk `local` of piece `v` (false: no such pair, the
// block has nothing to do).
__device__ bool pair_of(const Segment* segments, index n_segments, index n, index b, index& v,
                        index& local, Piece& piece) {
    index first = 0;
    for (v = 0; v < 2 * n_segments + 1; ++v) {
        piece = piece_of(segments, n_segments, n, v);
        const index count = (piece.size + chunk - 1) / chunk;
        if (b < first + count) {
            local = b - first;
            return true;
        }
        first += count;
    }
    return false;
}

// LAMB 1: m, v updated; Σ p² (p before the update) and Σ u² of block b's chunk.
template <typename T>
__global__ void __launch_bounds__(update_threads)
    lamb_norms_kernel(const T* params, const T* grads, T* s1, T* s2, const Segment* segments,
                      index n_segments, index n, double* scratch, Layout layout, StepState* state) {
    __shared__ double buffer[update_threads];
    if (state->status != step_ok) return;
    index v, local;
    Piece piece;
    if (!pair_of(segments, n_segments, n, blockIdx.x, v, local, piece)) return;  // the whole block
    const Rule<T> rule = rule_from<T>(scratch);
    const index begin = piece.offset + local * chunk;
    const index piece_end = piece.offset + piece.size;
    const index end = begin + chunk < piece_end ? begin + chunk : piece_end;
    double p_sq = 0, u_sq = 0;
    for (index i = begin + threadIdx.x; i < end; i += update_threads) {
        T m = s1[i], second = s2[i];
        const T p = params[i];
        const T u = lamb_direction(rule, p, grads[i], m, second);
        s1[i] = m;
        s2[i] = second;
        p_sq += double(p) * double(p);
        u_sq += double(u) * double(u);
    }
    p_sq = block_sum<update_threads>(buffer, p_sq);
    u_sq = block_sum<update_threads>(buffer, u_sq);
    if (threadIdx.x == 0) {
        scratch[layout.p_squares + blockIdx.x] = p_sq;
        scratch[layout.u_squares + blockIdx.x] = u_sq;
    }
}

// LAMB 2 (one block): each piece's chunks in order → lr · trust (1 for a gap).
__global__ void __launch_bounds__(update_threads)
    lamb_trust_kernel(const Segment* segments, index n_segments, index n, double* scratch,
                      Layout layout, StepState* state) {
    __shared__ double buffer[update_threads];
    if (state->status != step_ok) return;
    index first = 0;
    for (index v = 0; v < layout.pieces; ++v) {
        const Piece piece = piece_of(segments, n_segments, n, v);
        const index count = (piece.size + chunk - 1) / chunk;
        double p_mine = 0, u_mine = 0;
        for (index c = threadIdx.x; c < count; c += update_threads) {
            p_mine += scratch[layout.p_squares + first + c];
            u_mine += scratch[layout.u_squares + first + c];
        }
        const double p_norm = sqrt(block_sum<update_threads>(buffer, p_mine));
        const double u_norm = sqrt(block_sum<update_threads>(buffer, u_mine));
        if (threadIdx.x == 0) {
            const double trust = piece.own_trust && p_norm > 0 && u_norm > 0 ? p_norm / u_norm : 1.0;
            scratch[layout.steps + v] = state->lr * trust;
        }
        first += count;
    }
}

// LAMB 3: p −= (lr · trust) · u, u recomputed from the updated m and v.
template <typename T>
__global__ void __launch_bounds__(update_threads)
    lamb_apply_kernel(T* params, const T* s1, const T* s2, const Segment* segments,
                      index n_segments, index n, const double* scratch, Layout layout,
                      StepState* state) {
    __shared__ unsigned block_count;
    if (state->status != step_ok) return;
    index v, local;
    Piece piece;
    if (!pair_of(segments, n_segments, n, blockIdx.x, v, local, piece)) return;  // the whole block
    if (threadIdx.x == 0) block_count = 0;
    __syncthreads();
    const Rule<T> rule = rule_from<T>(scratch);
    const T step = T(scratch[layout.steps + v]);
    const index begin = piece.offset + local * chunk;
    const index piece_end = piece.offset + piece.size;
    const index end = begin + chunk < piece_end ? begin + chunk : piece_end;
    unsigned bad = 0;
    for (index i = begin + threadIdx.x; i < end; i += update_threads) {
        const T p = params[i];
        T u = (s1[i] * rule.inv_bc1) / (sqrt(s2[i] * rule.inv_bc2) + rule.eps);
        if (rule.wd != T(0)) u = u + rule.wd * p;
        const T updated = p - step * u;
        if (finite(updated))
            params[i] = updated;
        else
            ++bad;
    }
    if (bad > 0) atomicAdd(&block_count, bad);
    add_kept(&block_count, state);
}

// 5. One thread: kept > 0 fails the step (undo_t: SGD, whose failed step counts
// no update); advance: step += 1, whatever happened.
__global__ void finish_update_kernel(StepState* state, bool undo_t, bool advance) {
    if (state->status == step_ok && state->kept > 0) {
        state->status = step_bad_update;
        state->failed_step = state->step;
        if (undo_t) state->t -= 1;
    }
    if (advance) state->step += 1;
}

}  // namespace

index optimizer_scratch(index n, index segments) {
    require(n >= 0 && segments >= 0, "optimizer_scratch: sizes must be non-negative");
    return Layout(n, segments).total;
}

template <typename T>
void optimizer_update(cudaStream_t stream, const OptimizerConfig& config, const Schedule& schedule,
                      T* params, const T* grads, T* s1, T* s2, index n, const Segment* segments,
                      index n_segments, double* scratch, StepState* state, StepFigures* figures) {
    require(n >= 0 && n_segments >= 0, "optimizer_update: sizes must be non-negative");
    require(config.state_buffers() < 1 || s1 != nullptr, "optimizer_update: missing state");
    require(config.state_buffers() < 2 || s2 != nullptr, "optimizer_update: missing state");
    require(segments != nullptr || n_segments == 0, "optimizer_update: segments missing");
    const Layout layout(n, n_segments);
    const unsigned elementwise_blocks = blocks_for(n, update_threads);
    if (layout.chunks > 0) {
        gradient_squares_kernel<T><<<unsigned(layout.chunks), update_threads, 0, stream>>>(
            grads, n, config.clip_value, scratch + layout.gradient, state);
        check_launch("optimizer_update (gradient squares)");
    }
    start_update_kernel<T><<<1, update_threads, 0, stream>>>(
        config, schedule, scratch + layout.gradient, layout.chunks, scratch, state, figures);
    check_launch("optimizer_update (start)");
    // Plain SGD keeps no state: s1, s2 unused (they may be null).
    T* first = config.state_buffers() >= 1 ? s1 : nullptr;
    T* second = config.state_buffers() >= 2 ? s2 : nullptr;
    switch (config.kind) {
        case OptimizerKind::sgd:
            if (n > 0) {
                update_kernel<T, false><<<elementwise_blocks, update_threads, 0, stream>>>(
                    params, grads, first, second, n, scratch, state);
                check_launch("optimizer_update (sgd check)");
            }
            finish_update_kernel<<<1, 1, 0, stream>>>(state, true, false);
            check_launch("optimizer_update (sgd decision)");
            if (n > 0) {
                update_kernel<T, true><<<elementwise_blocks, update_threads, 0, stream>>>(
                    params, grads, first, second, n, scratch, state);
                check_launch("optimizer_update (sgd)");
            }
            break;
        case OptimizerKind::adam:
        case OptimizerKind::adamw:
            if (n > 0) {
                update_kernel<T, true><<<elementwise_blocks, update_threads, 0, stream>>>(
                    params, grads, first, second, n, scratch, state);
                check_launch("optimizer_update (adam)");
            }
            break;
        case OptimizerKind::lamb:
            if (n > 0) {
                lamb_norms_kernel<T><<<unsigned(layout.pairs), update_threads, 0, stream>>>(
                    params, grads, s1, s2, segments, n_segments, n, scratch, layout, state);
                check_launch("optimizer_update (lamb norms)");
                lamb_trust_kernel<<<1, update_threads, 0, stream>>>(segments, n_segments, n, scratch,
                                                                    layout, state);
                check_launch("optimizer_update (lamb trust)");
                lamb_apply_kernel<T><<<unsigned(layout.pairs), update_threads, 0, stream>>>(
                    params, s1, s2, segments, n_segments, n, scratch, layout, state);
                check_launch("optimizer_update (lamb)");
            }
            break;
    }
    finish_update_kernel<<<1, 1, 0, stream>>>(state, false, true);
    check_launch("optimizer_update (finish)");
}

#define FASTMLP_INSTANTIATE(T)                                                                   \
    template void optimizer_update<T>(cudaStream_t, const OptimizerConfig&, const Schedule&, T*, \
                                      const T*, T*, T*, index, const Segment*, index, double*,   \
                                      StepState*, StepFigures*);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp::cuda
