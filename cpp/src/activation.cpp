// activation.cpp — elementwise activations; see activation.hpp for the formulas.
#include "fastmlp/activation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastmlp/threading.hpp"

// The float activations (and the lambdas over them) are inlined always: a call left in
// a loop (GCC's inliner gives up on some of the many instantiations) stops it from
// vectorizing.
#if defined(__GNUC__)
#define FASTMLP_ALWAYS_INLINE inline __attribute__((always_inline))
#define FASTMLP_INLINE_LAMBDA __attribute__((always_inline))
#else
#define FASTMLP_ALWAYS_INLINE inline
#define FASTMLP_INLINE_LAMBDA
#endif

namespace fastmlp {
namespace {

// Elementwise loops go parallel only when they are long enough to pay for it.
constexpr double elementwise_threshold = 1 << 16;

// tanh: std::tanh for double (the reference precision). For float, a rational
// approximation that vectorizes (no libm call): tanh(x) ≈ x·P(x²)/Q(x²) on
// [-7.9053, 7.9053] (clamped outside, where tanh rounds to ±1 in float), x itself
// below 4e-4. Against float64 tanh: at most 7 ulp (6.7 seen over 26 million points;
// 2.2 million had shown 6), 4e-7 relative. The coefficients are the minimax fit Eigen uses.
inline double tanh_of(double x) { return std::tanh(x); }
FASTMLP_ALWAYS_INLINE float tanh_of(float x) {
    constexpr float limit = 7.90531110763549805f;
    const float clamped = std::min(std::max(x, -limit), limit);  // minps/maxps: vectorizes
    const float x2 = clamped * clamped;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    const float t = clamped * p / q;
    return std::fabs(x) < 0.0004f ? x : t;
}

// Sigmoid, swish and GELU: for double, the formulas on std::exp / std::erfc (the
// reference precision). For float, code that vectorizes (no libm call, baseline
// SSE2 included): an exp of our own (exp_parts) and, for GELU, a rational
// approximation of erfc's scaled form. Error against the float64 formulas, in ulp of
// the float64 value rounded to float (2^-149 below 2^-126), worst seen over a sweep of
// 2.9 million floats (every 1031st bit pattern below 1e4, both signs, subnormals
// included, and dense steps on [-130, 130]) and 24 million random ones:
//                forward   backward
//   sigmoid      2.7       1.5   (a·(1 − a) on the same float a)
//   tanh         6.7       1.5   ((1 − a)(1 + a) on the same float a)
//   swish        3.6       5.1   (in ulp of max(|f'|, σ(z)): f' crosses 0 at z ≈ −1.278)
//   gelu         7.6       6.2   (in ulp of max(|f'|, Φ(z)): f' crosses 0 at z ≈ −0.752)
// The bounds stated in activation.hpp round these up; tests/test_activation_accuracy.py
// asserts them on the sweep, for the elementwise and the fused (AVX2/AVX-512) loops.
// Where the float64 formula gives NaN at ±inf (swish, gelu: ±inf·0), float returns
// the limits.

inline std::uint32_t bits_of(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
inline float float_of(std::uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// e^(hi + lo) = (m·s1)·s2, lo a small correction to hi (|lo| ≤ 2^-10 |hi|, or 0).
// Range reduction hi + lo = k·ln2 + r, |r| ≤ ln2/2, with ln2 split in two (Cody–Waite:
// k·ln2_hi is exact for |k| < 2^15, so is hi − k·ln2_hi); e^r by a degree-6 polynomial
// (our own minimax fit, 3e-9 relative); 2^k as two powers of two 2^k1·2^k2, built in the
// exponent bits, each a normal float, so that a result in the subnormal range is rounded
// once (by the last multiplication). Callers multiply other factors into m·s1 before the
// last ·s2 for the same reason. hi is clamped to [−120, 89]: e^x overflows to inf above
// 88.72 and rounds to 0 below −103.97; NaN goes through the clamp and the polynomial.
// (m·s1)·s2 is within 0.95 ulp of e^x (every 64th float on [−130, 100], against
// double exp); ±inf, NaN, overflow and the subnormal range come out as they should.
// Sigmoid and swish only need hi ≤ 0 (nonpositive = true), which saves the upper clamp
// (GCC turns each clamp into compares and selects, a tenth of the time of an exp).
// GELU keeps both: with the lower one alone, GCC 12 made its loop twice as slow.
struct ExpParts {
    float m, s1, s2;
};
template <bool nonpositive>
FASTMLP_ALWAYS_INLINE ExpParts exp_parts(float hi, float lo) {
    float x = std::max(hi, -120.0f);
    if constexpr (!nonpositive) x = std::min(x, 89.0f);
    // k = nearest integer to x/ln2: adding 1.5·2^23 rounds it into the low mantissa bits.
    constexpr float shifter = 12582912.0f;
    const float shifted = x * 1.44269504088896341f + shifter;
    const float k = shifted - shifter;
    const std::int32_t n = std::int32_t(bits_of(shifted) - bits_of(shifter));
    const float r = ((x - k * 0.693359375f) - k * -2.12194440e-4f) + lo;
    float q = 0.00138137559f;
    q = q * r + 0.00836912356f;
    q = q * r + 0.0416684262f;
    q = q * r + 0.166665167f;
    q = q * r + 0.49999994f;
    const float m = (q * (r * r) + r) + 1.0f;
    const std::int32_t n1 = n >> 1;  // n1, n − n1 ∈ [−87, 64]: normal powers of two
    const std::int32_t n2 = n - n1;
    return {m, float_of(std::uint32_t(n1 + 127) << 23), float_of(std::uint32_t(n2 + 127) << 23)};
}

// σ(z) from e = e^−|z|: 1/(1 + e) or e/(1 + e) (never overflows; relative accuracy in
// both tails).
inline double sigmoid_of(double z) {
    if (z >= 0) return 1 / (1 + std::exp(-z));
    const double e = std::exp(z);
    return e / (1 + e);
}
FASTMLP_ALWAYS_INLINE float sigmoid_of(float z) {
    const ExpParts p = exp_parts<true>(-std::fabs(z), 0.0f);
    const float ms = p.m * p.s1;
    const float denominator = 1.0f + ms * p.s2;
    const float reciprocal = 1.0f / denominator;
    return z >= 0.0f ? reciprocal : (ms * reciprocal) * p.s2;
}

// swish z·σ(z) and its derivative σ + z·σ·(1 − σ).
inline double swish_of(double z) { return z * sigmoid_of(z); }
inline double swish_derivative_of(double z) {
    const double s = sigmoid_of(z);
    return s + z * s * (1 - s);
}
FASTMLP_ALWAYS_INLINE float swish_of(float z) {
    const ExpParts p = exp_parts<true>(-std::fabs(z), 0.0f);
    const float ms = p.m * p.s1;
    const float denominator = 1.0f + ms * p.s2;
    const float reciprocal = 1.0f / denominator;
    const float swish = z >= 0.0f ? z * reciprocal : ((z * ms) * reciprocal) * p.s2;
    // z ≤ −120: −0 (the limit), not −inf·0 = NaN.
    return z <= -120.0f ? -0.0f : swish;
}
// σ + z·σ·(1 − σ) = (1 + e·(1 + z))/(1 + e)² for z ≥ 0 and e·((1 + z) + e)/(1 + e)² for
// z < 0, e = e^−|z|: no 1 − σ to cancel, 1 + z exact near the derivative's zero
// (z ≈ −1.278), and the negative side is scaled into the subnormal range last.
FASTMLP_ALWAYS_INLINE float swish_derivative_of(float z) {
    const ExpParts p = exp_parts<true>(-std::fabs(z), 0.0f);
    const float ms = p.m * p.s1;
    const float e = ms * p.s2;
    const float denominator = (1.0f + e) * (1.0f + e);
    const bool positive = z >= 0.0f;
    const float numerator = positive ? 1.0f + e * (1.0f + z) : ms * ((1.0f + z) + e);
    const float derivative = positive ? numerator / denominator : (numerator / denominator) * p.s2;
    // |z| ≥ 120: the limits 1 and 0, not ±inf·0 = NaN.
    return std::fabs(z) >= 120.0f ? (z > 0.0f ? 1.0f : 0.0f) : derivative;
}

// GELU z·Φ(z), Φ(z) = erfc(−z/√2)/2 (no cancellation for negative z), and its
// derivative Φ(z) + z·φ(z).
inline double gelu_cdf(double z) { return 0.5 * std::erfc(z * -0.70710678118654752440); }
inline double gelu_pdf(double z) { return 0.39894228040143267794 * std::exp(-0.5 * z * z); }
inline double gelu_of(double z) { return z * gelu_cdf(z); }
inline double gelu_derivative_of(double z) { return gelu_cdf(z) + z * gelu_pdf(z); }

// Float: with t = |z| and E = e^(−t²/2), Φ(−t) = E·R(t), R(t) = erfcx(t/√2)/2 (erfcx
// the scaled erfc) a smooth, positive function. R(t) ≈ P(t)/Q(t), degrees 4 and 5, our
// own fit for relative error on [0, 15.1] (6e-9 before rounding; Horner in float adds
// up to ~4e-7). Then, with φ(z) = E/√(2π):
//   z < 0:  gelu = z·E·R(t)       gelu' = E·(R(t) + z/√(2π))
//   z ≥ 0:  gelu = z·(1 − E·R(t))  gelu' = 1 + E·(z/√(2π) − R(t))
// t² is split exactly (t = t_hi + t_lo, t_hi the top 12 bits, so t_hi² is exact) to
// keep E relatively accurate where t²/2 is near 100. Past |z| = 15 both are at their
// limits in float (gelu: −0 or z, gelu': 0 or 1) and are returned as such.
struct GeluParts {
    float m, s1, s2;  // E = (m·s1)·s2, as exp_parts
    float r;          // R(min(|z|, 15))
    bool beyond;      // |z| > 15
};
FASTMLP_ALWAYS_INLINE GeluParts gelu_parts(float z) {
    const float t = std::min(std::fabs(z), 15.0f);
    const float t_hi = float_of(bits_of(t) & 0xfffff000u);
    const float t_lo = t - t_hi;
    const ExpParts e = exp_parts<false>(-0.5f * (t_hi * t_hi), -(t_hi * t_lo + 0.5f * (t_lo * t_lo)));
    float p = 0.00416063564f;
    p = p * t + 0.0409307331f;
    p = p * t + 0.184115797f;
    p = p * t + 0.439480543f;
    p = p * t + 0.5f;
    float q = 0.0104290573f;
    q = q * t + 0.102604181f;
    q = q * t + 0.471795976f;
    q = q * t + 1.20615613f;
    q = q * t + 1.67684615f;
    q = q * t + 1.0f;
    return {e.m, e.s1, e.s2, p / q, std::fabs(z) > 15.0f};
}
FASTMLP_ALWAYS_INLINE float gelu_of(float z) {
    const GeluParts g = gelu_parts(z);
    const float tail = (g.r * (g.m * g.s1)) * g.s2;  // Φ(−|z|)
    const float negative = ((z * g.r) * (g.m * g.s1)) * g.s2;
    const float positive = z * (1.0f - tail);
    return z >= 0.0f ? positive : (g.beyond ? -0.0f : negative);
}
FASTMLP_ALWAYS_INLINE float gelu_derivative_of(float z) {
    constexpr float inv_sqrt_2pi = 0.398942280401432678f;
    const GeluParts g = gelu_parts(z);
    const float zc = z * inv_sqrt_2pi;
    const float negative = ((g.r + zc) * (g.m * g.s1)) * g.s2;
    const float positive = 1.0f + ((zc - g.r) * (g.m * g.s1)) * g.s2;
    const float derivative = z >= 0.0f ? positive : negative;
    return g.beyond ? (z > 0.0f ? 1.0f : 0.0f) : derivative;
}

// f(begin, end) over [0, n) in fixed chunks: parallel only for long arrays.
template <typename F>
void for_each_chunk(index n, F f) {
    constexpr index chunk = 1 << 14;
    const int nt = threads_for(double(n), elementwise_threshold);
    parallel_for(nt, ceil_div(n, chunk),
                 [&](index c) { f(c * chunk, (c + 1) * chunk < n ? (c + 1) * chunk : n); });
}

// The loops themselves, compiled for AVX-512, AVX2 and baseline (FASTMLP_CLONES): the
// vectorized exp and rational functions above run 16 floats a step with AVX-512 where
// the baseline's SSE2 runs 4. __restrict tells the compiler the arrays do not overlap
// (callers pass in == out through the in-place variants instead).
template <typename T, typename Op>
FASTMLP_CLONES void forward_cells(Op op, T* __restrict out, const T* __restrict in, index begin,
                                  index end) {
    for (index i = begin; i < end; ++i) out[i] = op(in[i]);
}
template <typename T, typename Op>
FASTMLP_CLONES void forward_cells_in_place(Op op, T* __restrict inout, index begin, index end) {
    for (index i = begin; i < end; ++i) inout[i] = op(inout[i]);
}
template <typename T, typename Op>
FASTMLP_CLONES void backward_cells(Op op, T* __restrict out, const T* __restrict da,
                                   const T* __restrict z, const T* __restrict a, index begin,
                                   index end) {
    for (index i = begin; i < end; ++i) out[i] = op(da[i], z[i], a[i]);
}
template <typename T, typename Op>
FASTMLP_CLONES void backward_cells_in_place(Op op, T* __restrict inout, const T* __restrict z,
                                            const T* __restrict a, index begin, index end) {
    for (index i = begin; i < end; ++i) inout[i] = op(inout[i], z[i], a[i]);
}

// a[i] = op(z[i]), in place (a == z) or on distinct arrays.
template <typename T, typename Op>
void map_forward(T* a, const T* z, index n, Op op) {
    for_each_chunk(n, [=](index begin, index end) {
        if (a == z) {
            forward_cells_in_place(op, a, begin, end);
        } else {
            forward_cells(op, a, z, begin, end);
        }
    });
}

// dz[i] = op(da[i], z[i], a[i]), in place when dz == da.
template <typename T, typename Op>
void map_backward(T* dz, const T* da, const T* z, const T* a, index n, Op op) {
    for_each_chunk(n, [=](index begin, index end) {
        if (dz == z || dz == a) {  // unusual aliasing: the plain loop
            for (index i = begin; i < end; ++i) dz[i] = op(da[i], z[i], a[i]);
        } else if (dz == da) {
            backward_cells_in_place(op, dz, z, a, begin, end);
        } else {
            backward_cells(op, dz, da, z, a, begin, end);
        }
    });
}

}  // namespace

// Calls visit(f, df) with the activation's two elementwise functions:
// f(z) = a and df(da, z, a) = da ⊙ f'(z). Every kernel below is written once
// over them, so the formulas live in one place.
template <typename T, typename Visit>
void with_activation(Activation activation, Visit&& visit) {
    const T slope = T(leaky_relu_slope);
    switch (activation) {
        case Activation::linear:
            return visit([](T x) { return x; }, [](T d, T, T) { return d; });
        case Activation::relu:
            return visit([](T x) { return x > T(0) ? x : T(0); },
                         [](T d, T x, T) { return x > T(0) ? d : T(0); });
        case Activation::leaky_relu:
            return visit([=](T x) { return x > T(0) ? x : slope * x; },
                         [=](T d, T x, T) { return x > T(0) ? d : slope * d; });
        case Activation::sigmoid:
            return visit([](T x) FASTMLP_INLINE_LAMBDA { return sigmoid_of(x); },
                         [](T d, T, T y) { return d * y * (T(1) - y); });
        case Activation::tanh:
            return visit([](T x) FASTMLP_INLINE_LAMBDA { return tanh_of(x); },
                         // (1 − a)(1 + a): 1 − a is exact near |a| = 1, a² would not be
                         [](T d, T, T y) { return d * ((T(1) - y) * (T(1) + y)); });
        case Activation::swish:
            return visit([](T x) FASTMLP_INLINE_LAMBDA { return swish_of(x); },
                         [](T d, T x, T) FASTMLP_INLINE_LAMBDA { return d * swish_derivative_of(x); });
        case Activation::gelu:
            return visit([](T x) FASTMLP_INLINE_LAMBDA { return gelu_of(x); },
                         [](T d, T x, T) FASTMLP_INLINE_LAMBDA { return d * gelu_derivative_of(x); });
    }
}

template <typename T>
void activation_forward(Activation activation, T* a, const T* z, index n) {
    require(n >= 0, "activation_forward: n must be non-negative");
    if (activation == Activation::linear && a == z) return;
    with_activation<T>(activation, [&](auto f, auto) { map_forward(a, z, n, f); });
}

template <typename T>
void activation_backward(Activation activation, T* dz, const T* da, const T* z, const T* a,
                         index n) {
    require(n >= 0, "activation_backward: n must be non-negative");
    if (activation == Activation::linear && dz == da) return;
    with_activation<T>(activation, [&](auto, auto df) { map_backward(dz, da, z, a, n, df); });
}

// The block [i0, i1) × [j0, j1) of z (rows ld apart) += bias; a = f(z). a may alias z.
template <typename T, typename F>
FASTMLP_CLONES void bias_activation_cells(F f, T* a, T* z, const T* bias, index ld, index i0,
                                          index i1, index j0, index j1) {
    for (index i = i0; i < i1; ++i) {
        T* __restrict zr = z + i * ld;
        const T* __restrict b = bias;
        if (a == z) {
            for (index j = j0; j < j1; ++j) zr[j] = f(zr[j] + b[j]);
        } else {
            T* __restrict out = a + i * ld;
            for (index j = j0; j < j1; ++j) {
                const T v = zr[j] + b[j];
                zr[j] = v;
                out[j] = f(v);
            }
        }
    }
}

template <typename T>
void bias_activation_block(void* context, index i0, index i1, index j0, index j1) {
    const auto& c = *static_cast<const BiasActivation<T>*>(context);
    with_activation<T>(c.activation, [&](auto f, auto) {
        bias_activation_cells(f, c.a, c.z, c.bias, c.ld, i0, i1, j0, j1);
    });
}

// Columns [j0, j1): dz = df(da, z, a) and d_bias (+)= Σ_rows dz. Rows go in
// fours: dz for each of them, then their sum, pairwise, into d_bias (adding
// each row straight into d_bias would chain every row to the previous row's
// store of it). Simple loops, so each one vectorizes; the order of the sums is
// fixed, whatever the threads.
template <typename T, typename DF>
FASTMLP_CLONES void activation_bias_columns(DF df, T* dz, T* d_bias, const T* da, const T* z,
                                            const T* a, index batch, index outputs, index j0,
                                            index j1, bool accumulate) {
    T* __restrict db = d_bias;
    if (!accumulate)
        for (index j = j0; j < j1; ++j) db[j] = T(0);
    auto row_of_dz = [&](index i) {
        const index row = i * outputs;
        for (index j = j0; j < j1; ++j) dz[row + j] = df(da[row + j], z[row + j], a[row + j]);
    };
    index i = 0;
    for (; i + 4 <= batch; i += 4) {
        for (index r = i; r < i + 4; ++r) row_of_dz(r);
        const T* __restrict d0 = dz + i * outputs;
        const T* __restrict d1 = d0 + outputs;
        const T* __restrict d2 = d1 + outputs;
        const T* __restrict d3 = d2 + outputs;
        for (index j = j0; j < j1; ++j) db[j] += (d0[j] + d1[j]) + (d2[j] + d3[j]);
    }
    for (; i < batch; ++i) {
        row_of_dz(i);
        const T* __restrict d = dz + i * outputs;
        for (index j = j0; j < j1; ++j) db[j] += d[j];
    }
}

// z (B, O) += bias; a = f(z): one pass over the layer's output instead of two.
template <typename T>
void bias_activation_forward(Activation activation, T* a, T* z, const T* bias, index batch,
                             index outputs) {
    require(batch >= 0 && outputs >= 0, "bias_activation_forward: sizes must be non-negative");
    checked_product(batch, outputs, "bias_activation_forward: batch × outputs overflows an index");
    const int nt = threads_for(double(batch) * double(outputs), elementwise_threshold);
    const index rows = std::max<index>(1, (1 << 14) / std::max<index>(outputs, 1));
    with_activation<T>(activation, [&](auto f, auto) {
        parallel_for(nt, ceil_div(batch, rows), [&](index c) {
            bias_activation_cells(f, a, z, bias, outputs, c * rows,
                                  std::min(batch, (c + 1) * rows), index(0), outputs);
        });
    });
}

// dz = da ⊙ f'(z) (dz may alias da) and d_bias (+)= Σ_rows dz, in one pass.
// Threads split the columns into fixed blocks; each column sums its rows in
// order, so d_bias does not depend on the thread count.
template <typename T>
void activation_bias_backward(Activation activation, T* dz, T* d_bias, const T* da,
                              const T* z, const T* a, index batch, index outputs,
                              bool accumulate) {
    require(batch >= 0 && outputs >= 0, "activation_bias_backward: sizes must be non-negative");
    checked_product(batch, outputs,
                    "activation_bias_backward: batch × outputs overflows an index");
    constexpr index block = 64;
    const index blocks = ceil_div(outputs, block);
    const int nt = threads_for(double(batch) * double(outputs), elementwise_threshold);
    with_activation<T>(activation, [&](auto, auto df) {
        parallel_for(nt, blocks, [&](index blk) {
            activation_bias_columns(df, dz, d_bias, da, z, a, batch, outputs, blk * block,
                                    std::min(outputs, (blk + 1) * block), accumulate);
        });
    });
}

#define FASTMLP_INSTANTIATE(T)                                                                \
    template void activation_forward<T>(Activation, T*, const T*, index);                    \
    template void activation_backward<T>(Activation, T*, const T*, const T*, const T*, index); \
    template void bias_activation_forward<T>(Activation, T*, T*, const T*, index, index);      \
    template void bias_activation_block<T>(void*, index, index, index, index);                 \
    template void activation_bias_backward<T>(Activation, T*, T*, const T*, const T*,          \
                                              const T*, index, index, bool);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
