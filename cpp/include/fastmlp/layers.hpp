// fastmlp/layers.hpp — the kernels of the layers between dense ones: layer norm,
// batch norm, dropout and the residual add, forward and backward side by side.
//
// Every array is row-major with rows contiguous: x, y, xhat, dx, dy are
// (rows, width); gain, bias, running_mean, running_var are (width).
//
// Layer norm (Ba et al. 2016; torch.nn.LayerNorm over the last dimension), per row r:
//   μ_r = mean_j x_rj,  σ²_r = mean_j (x_rj − μ_r)²  (biased),  rstd_r = 1/√(σ²_r + eps)
//   xhat = (x − μ_r) rstd_r,  y = gain ⊙ xhat + bias
//   backward: g = dy ⊙ gain;  dx = rstd_r (g − mean_j g − xhat mean_j (g ⊙ xhat))
//             d_gain = Σ_r dy ⊙ xhat,  d_bias = Σ_r dy
// Batch norm (Ioffe & Szegedy 2015; torch.nn.BatchNorm1d), per column c, training:
//   μ_c, σ²_c over the rows (biased), rstd_c, xhat, y as above; the running
//   statistics move by momentum m (torch's convention):
//   running_mean = (1 − m) running_mean + m μ_c,
//   running_var  = (1 − m) running_var + m σ²_c · rows / (rows − 1)  (unbiased)
//   backward: g = dy ⊙ gain;  dx = rstd_c (g − mean_r g − xhat mean_r (g ⊙ xhat))
//   eval: y = gain ⊙ (x − running_mean) / √(running_var + eps) + bias
// Dropout (Srivastava et al. 2014), inverted: y = x ⊙ mask / (1 − p), mask ∈ {0, 1}.
// Residual add (He et al. 2016): y = x + skip.
//
// d_gain and d_bias are written (=), or added to (+=) when accumulate. dx may
// alias dy; y may alias x in the dropout and residual kernels. Results do not
// depend on the thread count.
#pragma once

#include <cstdint>
#include <functional>

#include "fastmlp/common.hpp"
#include "fastmlp/random.hpp"

namespace fastmlp {

inline constexpr double norm_default_eps = 1e-5;       // torch's LayerNorm and BatchNorm1d
inline constexpr double batch_norm_default_momentum = 0.1;

// xhat and rstd (rows) are what backward reads. xhat may alias x; y may alias xhat
// or x (each row's statistics are taken before the row is written).
template <typename T>
void layer_norm_forward(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                        index rows, index width, double eps);

template <typename T>
void layer_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                         T* d_gain, T* d_bias, index rows, index width, bool accumulate);

// Sums n doubles in place across the ranks of data-parallel training, whose rows
// make up one batch together (fastmlp.distributed): batch norm's statistics then
// are the whole batch's. Every rank calls it at the same points, in the same order.
using SumAcrossRanks = std::function<void(double* values, index n)>;

// Training mode: batch statistics (rows >= 2, else std::invalid_argument). rstd is
// (width). running_mean / running_var are updated when not null (0 <= momentum <= 1).
// xhat may alias x; y may alias xhat or x (the statistics are taken first). With
// `across`, the batch is this rank's rows (>= 1) and the other ranks' (>= 2 in all):
// the column sums, then the centred squares about the batch's mean, are summed across
// the ranks (two calls).
template <typename T>
void batch_norm_forward_train(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                              T* running_mean, T* running_var, index rows, index width,
                              double eps, double momentum, const SumAcrossRanks* across = nullptr);

// Eval mode: the running statistics. y may alias x.
template <typename T>
void batch_norm_forward_eval(const T* x, const T* gain, const T* bias, const T* running_mean,
                             const T* running_var, T* y, index rows, index width, double eps);

// d_gain and d_bias get this rank's rows' part (the gradient's sum across ranks adds
// the rest); with `across`, the column sums that dx needs are the whole batch's (one call).
template <typename T>
void batch_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                         T* d_gain, T* d_bias, index rows, index width, bool accumulate,
                         const SumAcrossRanks* across = nullptr);

// n mask bytes (each 0 or 1) from rng, 0 <= p < 1: ⌈n/2⌉ draws of rng.next();
// element 2i takes the low 32 bits of draw i, element 2i + 1 its high 32 bits,
// and is kept (1) when those bits < keep_threshold(p) = ⌊(1 − p) · 2³²⌋
// (p = 0: every element kept, and nothing drawn).
std::uint64_t dropout_keep_threshold(double p);
void dropout_mask(Rng& rng, std::uint8_t* mask, index n, double p);

// y = x ⊙ mask / (1 − p); y may alias x.
template <typename T>
void dropout_forward(const T* x, const std::uint8_t* mask, T* y, index n, double p);

// dx = dy ⊙ mask / (1 − p); dx may alias dy.
template <typename T>
void dropout_backward(const T* dy, const std::uint8_t* mask, T* dx, index n, double p);

// y = x + skip; y may alias x or skip.
template <typename T>
void residual_add(const T* x, const T* skip, T* y, index n);

}  // namespace fastmlp
