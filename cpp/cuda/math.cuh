// cuda/math.cuh — the scalar rules every CUDA kernel shares (the layer kernels and
// the fused MLP kernel alike): activations and their derivatives, the losses'
// terms, the learning-rate schedule and the optimizers' element updates. Each is
// the CPU kernel's definition (activation.hpp, loss.hpp, optimizer.hpp) computed
// with CUDA's libdevice functions; float results may differ from the CPU's by a
// few ulp (its float activations use their own approximations).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels.cuh"

namespace fastmlp::cuda {

#define FASTMLP_HD __host__ __device__ __forceinline__
#define FASTMLP_D __device__ __forceinline__

// ---- activations ---------------------------------------------------------------------
template <typename T>
FASTMLP_D T sigmoid_of(T z) {
    const T e = exp(-fabs(z));
    return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}
template <typename T>
FASTMLP_D T gelu_cdf(T z) {  // Φ(z) = erfc(−z/√2)/2
    return T(0.5) * erfc(z * T(-0.70710678118654752440));
}
template <typename T>
FASTMLP_D T gelu_pdf(T z) {
    return T(0.39894228040143267794) * exp(T(-0.5) * z * z);
}

// f(z)
template <typename T>
FASTMLP_D T activate(Activation f, T z) {
    switch (f) {
        case Activation::linear: return z;
        case Activation::relu: return z > T(0) ? z : T(0);
        case Activation::leaky_relu: return z > T(0) ? z : T(leaky_relu_slope) * z;
        case Activation::sigmoid: return sigmoid_of(z);
        case Activation::tanh: return tanh(z);
        case Activation::swish: {
            const T s = sigmoid_of(z);
            return z * s;
        }
        case Activation::gelu: return z * gelu_cdf(z);
    }
    return z;
}

// f'(z), given a = f(z) too.
template <typename T>
FASTMLP_D T activate_grad(Activation f, T z, T a) {
    switch (f) {
        case Activation::linear: return T(1);
        case Activation::relu: return z > T(0) ? T(1) : T(0);
        case Activation::leaky_relu: return z > T(0) ? T(1) : T(leaky_relu_slope);
        case Activation::sigmoid: return a * (T(1) - a);
        case Activation::tanh: return T(1) - a * a;
        case Activation::swish: {
            const T s = sigmoid_of(z);
            return s + z * s * (T(1) - s);
        }
        case Activation::gelu: return gelu_cdf(z) + z * gelu_pdf(z);
    }
    return T(1);
}

// ---- losses (loss.hpp) -----------------------------------------------------------------
// What the mean divides by.
FASTMLP_HD double normalizer_of(Loss loss, double batch_weight, index outputs) {
    return loss == Loss::cross_entropy ? batch_weight : batch_weight * double(outputs);
}
// The factor of a row's gradient before its weight: (mse: 2, else 1) / normalizer, 0 when it is 0.
FASTMLP_HD double gradient_factor(Loss loss, double normalizer) {
    return normalizer > 0 ? (loss == Loss::mse ? 2.0 : 1.0) / normalizer : 0.0;
}
// An element's loss term (mse, binary_cross_entropy, huber: not cross_entropy,
// which is a row's) and its unscaled gradient in *d: mse p − t, bce σ(p) − t,
// huber clamp(p − t, ±δ).
template <typename T>
FASTMLP_D double element_loss(Loss loss, T p, T t, double delta, T* d) {
    switch (loss) {
        case Loss::mse: {
            const T diff = p - t;
            *d = diff;
            return double(diff) * double(diff);
        }
        case Loss::binary_cross_entropy: {
            const double x = double(p), y = double(t);
            *d = sigmoid_of(p) - t;
            return fmax(x, 0.0) - x * y + log1p(exp(-fabs(x)));
        }
        case Loss::huber: {
            const T diff = p - t;
            const double a = fabs(double(diff));
            const T dd = T(delta);
            *d = diff < -dd ? -dd : (diff > dd ? dd : diff);
            return a <= delta ? 0.5 * a * a : delta * (a - 0.5 * delta);
        }
        default: *d = T(0); return 0.0;
    }
}

// The first maximum of a row, a NaN counting as the largest (the first NaN wins),
// as numpy.argmax and the CPU's first_max decide.
template <typename T>
FASTMLP_D index first_max(const T* row, index n) {
    index best = 0;
    bool nan = false;
    for (index k = 0; k < n; ++k) {
        nan |= row[k] != row[k];
        if (row[k] > row[best]) best = k;
    }
    if (nan)
        for (index k = 0; k < n; ++k)
            if (row[k] != row[k]) return k;
    return best;
}

// Softmax cross-entropy of one row: −Σ t log softmax(p); the gradient
// (softmax(p) · Σt − t) · scale into g when not null (g may alias p: each p[k]
// is read before g[k] is written).
template <typename T>
FASTMLP_D double cross_entropy_row(const T* p, const T* t, T* g, index outputs, T scale) {
    T top = p[0];
    for (index k = 1; k < outputs; ++k) top = top < p[k] ? p[k] : top;  // std::max's rule
    double sum_exp = 0, target_sum = 0, dot = 0;
    for (index k = 0; k < outputs; ++k) {
        const T shifted = p[k] - top;
        const double e = exp(double(shifted));
        sum_exp += e;
        target_sum += double(t[k]);
        dot += double(t[k]) * double(shifted);
        if (g != nullptr) g[k] = T(e);  // kept for the gradient
    }
    const double row_loss = target_sum * log(sum_exp) - dot;
    if (g != nullptr) {
        const double inv_sum = 1.0 / sum_exp;
        for (index k = 0; k < outputs; ++k)
            g[k] = scale * T(double(g[k]) * inv_sum * target_sum - double(t[k]));
    }
    return row_loss;
}

// One row of a batch (pred p, target t, `outputs` values): returns its loss (double,
// before the row's weight), writes dL/dp for the batch's mean (the row's factor
// `scale` times the unscaled gradient) into g when not null (g may alias p), and,
// when right is not null, adds w for each right prediction (cross_entropy: the row's
// argmax; binary_cross_entropy: each element), counted before g is written.
template <typename T>
FASTMLP_D double loss_row(Loss loss, const T* p, const T* t, T* g, index outputs, double delta, T scale,
                          double w, double* right) {
    if (right != nullptr) {
        if (loss == Loss::cross_entropy) {
            if (outputs >= 1 && first_max(p, outputs) == first_max(t, outputs)) *right += w;
        } else if (loss == Loss::binary_cross_entropy) {
            for (index k = 0; k < outputs; ++k)
                if ((p[k] > T(0)) == (t[k] > T(0.5))) *right += w;
        }
    }
    if (loss == Loss::cross_entropy) return outputs >= 1 ? cross_entropy_row(p, t, g, outputs, scale) : 0.0;
    double row = 0;
    for (index k = 0; k < outputs; ++k) {
        T d;
        row += element_loss(loss, p[k], t[k], delta, &d);
        if (g != nullptr) g[k] = scale * d;
    }
    return row;
}

// ---- the schedule (optimizer.hpp's Schedule::factor) ------------------------------------
FASTMLP_HD double schedule_factor(const Schedule& s, std::int64_t t) {
    if (t < s.warmup_steps) return double(t + 1) / double(s.warmup_steps);
    const std::int64_t k = t - s.warmup_steps;
    switch (s.kind) {
        case Schedule::Kind::constant: return 1.0;
        case Schedule::Kind::step: return pow(s.gamma, double(k / s.step_size));
        case Schedule::Kind::exponential: return pow(s.gamma, double(k));
        case Schedule::Kind::cosine: {
            const double progress = double(k < s.total_steps ? k : s.total_steps) / double(s.total_steps);
            return s.min_factor + (1.0 - s.min_factor) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
        }
    }
    return 1.0;
}

// ---- optimizer rules (optimizer.hpp), one element --------------------------------------
// The coefficients of one update, in T as the CPU forms them, from the config and
// the step's state (lr, scale, bias corrections).
template <typename T>
struct Rule {
    OptimizerKind kind;
    T lr, scale, clip, wd, mu, one_minus_dampening, b1, one_minus_b1, b2, one_minus_b2, inv_bc1,
        inv_bc2, eps, decay;
    bool clip_on, nesterov, first, momentum;
};

template <typename T>
FASTMLP_HD Rule<T> make_rule(const OptimizerConfig& c, const StepState& s) {
    Rule<T> r;
    r.kind = c.kind;
    r.lr = T(s.lr);
    r.scale = T(s.scale);
    r.clip = T(c.clip_value);
    r.clip_on = c.clip_value > 0;
    r.wd = T(c.weight_decay);
    r.mu = T(c.momentum);
    r.momentum = c.momentum != 0;
    r.one_minus_dampening = T(1.0 - c.dampening);
    r.nesterov = c.nesterov;
    r.first = s.t == 0;  // SGD's velocity starts as the first gradient
    r.b1 = T(c.beta1);
    r.one_minus_b1 = T(1.0 - c.beta1);
    r.b2 = T(c.beta2);
    r.one_minus_b2 = T(1.0 - c.beta2);
    r.inv_bc1 = T(1.0 / s.bias1);
    r.inv_bc2 = T(1.0 / s.bias2);
    r.eps = T(c.eps);
    r.decay = T(1.0 - s.lr * c.weight_decay);
    return r;
}

// g = scale · clamp(raw, ±clip)
template <typename T>
FASTMLP_D T effective_gradient(const Rule<T>& r, T raw) {
    if (r.clip_on) raw = raw < -r.clip ? -r.clip : (raw > r.clip ? r.clip : raw);
    return r.scale * raw;
}

// SGD, Adam, AdamW: the new value of p (s1, s2 updated in place). Not LAMB
// (lamb_direction, then the trust ratio).
template <typename T>
FASTMLP_D T rule_update(const Rule<T>& r, T p, T raw, T& s1, T& s2) {
    T g = effective_gradient(r, raw);
    switch (r.kind) {
        case OptimizerKind::sgd: {
            T d = g + r.wd * p;
            if (r.momentum) {
                const T v = r.first ? d : r.mu * s1 + r.one_minus_dampening * d;
                s1 = v;
                d = r.nesterov ? d + r.mu * v : v;
            }
            return p - r.lr * d;
        }
        case OptimizerKind::adam:
        case OptimizerKind::adamw: {
            T base = p;
            if (r.kind == OptimizerKind::adam) g = g + r.wd * p;
            else base = r.decay * p;
            const T m = r.b1 * s1 + r.one_minus_b1 * g;
            const T v = r.b2 * s2 + r.one_minus_b2 * (g * g);
            s1 = m;
            s2 = v;
            const T u = (m * r.inv_bc1) / (sqrt(v * r.inv_bc2) + r.eps);
            return base - r.lr * u;
        }
        default: return p;
    }
}

// LAMB's direction u = m̂ / (√v̂ + ε) + wd·p (m, v updated in place).
template <typename T>
FASTMLP_D T lamb_direction(const Rule<T>& r, T p, T raw, T& s1, T& s2) {
    const T g = effective_gradient(r, raw);
    const T m = r.b1 * s1 + r.one_minus_b1 * g;
    const T v = r.b2 * s2 + r.one_minus_b2 * (g * g);
    s1 = m;
    s2 = v;
    const T u = (m * r.inv_bc1) / (sqrt(v * r.inv_bc2) + r.eps);
    return r.wd != T(0) ? u + r.wd * p : u;
}

template <typename T>
FASTMLP_D bool finite(T x) {
    return isfinite(x);
}

}  // namespace fastmlp::cuda
