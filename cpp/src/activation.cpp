// activation.cpp — elementwise activations; see activation.hpp for the formulas.
#include "fastmlp/activation.hpp"

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

template <typename T>
inline T gelu_cdf(T z) {  // Φ(z) = erfc(−z/√2)/2: no cancellation for negative z
    return T(0.5) * std::erfc(z * T(-0.70710678118654752440));
}

template <typename T>
inline T gelu_pdf(T z) {  // φ(z)
    return T(0.39894228040143267794) * std::exp(T(-0.5) * z * z);
}

template <typename T, typename F>
void for_each_index(index n, F f) {
    const int nt = threads_for(double(n), elementwise_threshold);
    note_parallel_region(nt);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (index i = 0; i < n; ++i) f(i);
}

}  // namespace

Activation activation_from_name(const std::string& name) {
    if (name == "linear") return Activation::linear;
    if (name == "relu") return Activation::relu;
    if (name == "leaky_relu") return Activation::leaky_relu;
    if (name == "sigmoid") return Activation::sigmoid;
    if (name == "tanh") return Activation::tanh;
    if (name == "swish") return Activation::swish;
    if (name == "gelu") return Activation::gelu;
    throw std::invalid_argument(
        "unknown activation '" + name +
        "': expected one of linear, relu, leaky_relu, sigmoid, tanh, swish, gelu");
}

const char* activation_name(Activation activation) {
    switch (activation) {
        case Activation::linear: return "linear";
        case Activation::relu: return "relu";
        case Activation::leaky_relu: return "leaky_relu";
        case Activation::sigmoid: return "sigmoid";
        case Activation::tanh: return "tanh";
        case Activation::swish: return "swish";
        case Activation::gelu: return "gelu";
    }
    return "unknown";
}

template <typename T>
void activation_forward(Activation activation, T* a, const T* z, index n) {
    require(n >= 0, "activation_forward: n must be non-negative");
    const T slope = T(leaky_relu_slope);
    switch (activation) {
        case Activation::linear:
            if (a != z) for_each_index<T>(n, [=](index i) { a[i] = z[i]; });
            return;
        case Activation::relu:
            for_each_index<T>(n, [=](index i) { a[i] = z[i] > T(0) ? z[i] : T(0); });
            return;
        case Activation::leaky_relu:
            for_each_index<T>(n, [=](index i) { a[i] = z[i] > T(0) ? z[i] : slope * z[i]; });
            return;
        case Activation::sigmoid:
            for_each_index<T>(n, [=](index i) { a[i] = sigmoid(z[i]); });
            return;
        case Activation::tanh:
            for_each_index<T>(n, [=](index i) { a[i] = std::tanh(z[i]); });
            return;
        case Activation::swish:
            for_each_index<T>(n, [=](index i) { a[i] = z[i] * sigmoid(z[i]); });
            return;
        case Activation::gelu:
            for_each_index<T>(n, [=](index i) { a[i] = z[i] * gelu_cdf(z[i]); });
            return;
    }
}

template <typename T>
void activation_backward(Activation activation, T* dz, const T* da, const T* z, const T* a,
                         index n) {
    require(n >= 0, "activation_backward: n must be non-negative");
    const T slope = T(leaky_relu_slope);
    switch (activation) {
        case Activation::linear:
            if (dz != da) for_each_index<T>(n, [=](index i) { dz[i] = da[i]; });
            return;
        case Activation::relu:
            for_each_index<T>(n, [=](index i) { dz[i] = z[i] > T(0) ? da[i] : T(0); });
            return;
        case Activation::leaky_relu:
            for_each_index<T>(n, [=](index i) { dz[i] = z[i] > T(0) ? da[i] : slope * da[i]; });
            return;
        case Activation::sigmoid:
            for_each_index<T>(n, [=](index i) { dz[i] = da[i] * a[i] * (T(1) - a[i]); });
            return;
        case Activation::tanh:
            for_each_index<T>(n, [=](index i) { dz[i] = da[i] * (T(1) - a[i] * a[i]); });
            return;
        case Activation::swish:
            for_each_index<T>(n, [=](index i) {
                const T s = sigmoid(z[i]);
                dz[i] = da[i] * (s + z[i] * s * (T(1) - s));
            });
            return;
        case Activation::gelu:
            for_each_index<T>(n, [=](index i) {
                dz[i] = da[i] * (gelu_cdf(z[i]) + z[i] * gelu_pdf(z[i]));
            });
            return;
    }
}

template void activation_forward<float>(Activation, float*, const float*, index);
template void activation_forward<double>(Activation, double*, const double*, index);
template void activation_backward<float>(Activation, float*, const float*, const float*,
                                         const float*, index);
template void activation_backward<double>(Activation, double*, const double*, const double*,
                                          const double*, index);

}  // namespace fastmlp
