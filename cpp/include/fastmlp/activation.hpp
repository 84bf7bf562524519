// fastmlp/activation.hpp — elementwise activations, forward and backward side by side.
//
//   forward:  a = f(z)
//   backward: dz = da ⊙ f'(z)      (writes dz; dz may alias da)
//
// Backward receives both z and a = f(z), so each derivative uses whichever is
// cheaper (sigmoid: a(1-a); tanh: 1-a²). Derivatives at kinks follow PyTorch:
// relu'(0) = 0, leaky_relu'(0) = slope.
//
//   linear      f(z) = z                          f' = 1
//   relu        max(z, 0)                         f' = [z > 0]
//   leaky_relu  z if z > 0 else 0.01 z            f' = 1 if z > 0 else 0.01
//   sigmoid     1 / (1 + e^-z)  (stable form)     f' = a (1 - a)
//               (float: ≤ 3 ulp; f' ≤ 2 ulp given a)
//   tanh        tanh z                            f' = 1 - a² = (1 - a)(1 + a)
//               (float: ≤ 7 ulp; f' ≤ 2 ulp given a)
//   swish       z σ(z)  (SiLU)                    f' = σ(z) + z σ(z)(1 - σ(z))
//               (float: ≤ 4 ulp; f' ≤ 6 ulp of max(|f'|, σ(z)))
//   gelu        z Φ(z), Φ(z) = erfc(−z/√2)/2      f' = Φ(z) + z φ(z)
//               (float: ≤ 8 ulp; f' ≤ 7 ulp of max(|f'|, Φ(z)))
//
// Float sigmoid, tanh, swish and gelu are approximations of our own that vectorize
// (activation.cpp: an exp with a minimax polynomial, a rational tanh, a rational
// erfcx for Φ); the bounds are against the float64 formulas (libm, the reference
// precision), measured over dense sweeps (tests/test_activation_accuracy.py). swish'
// and gelu' cross zero, where the error is bounded relative to the terms that cancel.
// At ±inf float swish, gelu and their derivatives return the limits; float64 gives
// NaN (±inf·0) for swish(−inf), gelu(−inf), swish'(±inf) and gelu'(±inf).
#pragma once

#include <string>

#include "fastmlp/common.hpp"
#include "fastmlp/names.hpp"

namespace fastmlp {

enum class Activation { linear, relu, leaky_relu, sigmoid, tanh, swish, gelu };

inline constexpr double leaky_relu_slope = 0.01;

inline constexpr NameTable<Activation, 7> activation_names{
    "activation",
    {{{Activation::linear, "linear"},
      {Activation::relu, "relu"},
      {Activation::leaky_relu, "leaky_relu"},
      {Activation::sigmoid, "sigmoid"},
      {Activation::tanh, "tanh"},
      {Activation::swish, "swish"},
      {Activation::gelu, "gelu"}}}};
static_assert(activation_names.in_enum_order());

// "relu" -> Activation::relu; throws std::invalid_argument naming the choices.
inline Activation activation_from_name(const std::string& name) {
    return activation_names.from_name(name);
}
inline const char* activation_name(Activation activation) { return activation_names.name(activation); }

// z, a are (n). a may alias z.
template <typename T>
void activation_forward(Activation activation, T* a, const T* z, index n);

// dz, da, z, a are (n). dz may alias da.
template <typename T>
void activation_backward(Activation activation, T* dz, const T* da, const T* z,
                         const T* a, index n);

// The fused forms a dense layer uses (B batch, O outputs), one pass each:
// z (B, O) += bias (O); a = f(z). a may alias z.
template <typename T>
void bias_activation_forward(Activation activation, T* a, T* z, const T* bias, index batch,
                             index outputs);

// The same on one block [i0, i1) × [j0, j1) of a layer's output, as a GEMM
// epilogue (gemm.hpp: GemmEpilogue{&bias_activation_block<T>, &context}), so the
// bias and the activation are applied while the GEMM's tile is still in cache.
template <typename T>
struct BiasActivation {
    Activation activation;
    T* a;            // f(z), (B, O) with rows ld apart; may be z
    T* z;            // the GEMM's output, bias added in place
    const T* bias;   // (O)
    index ld;
};
template <typename T>
void bias_activation_block(void* context, index i0, index i1, index j0, index j1);

// dz = da ⊙ f'(z) (dz may alias da), and d_bias = Σ_rows dz (+= when accumulate).
template <typename T>
void activation_bias_backward(Activation activation, T* dz, T* d_bias, const T* da,
                              const T* z, const T* a, index batch, index outputs,
                              bool accumulate);

}  // namespace fastmlp
