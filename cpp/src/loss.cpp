// loss.cpp — losses, gradients and heads; see loss.hpp for the formulas.
#include "fastmlp/loss.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fastmlp {

double loss_normalizer(Loss loss, double batch_weight, index outputs) {
    return loss == Loss::cross_entropy ? batch_weight : batch_weight * double(outputs);
}

template <typename T>
double weight_sum(const T* weight, index rows) {
    if (weight == nullptr) return double(rows);
    double sum = 0;
    for (index i = 0; i < rows; ++i) {
        const double w = double(weight[i]);
        require(w >= 0 && w <= std::numeric_limits<double>::max(),
                "sample weights must be finite and >= 0");
        sum += w;
    }
    require(sum <= std::numeric_limits<double>::max(), "sample weights: their sum overflows");
    return sum;
}

namespace {

// One row of softmax cross-entropy: returns −Σ t log softmax(p); writes the
// unscaled gradient softmax(p) · Σt − t, then times `scale`, into g when not null.
template <typename T>
double cross_entropy_row(const T* p, const T* t, T* g, index outputs, T scale) {
    T top = p[0];
    for (index k = 1; k < outputs; ++k) top = std::max(top, p[k]);
    double sum_exp = 0, target_sum = 0, dot = 0;
    for (index k = 0; k < outputs; ++k) {
        const T shifted = p[k] - top;  // read before g[k] is written: g may alias p
        const double e = std::exp(double(shifted));
        if (g) g[k] = T(e);  // kept for the gradient
        sum_exp += e;
        target_sum += double(t[k]);
        dot += double(t[k]) * double(shifted);
    }
    // −Σ t_k (p_k − top − log Σ e^(p − top))
    const double row_loss = target_sum * std::log(sum_exp) - dot;
    if (g != nullptr) {
        const double inv_sum = 1.0 / sum_exp;
        for (index k = 0; k < outputs; ++k)
            g[k] = scale * T(double(g[k]) * inv_sum * target_sum - double(t[k]));
    }
    return row_loss;
}

// The index of a row's first maximum, a NaN counting as the largest value (first
// NaN wins), as numpy.argmax decides.
// One pass without an early exit (a branch per element costs 4× the plain
// argmax); a second, only in the rare row that holds a NaN, finds the first one.
template <typename T>
index first_max(const T* row, index n) {
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

template <typename T>
T sigmoid_of(T x) {
    const T e = std::exp(-std::abs(x));
    return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}

}  // namespace

template <typename T>
double loss_forward_backward(Loss loss, const T* pred, const T* target, T* grad, index batch,
                             index outputs, double delta, const T* weight) {
    const double batch_weight = weight_sum(weight, batch);
    const double sum = loss_rows(loss, pred, target, grad, batch, outputs, delta, batch_weight, weight);
    const double normalizer = loss_normalizer(loss, batch_weight, outputs);
    return batch == 0 || outputs == 0 || !(normalizer > 0) ? 0.0 : sum / normalizer;
}

template <typename T>
double loss_rows(Loss loss, const T* pred, const T* target, T* grad, index rows, index outputs,
                 double delta, double batch_weight, const T* weight) {
    require(rows >= 0 && outputs >= 0, "loss: sizes must be non-negative");
    require(weight != nullptr || double(rows) <= batch_weight,
            "loss: the rows are part of the batch (rows <= batch)");
    require(batch_weight >= 0 && std::isfinite(batch_weight),
            "loss: the batch's weight must be finite and >= 0");
    checked_product(rows, outputs, "loss: batch × outputs overflows an index");
    require(loss != Loss::huber || (delta > 0 && std::isfinite(delta)),
            "loss: huber's delta must be positive and finite");
    if (rows == 0 || outputs == 0) return 0.0;
    const double normalizer = loss_normalizer(loss, batch_weight, outputs);
    // A batch of weight 0 (all its weights 0) has loss 0 and gradient 0. A row's
    // factor w_i · inv is formed in double and rounded to T once: weights of one give
    // the unweighted factor bit for bit, and tiny float32 weights (Σ w < 1e-38, whose
    // inv no float holds) still give factors near w_i / Σ w.
    const double inv = normalizer > 0 ? (loss == Loss::mse ? 2.0 : 1.0) / normalizer : 0.0;
    const T base = T(inv);
    const T d = T(delta);
    double total = 0;
    for (index i = 0; i < rows; ++i) {
        const T* p = pred + i * outputs;
        const T* t = target + i * outputs;
        T* g = grad == nullptr ? nullptr : grad + i * outputs;
        const T scale = weight == nullptr ? base : T(double(weight[i]) * inv);
        double row = 0;
        switch (loss) {
            case Loss::mse:
                for (index k = 0; k < outputs; ++k) {
                    const T diff = p[k] - t[k];
                    row += double(diff) * double(diff);
                    if (g) g[k] = scale * diff;
                }
                break;
            case Loss::cross_entropy:
                row = cross_entropy_row(p, t, g, outputs, scale);
                break;
            case Loss::binary_cross_entropy:
                for (index k = 0; k < outputs; ++k) {
                    const double x = double(p[k]), y = double(t[k]);
                    row += std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::abs(x)));
                    if (g) g[k] = scale * (sigmoid_of(p[k]) - t[k]);
                }
                break;
            case Loss::huber:
                for (index k = 0; k < outputs; ++k) {
                    const T diff = p[k] - t[k];
                    const double a = std::abs(double(diff));
                    row += a <= delta ? 0.5 * a * a : delta * (a - 0.5 * delta);
                    if (g) g[k] = scale * std::min(std::max(diff, -d), d);
                }
                break;
        }
        total += weight == nullptr ? row : row * double(weight[i]);
    }
    return total;
}

template <typename T>
double count_correct(Loss loss, const T* pred, const T* target, index batch, index outputs,
                     const T* weight) {
    require(batch >= 0 && outputs >= 0, "count_correct: sizes must be non-negative");
    checked_product(batch, outputs, "count_correct: batch × outputs overflows an index");
    double correct = 0;
    auto count = [&](index row, bool right) {  // without a branch on `right`: it is unpredictable
        correct += double(right) * (weight == nullptr ? 1.0 : double(weight[row]));
    };
    if (loss == Loss::cross_entropy) {
        require(outputs >= 1 || batch == 0, "count_correct: cross_entropy needs at least one column");
        for (index i = 0; i < batch; ++i) {
            const T* p = pred + i * outputs;
            const T* t = target + i * outputs;
            count(i, first_max(p, outputs) == first_max(t, outputs));
        }
    } else if (loss == Loss::binary_cross_entropy) {
        for (index i = 0; i < batch; ++i)
            for (index k = 0; k < outputs; ++k)
                count(i, (pred[i * outputs + k] > T(0)) == (target[i * outputs + k] > T(0.5)));
    }
    return correct;
}

template <typename T>
void softmax_rows(T* out, const T* z, index batch, index outputs) {
    require(batch >= 0 && outputs >= 1, "softmax: needs at least one column");
    checked_product(batch, outputs, "softmax: batch × outputs overflows an index");
    for (index i = 0; i < batch; ++i) {
        const T* row = z + i * outputs;
        T* o = out + i * outputs;
        const T top = *std::max_element(row, row + outputs);
        double sum = 0;
        for (index k = 0; k < outputs; ++k) sum += std::exp(double(row[k] - top));
        const double log_sum = std::log(sum);
        for (index k = 0; k < outputs; ++k) o[k] = T(std::exp(double(row[k] - top) - log_sum));
    }
}

#define FASTMLP_INSTANTIATE(T)                                                                 \
    template double weight_sum<T>(const T*, index);                                            \
    template double loss_forward_backward<T>(Loss, const T*, const T*, T*, index, index, double, \
                                             const T*);                                        \
    template double loss_rows<T>(Loss, const T*, const T*, T*, index, index, double, double,   \
                                 const T*);                                                    \
    template double count_correct<T>(Loss, const T*, const T*, index, index, const T*);        \
    template void softmax_rows<T>(T*, const T*, index, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
