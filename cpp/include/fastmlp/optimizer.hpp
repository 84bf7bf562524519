// fastmlp/optimizer.hpp — parameter updates over the flat buffers.
//
// All parameters of a network live in one buffer and their gradients in a
// second with the same layout, so each optimizer is ONE fused loop over the
// parameters, the gradients and its state buffers (same layout again). t is
// the 1-based update count; g = grad_scale · clamp(grad, ±clip_value) (clamp
// only when clip_value > 0) stands for the gradient in every rule:
//
//   sgd    g += wd·p;  if momentum: v = (t == 1 ? g : μ v + (1 − dampening) g),
//          g = nesterov ? g + μ v : v;  p −= lr · g              (torch.optim.SGD)
//   adam   g += wd·p;  m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²;
//          p −= lr · m̂ / (√v̂ + ε),  m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t)   (torch.optim.Adam)
//   adamw  p −= lr·wd·p first (decoupled decay), then adam without the L2 term  (torch.optim.AdamW)
//   lamb   m, v, m̂, v̂ as adam;  u = m̂ / (√v̂ + ε) + wd·p;  per segment (one
//          parameter tensor: a layer's weights, or its biases)
//          p −= lr · (‖p‖ / ‖u‖) · u, the trust ratio taken as 1 when either
//          norm is 0   (You et al. 2019, "Large Batch Optimization for Deep
//          Learning", Algorithm 2)
//
// A parameter whose new value would not be finite keeps its old value, and the
// update reports how many did so (the engine then stops the fit). For sgd,
// whose step lr · g is unbounded, a pass before the update checks every new
// value, and when one is not finite nothing is changed (state included); that
// pass reads the gradient alone when bounds on the parameters prove the step
// safe (SgdBounds, kept by fit from one update to the next).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fastmlp/common.hpp"
#include "fastmlp/names.hpp"

namespace fastmlp {

enum class OptimizerKind { sgd, adam, adamw, lamb };

inline constexpr NameTable<OptimizerKind, 4> optimizer_names{
    "optimizer",
    {{{OptimizerKind::sgd, "sgd"},
      {OptimizerKind::adam, "adam"},
      {OptimizerKind::adamw, "adamw"},
      {OptimizerKind::lamb, "lamb"}}}};
static_assert(optimizer_names.in_enum_order());

inline OptimizerKind optimizer_from_name(const std::string& name) {
    return optimizer_names.from_name(name);
}
inline const char* optimizer_name(OptimizerKind kind) { return optimizer_names.name(kind); }

struct OptimizerConfig {
    OptimizerKind kind = OptimizerKind::sgd;
    double lr = 0.01;
    double momentum = 0, dampening = 0, weight_decay = 0;
    bool nesterov = false;
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double clip_norm = 0;   // > 0: scale the gradient to at most this global L2 norm
    double clip_value = 0;  // > 0: clamp every gradient value to ±clip_value first

    // State buffers the rule keeps: 0 (plain sgd), 1 (sgd with momentum) or 2.
    int state_buffers() const;
    void validate() const;  // throws std::invalid_argument naming the bad value
};

// The learning-rate factor at update t (0-based: t updates were made before).
// Warm-up (t < W): (t + 1) / W; then, with s = t − W:
//   constant 1 · step γ^⌊s / step_size⌋ · exponential γ^s ·
//   cosine m + (1 − m) (1 + cos(π min(s, T) / T)) / 2.
struct Schedule {
    enum class Kind { constant, step, exponential, cosine };
    Kind kind = Kind::constant;
    index warmup_steps = 0;
    index step_size = 1;
    double gamma = 1.0;
    index total_steps = 1;
    double min_factor = 0.0;

    double factor(index t) const;
    void validate() const;
};

inline constexpr NameTable<Schedule::Kind, 4> schedule_names{
    "schedule",
    {{{Schedule::Kind::constant, "constant"},
      {Schedule::Kind::step, "step"},
      {Schedule::Kind::exponential, "exponential"},
      {Schedule::Kind::cosine, "cosine"}}}};
static_assert(schedule_names.in_enum_order());

inline Schedule::Kind schedule_from_name(const std::string& name) {
    return schedule_names.from_name(name);
}
inline const char* schedule_name(Schedule::Kind kind) { return schedule_names.name(kind); }

// A parameter tensor inside the flat buffer, for LAMB's per-tensor trust ratio.
struct Segment {
    index offset = 0, size = 0;
};

// Global L2 norm of grads (n) after clamping to ±clip_value when clip_value > 0.
// Summed in double over fixed pieces, so the value does not depend on the threads.
template <typename T>
double grad_norm(const T* grads, index n, double clip_value);

// Elements [0, n) of each of the `count` arrays become their sum across the
// arrays, added in array order ((a0 + a1) + a2) + ...: data-parallel training's
// reduce of the gradients that the ranks of one machine keep in shared memory
// (fastmlp.distributed), each rank summing its own part of the range. The
// arrays do not overlap; each is written once, element by element.
template <typename T>
void sum_into_each(T* const* arrays, int count, index n);

// What an SGD update knows of the parameters and velocity it left: their
// largest magnitudes (negative: unknown). optimizer_update fills it in; handed
// the same object at the next update (the parameters and state unchanged in
// between), SGD checks the gradient alone when these bounds prove every new
// value finite: one pass over the gradient instead of over the gradient, the
// parameters and the velocity.
struct SgdBounds {
    double params = -1, velocity = -1;
};

// One update of `config.kind` at step t (1-based) with learning rate lr and
// gradient scale grad_scale. s1 / s2: the state buffers (velocity; m and v),
// each (n) or null when the rule keeps none. Returns how many parameters kept
// their old value because the new one was not finite. sgd only: when grad_sq
// is not null, its checking pass also stores there Σ g² of the gradient clamped
// to ±clip_value (the square of grad_norm), and nothing is changed when that
// sum is not finite — one pass fewer when no norm clipping needs it first.
template <typename T>
index optimizer_update(const OptimizerConfig& config, T* params, const T* grads, T* s1, T* s2,
                       index n, const std::vector<Segment>& segments, std::int64_t t, double lr,
                       double grad_scale, double* grad_sq = nullptr,
                       SgdBounds* bounds = nullptr);

}  // namespace fastmlp
