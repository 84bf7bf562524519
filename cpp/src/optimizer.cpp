// optimizer.cpp — the update rules over the flat buffers; see optimizer.hpp.
//
// Each rule is one loop over [begin, end) of the buffers, run on fixed pieces
// by the pool's threads (elementwise, so the result does not depend on who runs
// a piece). Norms are summed in double within fixed pieces, then the pieces in
// order: deterministic too.
#include "fastmlp/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "fastmlp/threading.hpp"

namespace fastmlp {

int OptimizerConfig::state_buffers() const {
    if (kind == OptimizerKind::sgd) return momentum != 0 ? 1 : 0;
    return 2;
}

namespace {
bool finite_at_least(double x, double low) { return std::isfinite(x) && x >= low; }
}  // namespace

void OptimizerConfig::validate() const {
    require(std::isfinite(lr) && lr > 0, "optimizer: lr must be positive and finite");
    require(finite_at_least(momentum, 0), "optimizer: momentum must be >= 0");
    require(finite_at_least(dampening, 0) && dampening <= 1,
            "optimizer: dampening must be in [0, 1]");
    require(finite_at_least(weight_decay, 0), "optimizer: weight_decay must be >= 0");
    require(!nesterov || (momentum > 0 && dampening == 0),
            "optimizer: nesterov needs momentum > 0 and dampening 0");
    require(finite_at_least(beta1, 0) && beta1 < 1, "optimizer: beta1 must be in [0, 1)");
    require(finite_at_least(beta2, 0) && beta2 < 1, "optimizer: beta2 must be in [0, 1)");
    require(std::isfinite(eps) && eps > 0, "optimizer: eps must be positive");
    require(finite_at_least(clip_norm, 0), "optimizer: clip_norm must be positive");
    require(finite_at_least(clip_value, 0), "optimizer: clip_value must be positive");
}

double Schedule::factor(index t) const {
    if (t < warmup_steps) return double(t + 1) / double(warmup_steps);
    const index s = t - warmup_steps;
    switch (kind) {
        case Kind::constant: return 1.0;
        case Kind::step: return std::pow(gamma, double(s / step_size));
        case Kind::exponential: return std::pow(gamma, double(s));
        case Kind::cosine: {
            const double progress = double(std::min(s, total_steps)) / double(total_steps);
            return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + std::cos(M_PI * progress));
        }
    }
    return 1.0;
}

void Schedule::validate() const {
    require(warmup_steps >= 0, "schedule: warmup_steps must be >= 0");
    require(step_size >= 1, "schedule: step_size must be >= 1");
    require(std::isfinite(gamma) && gamma > 0, "schedule: gamma must be positive");
    require(total_steps >= 1, "schedule: total_steps must be >= 1");
    require(std::isfinite(min_factor) && min_factor >= 0 && min_factor <= 1,
            "schedule: min_factor must be in [0, 1]");
}

namespace {

constexpr index max_pieces = 256;

// Fixed pieces of a range of n: at least 16 Ki elements each, at most 256 of them.
index piece_size(index n) { return std::max<index>(1 << 14, ceil_div(n, max_pieces)); }

int threads_for_elements(index n) { return threads_for(double(n), double(1 << 17)); }

template <typename T>
struct Coefficients {
    T lr, scale, clip, wd, mu, one_minus_dampening, b1, one_minus_b1, b2, one_minus_b2, inv_bc1,
        inv_bc2, eps, decay;  // decay = 1 − lr·wd (adamw)
    bool clip_on, nesterov, first;
};

template <typename T>
inline T gradient(const Coefficients<T>& c, T g) {
    if (c.clip_on) g = std::min(std::max(g, -c.clip), c.clip);
    return c.scale * g;
}

// Stores `updated` unless it is not finite; returns 1 when it kept the old value.
template <typename T>
inline index store_finite(T& p, T updated) {
    const bool ok = std::isfinite(updated);
    p = ok ? updated : p;
    return !ok;
}

// 64-byte vectors of T (GCC vector extensions): one zmm register in the
// AVX-512 clone, two ymm or four xmm in the others. Loads are unaligned. The
// helpers are always inlined into the clones, so no vector ever crosses a call
// (which is what -Wpsabi warns about).
#define FASTMLP_INLINE inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
template <typename T>
struct Wide {
    typedef T V __attribute__((vector_size(64)));
    using Int = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef Int IV __attribute__((vector_size(64)));
    static constexpr int width = int(64 / sizeof(T));
    static FASTMLP_INLINE V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static FASTMLP_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
    static FASTMLP_INLINE V splat(T x) { return V{} + x; }
};

// SGD's direction d (before lr) from the clamped gradient `raw`, and the
// velocity it stores (with momentum). Written once for scalars and vectors.
template <typename T, typename X>
FASTMLP_INLINE X sgd_direction(const Coefficients<T>& c, X raw, X weight, X old_velocity, bool momentum,
                       X& velocity) {
    X d = c.scale * raw + c.wd * weight;
    if (momentum) {
        velocity = c.first ? d : c.mu * old_velocity + c.one_minus_dampening * d;
        d = c.nesterov ? d + c.mu * velocity : velocity;
    }
    return d;
}

// The passes of SGD over [begin, end). A value y is finite exactly when y − y == 0.
//   check     writes nothing; returns how many parameters the step would make
//             non-finite, and stores Σ g² of the clamped, unscaled gradient in
//             sum_sq (lanes of T within the piece, then double).
//   gradient  reads the gradient alone: the same Σ g², how many of its values
//             are not finite, and their largest magnitude in maxima[0].
//   apply     the step itself, once a check found every new value finite; the
//             largest magnitudes of the new parameters and velocities go to
//             maxima[0] and maxima[1].
enum class SgdPass { check, gradient, apply };

template <SgdPass Pass, typename T>
FASTMLP_CLONES index sgd_pass(const Coefficients<T>& c, T* __restrict p, const T* __restrict g,
                              T* __restrict v, index begin, index end, double& sum_sq,
                              T* maxima) {
    using W = Wide<T>;
    using V = typename W::V;
    using IV = typename W::IV;
    const bool momentum = v != nullptr;
    const V lo = W::splat(-c.clip), hi = W::splat(c.clip);
    auto magnitude = [](V x) { return x < 0 ? -x : x; };
    auto larger = [](V x, V y) { return x > y ? x : y; };
    V acc = {}, top0 = {}, top1 = {};
    IV flags = {};
    index i = begin;
    for (; i + W::width <= end; i += W::width) {
        V raw = W::load(g + i);
        if (c.clip_on) {
            raw = raw < lo ? lo : raw;
            raw = raw > hi ? hi : raw;
        }
        if constexpr (Pass == SgdPass::gradient) {
            acc += raw * raw;
            flags += raw - raw != 0;  // −1 in each non-finite lane
            top0 = larger(top0, magnitude(raw));
            continue;
        }
        const V weight = W::load(p + i);
        V velocity = {};
        const V d =
            sgd_direction(c, raw, weight, momentum ? W::load(v + i) : V{}, momentum, velocity);
        const V updated = weight - c.lr * d;
        if constexpr (Pass == SgdPass::apply) {
            if (momentum) W::store(v + i, velocity);
            W::store(p + i, updated);
            top0 = larger(top0, magnitude(updated));
            top1 = larger(top1, magnitude(velocity));
        } else {
            acc += raw * raw;
            flags += updated - updated != 0;  // −1 in each non-finite lane
        }
    }
    index bad = 0;
    double total = 0;
    T max0 = 0, max1 = 0;
    for (int l = 0; l < W::width; ++l) {
        bad -= index(flags[l]);
        total += double(acc[l]);
        max0 = std::max(max0, top0[l]);
        max1 = std::max(max1, top1[l]);
    }
    for (; i < end; ++i) {
        T raw = g[i];
        if (c.clip_on) raw = std::min(std::max(raw, -c.clip), c.clip);
        if constexpr (Pass == SgdPass::gradient) {
            total += double(raw) * double(raw);
            bad += !std::isfinite(raw);
            max0 = std::max(max0, std::abs(raw));
            continue;
        }
        T velocity = 0;
        const T d = sgd_direction(c, raw, p[i], momentum ? v[i] : T(0), momentum, velocity);
        const T updated = p[i] - c.lr * d;
        if constexpr (Pass == SgdPass::apply) {
            if (momentum) v[i] = velocity;
            p[i] = updated;
            max0 = std::max(max0, std::abs(updated));
            max1 = std::max(max1, std::abs(velocity));
        } else {
            total += double(raw) * double(raw);
            bad += !std::isfinite(updated);
        }
    }
    sum_sq = total;
    maxima[0] = max0;
    maxima[1] = max1;
    return bad;
}

// m, v updated; returns u = m̂ / (√v̂ + ε) (adam's step direction, before lr).
template <typename T>
inline T adam_direction(const Coefficients<T>& c, T d, T& m, T& v) {
    m = c.b1 * m + c.one_minus_b1 * d;
    v = c.b2 * v + c.one_minus_b2 * d * d;
    return (m * c.inv_bc1) / (std::sqrt(v * c.inv_bc2) + c.eps);
}

template <typename T>
FASTMLP_CLONES index adam_range(const Coefficients<T>& coefficients, bool decoupled, T* __restrict p,
                                const T* __restrict g, T* __restrict m, T* __restrict v,
                                index begin, index end) {
    // A local copy: the compiler then knows the coefficients do not change as
    // the loop stores, hoists the branches on them and vectorizes the loop.
    const Coefficients<T> c = coefficients;
    index bad = 0;
    for (index i = begin; i < end; ++i) {
        T d = gradient(c, g[i]);
        T weight = p[i];
        if (decoupled)
            weight = weight * c.decay;
        else
            d += c.wd * weight;
        const T u = adam_direction(c, d, m[i], v[i]);
        bad += store_finite(p[i], weight - c.lr * u);
    }
    return bad;
}

// LAMB, first pass: m and v updated; Σ p² and Σ u² (p before the update) returned.
template <typename T>
FASTMLP_CLONES void lamb_norms_range(const Coefficients<T>& coefficients, const T* __restrict p,
                                     const T* __restrict g, T* __restrict m, T* __restrict v,
                                     index begin, index end, double& p_sq, double& u_sq) {
    // A local copy: the compiler then knows the coefficients do not change as
    // the loop stores, hoists the branches on them and vectorizes the loop.
    const Coefficients<T> c = coefficients;
    double ps = 0, us = 0;
    for (index i = begin; i < end; ++i) {
        const T u = adam_direction(c, gradient(c, g[i]), m[i], v[i]) + c.wd * p[i];
        ps += double(p[i]) * double(p[i]);
        us += double(u) * double(u);
    }
    p_sq = ps;
    u_sq = us;
}

// LAMB, second pass: p −= (lr · trust) · u, u recomputed from the updated m and v.
template <typename T>
FASTMLP_CLONES index lamb_apply_range(const Coefficients<T>& coefficients, T step, T* __restrict p,
                                      const T* __restrict m, const T* __restrict v, index begin,
                                      index end) {
    // A local copy: the compiler then knows the coefficients do not change as
    // the loop stores, hoists the branches on them and vectorizes the loop.
    const Coefficients<T> c = coefficients;
    index bad = 0;
    for (index i = begin; i < end; ++i) {
        const T u = (m[i] * c.inv_bc1) / (std::sqrt(v[i] * c.inv_bc2) + c.eps) + c.wd * p[i];
        bad += store_finite(p[i], p[i] - step * u);
    }
    return bad;
}

// Σ x² of g[begin:end] clamped to ±clip (when clip_on; clip may be 0, from a
// clip_value below T's smallest value), in double: sixteen
// values at a time, converted to two vectors of eight doubles; lanes summed in
// a fixed order at the end.
template <typename T>
FASTMLP_CLONES double sum_squares(const T* __restrict g, index begin, index end, bool clip_on,
                                  T clip) {
    typedef double D __attribute__((vector_size(64)));
    typedef T H __attribute__((vector_size(8 * sizeof(T))));
    const H lo = H{} - clip, hi = H{} + clip;
    D acc0 = {}, acc1 = {};
    index i = begin;
    for (; i + 16 <= end; i += 16) {
        H a, b;
        std::memcpy(&a, g + i, sizeof a);
        std::memcpy(&b, g + i + 8, sizeof b);
        if (clip_on) {
            a = a < lo ? lo : a;
            a = a > hi ? hi : a;
            b = b < lo ? lo : b;
            b = b > hi ? hi : b;
        }
        const D da = __builtin_convertvector(a, D), db = __builtin_convertvector(b, D);
        acc0 += da * da;
        acc1 += db * db;
    }
    const D acc = acc0 + acc1;
    double total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < end; ++i) {
        T x = g[i];
        if (clip_on) x = std::min(std::max(x, -clip), clip);
        total += double(x) * double(x);
    }
    return total;
}

// LAMB's segments: in order, disjoint, inside [0, n). offset + size is formed
// only once it is known to fit (size <= n - offset), so no sum can wrap around.
void check_segments(const std::vector<Segment>& segments, index n) {
    index covered = 0;
    for (const Segment& segment : segments) {
        require(segment.offset >= covered && segment.size >= 0 && segment.offset <= n &&
                    segment.size <= n - segment.offset,
                "optimizer_update: segments must be in order, disjoint and inside the buffer of " +
                    std::to_string(n) + " parameters, got (offset " +
                    std::to_string(segment.offset) + ", size " + std::to_string(segment.size) +
                    ")");
        covered = segment.offset + segment.size;
    }
}

// Runs body(k, begin, end) for the fixed pieces k of [offset, offset + n) (at
// most max_pieces, their bounds independent of the threads) in parallel;
// returns how many pieces there were, for the caller to combine what each
// piece left in its slot k, in order.
template <typename Body>
index for_pieces(index offset, index n, Body&& body) {
    if (n <= 0) return 0;
    const index piece = piece_size(n);
    const index pieces = ceil_div(n, piece);
    parallel_for(threads_for_elements(n), pieces, [&](index k) {
        const index begin = offset + k * piece;
        body(k, begin, std::min(offset + n, begin + piece));
    });
    return pieces;
}

// Runs body(begin, end) -> index over the fixed pieces of [offset, offset + n)
// in parallel and returns the sum of what the pieces returned.
template <typename Body>
index over_pieces(index offset, index n, Body&& body) {
    index counts[max_pieces] = {};
    const index pieces =
        for_pieces(offset, n, [&](index k, index b, index e) { counts[k] = body(b, e); });
    index total = 0;
    for (index k = 0; k < pieces; ++k) total += counts[k];
    return total;
}

// Whether every value an SGD step computes stays well inside T's range (a
// quarter of its largest value, room for the rounding of a few operations),
// given the largest magnitudes of the clamped gradient, the parameters and the
// velocity: sgd_direction's terms, bounded one by one.
template <typename T>
bool sgd_step_bounded(const Coefficients<T>& c, double gradient, double params, double velocity,
                      bool momentum) {
    const double limit = 0.25 * double(std::numeric_limits<T>::max());
    double d = std::abs(double(c.scale)) * gradient + std::abs(double(c.wd)) * params;
    double stored = 0;
    if (momentum) {
        stored = c.first ? d
                         : std::abs(double(c.mu)) * velocity +
                               std::abs(double(c.one_minus_dampening)) * d;
        d = c.nesterov ? d + std::abs(double(c.mu)) * stored : stored;
    }
    const double step = params + std::abs(double(c.lr)) * d;
    return std::isfinite(step) && step <= limit && stored <= limit && d <= limit;
}

}  // namespace

template <typename T>
double grad_norm(const T* grads, index n, double clip_value) {
    require(n >= 0, "grad_norm: n must be non-negative");
    double sums[max_pieces] = {};
    const bool clip_on = clip_value > 0;  // decided in double: T(clip_value) may round to 0
    const T clip = T(clip_value);
    const index pieces = for_pieces(0, n, [&](index k, index b, index e) {
        sums[k] = sum_squares(grads, b, e, clip_on, clip);
    });
    double total = 0;
    for (index c = 0; c < pieces; ++c) total += sums[c];
    return std::sqrt(total);
}

template <typename T>
index optimizer_update(const OptimizerConfig& config, T* params, const T* grads, T* s1, T* s2,
                       index n, const std::vector<Segment>& segments, std::int64_t t, double lr,
                       double grad_scale, double* grad_sq, SgdBounds* bounds) {
    require(n >= 0, "optimizer_update: n must be non-negative");
    require(t >= 1, "optimizer_update: the step count t starts at 1");
    // lr may reach 0 at the end of a schedule (cosine to min_factor 0).
    require(std::isfinite(lr) && lr >= 0, "optimizer_update: lr must be >= 0 and finite");
    require(config.state_buffers() < 1 || s1 != nullptr, "optimizer_update: missing state");
    require(config.state_buffers() < 2 || s2 != nullptr, "optimizer_update: missing state");
    Coefficients<T> c{};
    c.lr = T(lr);
    c.scale = T(grad_scale);
    c.clip_on = config.clip_value > 0;
    c.clip = T(config.clip_value);
    c.wd = T(config.weight_decay);
    c.mu = T(config.momentum);
    c.one_minus_dampening = T(1.0 - config.dampening);
    c.nesterov = config.nesterov;
    c.first = t == 1;
    c.b1 = T(config.beta1);
    c.one_minus_b1 = T(1.0 - config.beta1);
    c.b2 = T(config.beta2);
    c.one_minus_b2 = T(1.0 - config.beta2);
    if (config.kind != OptimizerKind::sgd) {
        c.inv_bc1 = T(1.0 / (1.0 - std::pow(config.beta1, double(t))));
        c.inv_bc2 = T(1.0 / (1.0 - std::pow(config.beta2, double(t))));
    }
    c.eps = T(config.eps);
    c.decay = T(1.0 - lr * config.weight_decay);

    switch (config.kind) {
        case OptimizerKind::sgd: {
            // SGD's step is not bounded (lr · g can overflow where Adam's cannot):
            // when any parameter would turn non-finite, none is changed. A check
            // pass before the update makes sure; it also measures the gradient for
            // the caller that asks (grad_sq). Given bounds on the parameters and
            // velocity, the check reads the gradient alone when they prove every
            // new value finite.
            T* velocity = config.momentum != 0 ? s1 : nullptr;
            index pieces = 0;
            double sums[max_pieces] = {};
            index counts[max_pieces] = {};
            T maxima[max_pieces][2] = {};
            // One pass over the fixed pieces: how many values it found not finite
            // (check: new parameters; gradient: gradient values), Σ g² into total.
            double total = 0;
            auto run = [&](auto pass) {
                pieces = for_pieces(0, n, [&](index k, index b, index e) {
                    counts[k] = sgd_pass<decltype(pass)::value>(c, params, grads, velocity, b, e,
                                                                sums[k], maxima[k]);
                });
                index bad = 0;
                total = 0;
                for (index k = 0; k < pieces; ++k) {
                    bad += counts[k];
                    total += sums[k];
                }
                return bad;
            };
            auto largest = [&](int which) {
                T top = 0;
                for (index k = 0; k < pieces; ++k) top = std::max(top, maxima[k][which]);
                return double(top);
            };
            using Check = std::integral_constant<SgdPass, SgdPass::check>;
            using Gradient = std::integral_constant<SgdPass, SgdPass::gradient>;
            using Apply = std::integral_constant<SgdPass, SgdPass::apply>;
            const bool bounded =
                bounds != nullptr && bounds->params >= 0 && (!velocity || bounds->velocity >= 0);
            const bool proven = bounded && run(Gradient{}) == 0 && std::isfinite(total) &&
                                sgd_step_bounded(c, largest(0), bounds->params,
                                                 velocity ? bounds->velocity : 0.0,
                                                 velocity != nullptr);
            if (!proven) {
                const index bad = run(Check{});
                if (grad_sq != nullptr) *grad_sq = total;
                // A sum that overflows matters only to the caller that asked for it
                // (with norm clipping the norm was measured, in double, before).
                if (bad > 0 || (grad_sq != nullptr && !std::isfinite(total))) return bad;
            } else if (grad_sq != nullptr) {
                *grad_sq = total;
            }
            run(Apply{});
            if (bounds != nullptr) {
                bounds->params = largest(0);
                bounds->velocity = velocity ? largest(1) : 0.0;
            }
            return 0;
        }
        case OptimizerKind::adam:
        case OptimizerKind::adamw: {
            const bool decoupled = config.kind == OptimizerKind::adamw;
            return over_pieces(0, n, [&](index b, index e) {
                return adam_range(c, decoupled, params, grads, s1, s2, b, e);
            });
        }
        case OptimizerKind::lamb: {
            // Each segment (a parameter tensor) gets its own trust ratio;
            // parameters outside every segment are updated with trust 1.
            index bad = 0, covered = 0;
            auto lamb_range = [&](index offset, index size, bool own_trust) {
                if (size <= 0) return;
                double p_sq[max_pieces] = {}, u_sq[max_pieces] = {};
                const index pieces = for_pieces(offset, size, [&](index k, index b, index e) {
                    lamb_norms_range(c, params, grads, s1, s2, b, e, p_sq[k], u_sq[k]);
                });
                double p_total = 0, u_total = 0;
                for (index k = 0; k < pieces; ++k) {
                    p_total += p_sq[k];
                    u_total += u_sq[k];
                }
                const double p_norm = std::sqrt(p_total), u_norm = std::sqrt(u_total);
                const double trust = own_trust && p_norm > 0 && u_norm > 0 ? p_norm / u_norm : 1.0;
                const T step = T(lr * trust);
                bad += over_pieces(offset, size, [&](index b, index e) {
                    return lamb_apply_range(c, step, params, s1, s2, b, e);
                });
            };
            check_segments(segments, n);  // all checked before any update
            for (const Segment& segment : segments) {
                lamb_range(covered, segment.offset - covered, false);
                lamb_range(segment.offset, segment.size, true);
                covered = segment.offset + segment.size;
            }
            lamb_range(covered, n - covered, false);
            return bad;
        }
    }
    return 0;
}

template <typename T>
void sum_into_each(T* const* arrays, int count, index n) {
    if (count <= 1 || n <= 0) return;
    // Pieces of 16 Ki elements, to share among the threads; within a piece,
    // blocks of 512 that stay in L1 between the sum and the stores.
    constexpr index block = 512;
    parallel_for(threads_for_elements(n), ceil_div(n, index(1) << 14), [&](index k) {
        const index end = std::min(n, (k + 1) << 14);
        T sum[block];
        for (index begin = k << 14; begin < end; begin += block) {
            const index m = std::min(block, end - begin);
            const T* __restrict first = arrays[0] + begin;
            const T* __restrict second = arrays[1] + begin;
            for (index i = 0; i < m; ++i) sum[i] = first[i] + second[i];
            for (int a = 2; a < count; ++a) {
                const T* __restrict next = arrays[a] + begin;
                for (index i = 0; i < m; ++i) sum[i] += next[i];
            }
            for (int a = 0; a < count; ++a) {
                T* __restrict out = arrays[a] + begin;
                for (index i = 0; i < m; ++i) out[i] = sum[i];
            }
        }
    });
}

#define FASTMLP_INSTANTIATE(T)                                                                   \
    template double grad_norm<T>(const T*, index, double);                                       \
    template index optimizer_update<T>(const OptimizerConfig&, T*, const T*, T*, T*, index,      \
                                       const std::vector<Segment>&, std::int64_t, double, double, \
                                       double*, SgdBounds*);                                     \
    template void sum_into_each<T>(T* const*, int, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
