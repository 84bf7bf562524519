// fastmlp/loss.hpp — losses, their gradients, and the classification heads.
//
// pred is the network's last output (B samples × O outputs); target is dense,
// of the same shape. Every loss is a mean, as in PyTorch:
//   mse                  L = (1/BO) Σ (p − t)²                 dL/dp = 2 (p − t) / BO
//   cross_entropy        L = (1/B) Σ_rows −Σ_k t_k log softmax(p)_k
//                        dL/dp = (softmax(p) · Σ_k t_k − t) / B   (softmax and CE fused)
//   binary_cross_entropy L = (1/BO) Σ max(p, 0) − p t + log(1 + e^−|p|)   (from logits)
//                        dL/dp = (σ(p) − t) / BO
//   huber (δ > 0)        L = (1/BO) Σ ½ d² if |d| ≤ δ else δ (|d| − δ/2),  d = p − t
//                        dL/dp = clamp(d, −δ, δ) / BO
// The two cross-entropies take logits: the output layer stays linear and the
// head (softmax or sigmoid) is applied inside the loss, stably (log-sum-exp).
//
// Sample weights w (one per row, >= 0) make every mean a weighted one: a row's
// terms are multiplied by w_i and B becomes W = Σ w_i (mse: L = (1/WO) Σ_i w_i
// Σ_k (p − t)², dL/dp = 2 w_i (p − t) / WO; the others alike). All-ones weights
// give the unweighted results bit for bit; scaling every weight by c > 0 changes
// nothing but rounding (a power of two: nothing at all, down to weights whose sum
// is ~1e-300). When W is 0 the loss and its gradient are 0.
#pragma once

#include <string>

#include "fastmlp/common.hpp"
#include "fastmlp/names.hpp"

namespace fastmlp {

enum class Loss { mse, cross_entropy, binary_cross_entropy, huber };

inline constexpr NameTable<Loss, 4> loss_names{
    "loss",
    {{{Loss::mse, "mse"},
      {Loss::cross_entropy, "cross_entropy"},
      {Loss::binary_cross_entropy, "binary_cross_entropy"},
      {Loss::huber, "huber"}}}};
static_assert(loss_names.in_enum_order());

// Throws std::invalid_argument naming the choices.
inline Loss loss_from_name(const std::string& name) { return loss_names.from_name(name); }

// What the mean divides by: the batch's weight W (B when unweighted) for
// cross_entropy, W·O for the others.
double loss_normalizer(Loss loss, double batch_weight, index outputs);

// Σ w_i over `rows` weights, in order, in double (rows itself when weight is null);
// throws std::invalid_argument if a weight is negative, NaN or infinite.
template <typename T>
double weight_sum(const T* weight, index rows);

// The mean loss over the batch (weighted when weight, B values, is not null);
// when grad is not null, also dL/dpred into grad (B, O), which may alias pred.
// Sums run in a fixed order (double per row).
template <typename T>
double loss_forward_backward(Loss loss, const T* pred, const T* target, T* grad, index batch,
                             index outputs, double delta, const T* weight = nullptr);

// Rows [0, rows) of a batch whose weight is batch_weight (its row count when
// unweighted; else Σ w over all its rows, of which `weight` holds these rows'):
// returns their loss summed, each row's times its weight (not yet divided by
// loss_normalizer(loss, batch_weight, outputs)), and writes their part of
// dL/dpred for the whole batch's mean into grad when it is not null. A batch cut
// into pieces gets the same gradient, row for row, as in one call.
template <typename T>
double loss_rows(Loss loss, const T* pred, const T* target, T* grad, index rows, index outputs,
                 double delta, double batch_weight, const T* weight = nullptr);

// How many predictions are right, each counted with its row's weight when weight
// is not null: cross_entropy counts rows whose argmax (the first maximum; a NaN
// counts as the largest, as in numpy.argmax) matches the target's; binary_cross_entropy counts elements with (p > 0) == (t > 0.5).
// Other losses: 0.
template <typename T>
double count_correct(Loss loss, const T* pred, const T* target, index batch, index outputs,
                     const T* weight = nullptr);

// Row-wise softmax (B, O); out may alias z.
template <typename T>
void softmax_rows(T* out, const T* z, index batch, index outputs);

}  // namespace fastmlp
