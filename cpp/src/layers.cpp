// layers.cpp — layer norm, batch norm, dropout and the residual add; see layers.hpp
// for the formulas.
//
// Statistics (row means and variances, column means and variances, the row sums of
// the backward passes, d_gain and d_bias) are summed in double whatever T is, so
// float32 stays accurate over 10^5 rows; variances are two-pass (the mean first,
// then the centred squares), never E[x²] − E[x]². Elementwise arithmetic runs in T.
//
// Threads: layer norm splits the rows, batch norm and the column sums of the
// backward passes split the columns into fixed blocks, the elementwise kernels
// split the elements into fixed chunks; each row or column is summed by one
// thread in a fixed order, so no result depends on the thread count.
#include "fastmlp/layers.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "fastmlp/threading.hpp"

namespace fastmlp {
namespace {

// Work (elements) below which a kernel stays on one thread: as the activations'.
constexpr double layers_threshold = 1 << 16;
// Elements per piece of the elementwise kernels.
constexpr index elementwise_chunk = 1 << 14;
// Columns per block in the column-wise kernels: the block's double accumulators
// (a few times 64 · 8 bytes) stay in registers or L1, and a row of the block is
// whole cache lines.
constexpr index column_block = 64;

void require_sizes(const char* kernel, index rows, index width) {
    require(rows >= 0 && width >= 0,
            std::string(kernel) + ": rows and width must be non-negative, got " +
                std::to_string(rows) + " and " + std::to_string(width));
    checked_product(rows, width, (std::string(kernel) + ": rows × width overflows an index").c_str());
}

void require_eps(const char* kernel, double eps) {
    require(eps >= 0 && std::isfinite(eps),
            std::string(kernel) + ": eps must be finite and >= 0, got " + std::to_string(eps));
}

// Σ x[j] for j in [0, n), in double: 16 partial sums (a vector register or two,
// several in flight), combined pairwise at the end. A fixed order for every n.
template <typename T>
FASTMLP_CLONES double sum_of(const T* __restrict x, index n) {
    double acc[16] = {};
    index j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; ++k) acc[k] += double(x[j + k]);
    for (int k = 0; j < n; ++j, ++k) acc[k] += double(x[j]);
    for (int width = 8; width >= 1; width /= 2)
        for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
    return acc[0];
}

// Σ (x[j] − mean)², in double, in the same order as sum_of.
template <typename T>
FASTMLP_CLONES double centred_squares_of(const T* __restrict x, double mean, index n) {
    double acc[16] = {};
    index j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; ++k) {
            const double d = double(x[j + k]) - mean;
            acc[k] += d * d;
        }
    for (int k = 0; j < n; ++j, ++k) {
        const double d = double(x[j]) - mean;
        acc[k] += d * d;
    }
    for (int width = 8; width >= 1; width /= 2)
        for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
    return acc[0];
}

// Σ g[j] and Σ g[j]·xhat[j] with g = dy ⊙ gain, in double, in sum_of's order.
template <typename T>
FASTMLP_CLONES void gain_sums_of(const T* __restrict dy, const T* __restrict gain,
                                 const T* __restrict xhat, index n, double& sum_g,
                                 double& sum_gx) {
    double acc_g[16] = {}, acc_gx[16] = {};
    index j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; ++k) {
            const double g = double(dy[j + k] * gain[j + k]);
            acc_g[k] += g;
            acc_gx[k] += g * double(xhat[j + k]);
        }
    for (int k = 0; j < n; ++j, ++k) {
        const double g = double(dy[j] * gain[j]);
        acc_g[k] += g;
        acc_gx[k] += g * double(xhat[j]);
    }
    for (int width = 8; width >= 1; width /= 2)
        for (int k = 0; k < width; ++k) {
            acc_g[k] += acc_g[k + width];
            acc_gx[k] += acc_gx[k + width];
        }
    sum_g = acc_g[0];
    sum_gx = acc_gx[0];
}

// out[j] = (x[j] − mean) · scale over a row; out may be x itself.
template <typename T>
FASTMLP_CLONES void normalize_row(const T* x, T* out, T mean, T scale, index n) {
    if (out == x) {
        T* __restrict inout = out;
        for (index j = 0; j < n; ++j) inout[j] = (inout[j] - mean) * scale;
    } else {
        const T* __restrict in = x;
        T* __restrict o = out;
        for (index j = 0; j < n; ++j) o[j] = (in[j] - mean) * scale;
    }
}

// y[j] = gain[j] · xhat[j] + bias[j] over a row; y may be xhat itself.
template <typename T>
FASTMLP_CLONES void scale_shift_row(const T* xhat, const T* __restrict gain,
                                    const T* __restrict bias, T* y, index n) {
    if (y == xhat) {
        T* __restrict inout = y;
        for (index j = 0; j < n; ++j) inout[j] = gain[j] * inout[j] + bias[j];
    } else {
        const T* __restrict in = xhat;
        T* __restrict out = y;
        for (index j = 0; j < n; ++j) out[j] = gain[j] * in[j] + bias[j];
    }
}

// dx[j] = rstd · ((dy[j] · gain[j] − mean_g) − xhat[j] · mean_gx); dx may be dy itself.
template <typename T>
FASTMLP_CLONES void norm_backward_row(const T* dy, const T* __restrict xhat,
                                      const T* __restrict gain, T* dx, T rstd, T mean_g,
                                      T mean_gx, index n) {
    if (dx == dy) {
        T* __restrict inout = dx;
        for (index j = 0; j < n; ++j)
            inout[j] = rstd * ((inout[j] * gain[j] - mean_g) - xhat[j] * mean_gx);
    } else {
        const T* __restrict d = dy;
        T* __restrict out = dx;
        for (index j = 0; j < n; ++j) out[j] = rstd * ((d[j] * gain[j] - mean_g) - xhat[j] * mean_gx);
    }
}

// Rows [r0, r1) of layer norm's forward.
template <typename T>
void layer_norm_rows(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                     index r0, index r1, index width, double eps) {
    for (index r = r0; r < r1; ++r) {
        const T* xr = x + r * width;
        T* xhr = xhat + r * width;
        const double mean = sum_of(xr, width) / double(width);
        const double variance = centred_squares_of(xr, mean, width) / double(width);
        const double rs = 1.0 / std::sqrt(variance + eps);
        rstd[r] = T(rs);
        normalize_row(xr, xhr, T(mean), T(rs), width);
        scale_shift_row(xhr, gain, bias, y + r * width, width);
    }
}

// Columns [j0, j1) of d_gain (+)= Σ_rows dy ⊙ xhat and d_bias (+)= Σ_rows dy, each
// column summed over the rows in order, in double.
template <typename T>
FASTMLP_CLONES void gain_bias_columns(const T* dy, const T* xhat, T* d_gain, T* d_bias,
                                      index rows, index width, index j0, index j1,
                                      bool accumulate) {
    double acc_gain[column_block] = {}, acc_bias[column_block] = {};
    const index n = j1 - j0;
    for (index r = 0; r < rows; ++r) {
        const T* __restrict d = dy + r * width + j0;
        const T* __restrict xh = xhat + r * width + j0;
        for (index j = 0; j < n; ++j) {
            acc_gain[j] += double(d[j]) * double(xh[j]);
            acc_bias[j] += double(d[j]);
        }
    }
    for (index j = 0; j < n; ++j) {
        d_gain[j0 + j] = accumulate ? T(double(d_gain[j0 + j]) + acc_gain[j]) : T(acc_gain[j]);
        d_bias[j0 + j] = accumulate ? T(double(d_bias[j0 + j]) + acc_bias[j]) : T(acc_bias[j]);
    }
}

// d_gain and d_bias over every column, in parallel over column blocks.
template <typename T>
void gain_bias_sums(const T* dy, const T* xhat, T* d_gain, T* d_bias, index rows, index width,
                    bool accumulate) {
    const int nt = threads_for(double(rows) * double(width), layers_threshold);
    parallel_for(nt, ceil_div(width, column_block), [&](index b) {
        gain_bias_columns(dy, xhat, d_gain, d_bias, rows, width, b * column_block,
                          std::min(width, (b + 1) * column_block), accumulate);
    });
}

// Rows per piece of the row-wise kernels: about elementwise_chunk elements.
index rows_per_piece(index width) { return std::max<index>(1, elementwise_chunk / std::max<index>(width, 1)); }

// f(begin, end) over [0, n) in fixed chunks: parallel only for long arrays.
template <typename F>
void for_each_chunk(index n, F f) {
    const int nt = threads_for(double(n), layers_threshold);
    parallel_for(nt, ceil_div(n, elementwise_chunk), [&](index c) {
        f(c * elementwise_chunk, std::min(n, (c + 1) * elementwise_chunk));
    });
}

// Batch norm's training statistics and output for columns [j0, j1): column sums
// over the rows in order (the mean, then the centred squares), then xhat and y.
template <typename T>
FASTMLP_CLONES void batch_norm_train_columns(const T* x, const T* gain, const T* bias, T* xhat,
                                             T* rstd, T* y, T* running_mean, T* running_var,
                                             index rows, index width, index j0, index j1,
                                             double eps, double momentum) {
    const index n = j1 - j0;
    double mean[column_block] = {}, squares[column_block] = {};
    for (index r = 0; r < rows; ++r) {
        const T* __restrict xr = x + r * width + j0;
        for (index j = 0; j < n; ++j) mean[j] += double(xr[j]);
    }
    for (index j = 0; j < n; ++j) mean[j] /= double(rows);
    for (index r = 0; r < rows; ++r) {
        const T* __restrict xr = x + r * width + j0;
        for (index j = 0; j < n; ++j) {
            const double d = double(xr[j]) - mean[j];
            squares[j] += d * d;
        }
    }
    T mean_t[column_block], rstd_t[column_block];
    for (index j = 0; j < n; ++j) {
        const double variance = squares[j] / double(rows);  // biased: the normalisation's
        const double rs = 1.0 / std::sqrt(variance + eps);
        mean_t[j] = T(mean[j]);
        rstd_t[j] = T(rs);
        rstd[j0 + j] = T(rs);
        if (running_mean != nullptr)
            running_mean[j0 + j] =
                T((1.0 - momentum) * double(running_mean[j0 + j]) + momentum * mean[j]);
        if (running_var != nullptr)  // unbiased, as torch keeps it
            running_var[j0 + j] = T((1.0 - momentum) * double(running_var[j0 + j]) +
                                    momentum * (squares[j] / double(rows - 1)));
    }
    const T* __restrict g = gain + j0;
    const T* __restrict b = bias + j0;
    for (index r = 0; r < rows; ++r) {
        const index row = r * width + j0;
        if (xhat + row == x + row && y + row == x + row) {  // all in place
            T* __restrict inout = xhat + row;
            for (index j = 0; j < n; ++j) inout[j] = g[j] * ((inout[j] - mean_t[j]) * rstd_t[j]) + b[j];
        } else {
            for (index j = 0; j < n; ++j) xhat[row + j] = (x[row + j] - mean_t[j]) * rstd_t[j];
            for (index j = 0; j < n; ++j) y[row + j] = g[j] * xhat[row + j] + b[j];
        }
    }
}

// Batch norm in eval mode for columns [j0, j1): y = (x − running_mean) · scale + bias,
// scale = gain / √(running_var + eps).
template <typename T>
FASTMLP_CLONES void batch_norm_eval_columns(const T* x, const T* gain, const T* bias,
                                            const T* running_mean, const T* running_var, T* y,
                                            index rows, index width, index j0, index j1,
                                            double eps) {
    const index n = j1 - j0;
    T mean_t[column_block], scale_t[column_block], bias_t[column_block];
    for (index j = 0; j < n; ++j) {
        mean_t[j] = running_mean[j0 + j];
        scale_t[j] = T(double(gain[j0 + j]) / std::sqrt(double(running_var[j0 + j]) + eps));
        bias_t[j] = bias[j0 + j];
    }
    for (index r = 0; r < rows; ++r) {
        const index row = r * width + j0;
        if (y == x) {
            T* __restrict inout = y + row;
            for (index j = 0; j < n; ++j) inout[j] = (inout[j] - mean_t[j]) * scale_t[j] + bias_t[j];
        } else {
            const T* __restrict in = x + row;
            T* __restrict out = y + row;
            for (index j = 0; j < n; ++j) out[j] = (in[j] - mean_t[j]) * scale_t[j] + bias_t[j];
        }
    }
}

// Batch norm's backward for columns [j0, j1): with Σ_r dy and Σ_r dy ⊙ xhat per
// column (in double, rows in order), mean_r g = gain · Σ dy / rows and
// mean_r (g ⊙ xhat) = gain · Σ dy ⊙ xhat / rows, so
//   dx = rstd · gain · (dy − Σ dy / rows − xhat · Σ (dy ⊙ xhat) / rows).
// The sums are read before dx is written (dx may alias dy).
template <typename T>
FASTMLP_CLONES void batch_norm_backward_columns(const T* dy, const T* xhat, const T* rstd,
                                                const T* gain, T* dx, T* d_gain, T* d_bias,
                                                index rows, index width, index j0, index j1,
                                                bool accumulate) {
    const index n = j1 - j0;
    double acc_gain[column_block] = {}, acc_bias[column_block] = {};
    for (index r = 0; r < rows; ++r) {
        const T* __restrict d = dy + r * width + j0;
        const T* __restrict xh = xhat + r * width + j0;
        for (index j = 0; j < n; ++j) {
            acc_gain[j] += double(d[j]) * double(xh[j]);
            acc_bias[j] += double(d[j]);
        }
    }
    T scale_t[column_block], mean_dy[column_block], mean_dyx[column_block];
    for (index j = 0; j < n; ++j) {
        scale_t[j] = T(double(rstd[j0 + j]) * double(gain[j0 + j]));
        mean_dy[j] = T(acc_bias[j] / double(rows));
        mean_dyx[j] = T(acc_gain[j] / double(rows));
        d_gain[j0 + j] = accumulate ? T(double(d_gain[j0 + j]) + acc_gain[j]) : T(acc_gain[j]);
        d_bias[j0 + j] = accumulate ? T(double(d_bias[j0 + j]) + acc_bias[j]) : T(acc_bias[j]);
    }
    for (index r = 0; r < rows; ++r) {
        const index row = r * width + j0;
        const T* __restrict xh = xhat + row;
        if (dx == dy) {
            T* __restrict inout = dx + row;
            for (index j = 0; j < n; ++j)
                inout[j] = scale_t[j] * ((inout[j] - mean_dy[j]) - xh[j] * mean_dyx[j]);
        } else {
            const T* __restrict d = dy + row;
            T* __restrict out = dx + row;
            for (index j = 0; j < n; ++j)
                out[j] = scale_t[j] * ((d[j] - mean_dy[j]) - xh[j] * mean_dyx[j]);
        }
    }
}

// Runs f(j0, j1) over fixed column blocks of [0, width), in parallel for big arrays.
template <typename F>
void for_each_column_block(index rows, index width, F f) {
    const int nt = threads_for(double(rows) * double(width), layers_threshold);
    parallel_for(nt, ceil_div(width, column_block), [&](index b) {
        f(b * column_block, std::min(width, (b + 1) * column_block));
    });
}

// y = x ⊙ mask · scale over [begin, end); y may be x itself.
template <typename T>
FASTMLP_CLONES void masked_scale(const T* x, const std::uint8_t* __restrict mask, T* y, T scale,
                                 index begin, index end) {
    if (y == x) {
        T* __restrict inout = y;
        for (index i = begin; i < end; ++i) inout[i] = mask[i] ? inout[i] * scale : T(0);
    } else {
        const T* __restrict in = x;
        T* __restrict out = y;
        for (index i = begin; i < end; ++i) out[i] = mask[i] ? in[i] * scale : T(0);
    }
}

void require_dropout_p(const char* kernel, double p) {
    require(p >= 0 && p < 1, std::string(kernel) + ": p must be in [0, 1), got " + std::to_string(p));
}

}  // namespace

template <typename T>
void layer_norm_forward(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                        index rows, index width, double eps) {
    require_sizes("layer_norm_forward", rows, width);
    require_eps("layer_norm_forward", eps);
    if (rows == 0) return;
    require(width >= 1, "layer_norm_forward: a row needs at least one column (width 0)");
    const index piece = rows_per_piece(width);
    const int nt = threads_for(double(rows) * double(width), layers_threshold);
    parallel_for(nt, ceil_div(rows, piece), [&](index p) {
        layer_norm_rows(x, gain, bias, xhat, rstd, y, p * piece, std::min(rows, (p + 1) * piece),
                        width, eps);
    });
}

template <typename T>
void layer_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                         T* d_gain, T* d_bias, index rows, index width, bool accumulate) {
    require_sizes("layer_norm_backward", rows, width);
    // Column sums first: dx may overwrite dy.
    gain_bias_sums(dy, xhat, d_gain, d_bias, rows, width, accumulate);
    if (rows == 0 || width == 0) return;
    const index piece = rows_per_piece(width);
    const int nt = threads_for(double(rows) * double(width), layers_threshold);
    parallel_for(nt, ceil_div(rows, piece), [&](index p) {
        for (index r = p * piece; r < std::min(rows, (p + 1) * piece); ++r) {
            const index row = r * width;
            double sum_g, sum_gx;
            gain_sums_of(dy + row, gain, xhat + row, width, sum_g, sum_gx);
            norm_backward_row(dy + row, xhat + row, gain, dx + row, rstd[r],
                              T(sum_g / double(width)), T(sum_gx / double(width)), width);
        }
    });
}

template <typename T>
void batch_norm_forward_train(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                              T* running_mean, T* running_var, index rows, index width,
                              double eps, double momentum) {
    require_sizes("batch_norm_forward_train", rows, width);
    require_eps("batch_norm_forward_train", eps);
    require(momentum >= 0 && momentum <= 1,
            "batch_norm_forward_train: momentum must be in [0, 1], got " + std::to_string(momentum));
    require(rows >= 2, "batch norm in training needs at least 2 samples per batch, got " +
                           std::to_string(rows) +
                           " (one sample's variance is 0 and its unbiased variance undefined): "
                           "use a larger batch, or eval mode");
    for_each_column_block(rows, width, [&](index j0, index j1) {
        batch_norm_train_columns(x, gain, bias, xhat, rstd, y, running_mean, running_var, rows,
                                 width, j0, j1, eps, momentum);
    });
}

template <typename T>
void batch_norm_forward_eval(const T* x, const T* gain, const T* bias, const T* running_mean,
                             const T* running_var, T* y, index rows, index width, double eps) {
    require_sizes("batch_norm_forward_eval", rows, width);
    require_eps("batch_norm_forward_eval", eps);
    for_each_column_block(rows, width, [&](index j0, index j1) {
        batch_norm_eval_columns(x, gain, bias, running_mean, running_var, y, rows, width, j0, j1,
                                eps);
    });
}

template <typename T>
void batch_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                         T* d_gain, T* d_bias, index rows, index width, bool accumulate) {
    require_sizes("batch_norm_backward", rows, width);
    require(rows >= 1 || width == 0, "batch_norm_backward: needs at least one row");
    for_each_column_block(rows, width, [&](index j0, index j1) {
        batch_norm_backward_columns(dy, xhat, rstd, gain, dx, d_gain, d_bias, rows, width, j0, j1,
                                    accumulate);
    });
}

std::uint64_t dropout_keep_threshold(double p) {
    require_dropout_p("dropout_keep_threshold", p);
    return std::uint64_t(std::floor((1.0 - p) * 4294967296.0));
}

// The generator is sequential, so the mask is drawn on one thread (about a
// nanosecond a pair of elements).
void dropout_mask(Rng& rng, std::uint8_t* mask, index n, double p) {
    require(n >= 0, "dropout_mask: n must be non-negative, got " + std::to_string(n));
    const std::uint64_t threshold = dropout_keep_threshold(p);
    if (p == 0) {
        std::fill(mask, mask + n, std::uint8_t(1));
        return;
    }
    index i = 0;
    for (; i + 2 <= n; i += 2) {
        const std::uint64_t draw = rng.next();
        mask[i] = (draw & 0xffffffffu) < threshold;
        mask[i + 1] = (draw >> 32) < threshold;
    }
    if (i < n) mask[i] = (rng.next() & 0xffffffffu) < threshold;
}

template <typename T>
void dropout_forward(const T* x, const std::uint8_t* mask, T* y, index n, double p) {
    require(n >= 0, "dropout_forward: n must be non-negative, got " + std::to_string(n));
    require_dropout_p("dropout_forward", p);
    const T scale = T(1.0 / (1.0 - p));
    for_each_chunk(n, [=](index begin, index end) { masked_scale(x, mask, y, scale, begin, end); });
}

template <typename T>
void dropout_backward(const T* dy, const std::uint8_t* mask, T* dx, index n, double p) {
    require(n >= 0, "dropout_backward: n must be non-negative, got " + std::to_string(n));
    require_dropout_p("dropout_backward", p);
    const T scale = T(1.0 / (1.0 - p));
    for_each_chunk(n, [=](index begin, index end) { masked_scale(dy, mask, dx, scale, begin, end); });
}

namespace {
template <typename T>
FASTMLP_CLONES void add_range(const T* x, const T* skip, T* y, index begin, index end) {
    if (y == x || y == skip) {  // in place: y += the other
        T* __restrict inout = y;
        const T* __restrict other = y == x ? skip : x;
        if (other == y) {
            for (index i = begin; i < end; ++i) inout[i] = inout[i] + inout[i];
        } else {
            for (index i = begin; i < end; ++i) inout[i] = inout[i] + other[i];
        }
    } else {
        const T* __restrict a = x;
        const T* __restrict b = skip;
        T* __restrict out = y;
        for (index i = begin; i < end; ++i) out[i] = a[i] + b[i];
    }
}
}  // namespace

template <typename T>
void residual_add(const T* x, const T* skip, T* y, index n) {
    require(n >= 0, "residual_add: n must be non-negative, got " + std::to_string(n));
    for_each_chunk(n, [=](index begin, index end) { add_range(x, skip, y, begin, end); });
}

#define FASTMLP_INSTANTIATE(T)                                                                   \
    template void layer_norm_forward<T>(const T*, const T*, const T*, T*, T*, T*, index, index,  \
                                        double);                                                 \
    template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*,     \
                                         index, index, bool);                                    \
    template void batch_norm_forward_train<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*,  \
                                              index, index, double, double);                     \
    template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*,   \
                                             T*, index, index, double);                          \
    template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*,     \
                                         index, index, bool);                                    \
    template void dropout_forward<T>(const T*, const std::uint8_t*, T*, index, double);          \
    template void dropout_backward<T>(const T*, const std::uint8_t*, T*, index, double);         \
    template void residual_add<T>(const T*, const T*, T*, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
