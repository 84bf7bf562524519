// activation.cpp — elementwise activations; see activation.hpp for the formulas.
#include "fastmlp/activation.hpp"

#include <algorithm>
#include <cmath>

#include "fastmlp/threading.hpp"

namespace fastmlp {
namespace {

// Elementwise loops go parallel only when they are long enough to pay for it.
constexpr double elementwise_threshold = 1 << 16;

template <typename T>
inline T sigmoid(T z) {
    // Never exponentiates a positive number, so it cannot overflow.
    if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
    const T e = std::exp(z);
    return e / (T(1) + e);
}

// tanh: std::tanh for double (the reference precision). For float, a rational
// approximation that vectorizes (no libm call): tanh(x) ≈ x·P(x²)/Q(x²) on
// [-7.9053, 7.9053] (clamped outside, where tanh rounds to ±1 in float), x itself
// below 4e-4. Measured against float64 tanh on 2.2 million points: at most 6 ulp
// (3.4e-7 relative). The coefficients are the minimax fit Eigen uses.
inline double tanh_of(double x) { return std::tanh(x); }
inline float tanh_of(float x) {
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

template <typename T>
inline T gelu_cdf(T z) {  // Φ(z) = erfc(−z/√2)/2: no cancellation for negative z
    return T(0.5) * std::erfc(z * T(-0.70710678118654752440));
}

template <typename T>
inline T gelu_pdf(T z) {  // φ(z)
    return T(0.39894228040143267794) * std::exp(T(-0.5) * z * z);
}

// f(begin, end) over [0, n) in fixed chunks: parallel only for long arrays.
template <typename F>
void for_each_chunk(index n, F f) {
    constexpr index chunk = 1 << 14;
    const int nt = threads_for(double(n), elementwise_threshold);
    parallel_for(nt, ceil_div(n, chunk),
                 [&](index c) { f(c * chunk, (c + 1) * chunk < n ? (c + 1) * chunk : n); });
}

// a[i] = op(z[i]). In place (a == z) or on distinct arrays, the loop is told
// so (restrict), which lets the compiler vectorize it without alias checks.
template <typename T, typename Op>
void map_forward(T* a, const T* z, index n, Op op) {
    for_each_chunk(n, [=](index begin, index end) {
        if (a == z) {
            T* __restrict inout = a;
            for (index i = begin; i < end; ++i) inout[i] = op(inout[i]);
        } else {
            T* __restrict out = a;
            const T* __restrict in = z;
            for (index i = begin; i < end; ++i) out[i] = op(in[i]);
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
            T* __restrict inout = dz;
            const T* __restrict zr = z;
            const T* __restrict ar = a;
            for (index i = begin; i < end; ++i) inout[i] = op(inout[i], zr[i], ar[i]);
        } else {
            T* __restrict out = dz;
            const T* __restrict dar = da;
            const T* __restrict zr = z;
            const T* __restrict ar = a;
            for (index i = begin; i < end; ++i) out[i] = op(dar[i], zr[i], ar[i]);
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
            return visit([](T x) { return sigmoid(x); },
                         [](T d, T, T y) { return d * y * (T(1) - y); });
        case Activation::tanh:
            return visit([](T x) { return tanh_of(x); },
                         [](T d, T, T y) { return d * (T(1) - y * y); });
        case Activation::swish:
            return visit([](T x) { return x * sigmoid(x); },
                         [](T d, T x, T) {
                             const T s = sigmoid(x);
                             return d * (s + x * s * (T(1) - s));
                         });
        case Activation::gelu:
            return visit([](T x) { return x * gelu_cdf(x); },
                         [](T d, T x, T) { return d * (gelu_cdf(x) + x * gelu_pdf(x)); });
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
