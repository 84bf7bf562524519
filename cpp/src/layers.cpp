// layers.cpp — layer norm, batch norm, dropout and the residual add; see layers.hpp
// for the formulas.
//
// Statistics (row means and variances, column means and variances, the row sums of
// the backward passes, d_gain and d_bias) are summed in double whatever T is, so
// float32 stays accurate over 10^5 rows; variances are two-pass (the mean first,
// then the centred squares), never E[x²] − E[x]². Elementwise arithmetic runs in T.
//
// Threads: work on rows (layer norm, every normalising or dx pass) is split into
// fixed pieces of whole rows, so the stores stream along contiguous rows; column
// sums (batch statistics, d_gain, d_bias) into fixed blocks of columns, each column
// summing its rows in order; the elementwise kernels into fixed chunks. Each sum is
// made by one thread in a fixed order, so no result depends on the thread count.
// Batch norm therefore makes two passes (statistics by columns, then rows), and so
// do the backward passes (column sums first: dx may overwrite dy).
#include "fastmlp/layers.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

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
    checked_product(rows, width,
                    (std::string(kernel) + ": rows × width overflows an index").c_str());
}

void require_eps(const char* kernel, double eps) {
    require(eps >= 0 && std::isfinite(eps),
            std::string(kernel) + ": eps must be finite and >= 0, got " + std::to_string(eps));
}

// Row sums in double: `lanes` partial sums, element j into lane j % lanes (enough
// independent chains to hide the add latency: 4 AVX-512 or 8 AVX2 registers), folded
// pairwise at the end. A fixed order for every n, whatever the thread or the clone
// (up to FMA contraction, see common.hpp).
constexpr int lanes = 32;

// Written out (not a loop over the halving width) so that it unrolls into a few
// vector adds instead of a loop through memory: it runs once per row.
inline double fold(double* acc) {
    static_assert(lanes == 32, "fold halves 32 partial sums");
    for (int k = 0; k < 16; ++k) acc[k] += acc[k + 16];
    for (int k = 0; k < 8; ++k) acc[k] += acc[k + 8];
    for (int k = 0; k < 4; ++k) acc[k] += acc[k + 4];
    for (int k = 0; k < 2; ++k) acc[k] += acc[k + 2];
    return acc[0] + acc[1];
}

// Σ x[j] for j in [0, n).
template <typename T>
FASTMLP_CLONES double sum_of(const T* __restrict x, index n) {
    double acc[lanes] = {};
    index j = 0;
    for (; j + lanes <= n; j += lanes)
        for (int k = 0; k < lanes; ++k) acc[k] += double(x[j + k]);
    for (int k = 0; j < n; ++j, ++k) acc[k] += double(x[j]);
    return fold(acc);
}

// Σ (x[j] − mean)².
template <typename T>
FASTMLP_CLONES double centred_squares_of(const T* __restrict x, double mean, index n) {
    double acc[lanes] = {};
    index j = 0;
    for (; j + lanes <= n; j += lanes)
        for (int k = 0; k < lanes; ++k) {
            const double d = double(x[j + k]) - mean;
            acc[k] += d * d;
        }
    for (int k = 0; j < n; ++j, ++k) {
        const double d = double(x[j]) - mean;
        acc[k] += d * d;
    }
    return fold(acc);
}

// Σ a[j] · b[j], and Σ a[j] · b[j] · c[j] (two passes over a row in L1 are faster
// than one with both sums: GCC vectorizes each cleanly).
template <typename T>
FASTMLP_CLONES double dot_of(const T* __restrict a, const T* __restrict b, index n) {
    double acc[lanes] = {};
    index j = 0;
    for (; j + lanes <= n; j += lanes)
        for (int k = 0; k < lanes; ++k) acc[k] += double(a[j + k]) * double(b[j + k]);
    for (int k = 0; j < n; ++j, ++k) acc[k] += double(a[j]) * double(b[j]);
    return fold(acc);
}
template <typename T>
FASTMLP_CLONES double triple_dot_of(const T* __restrict a, const T* __restrict b,
                                    const T* __restrict c, index n) {
    double acc[lanes] = {};
    index j = 0;
    for (; j + lanes <= n; j += lanes)
        for (int k = 0; k < lanes; ++k)
            acc[k] += (double(a[j + k]) * double(b[j + k])) * double(c[j + k]);
    for (int k = 0; j < n; ++j, ++k) acc[k] += (double(a[j]) * double(b[j])) * double(c[j]);
    return fold(acc);
}

// One row of the normalisation: xhat[j] = ((x[j] − mean_hi) − mean_lo) · scale,
// y[j] = gain[j] · xhat[j] + bias[j], in one pass. The mean comes in two parts,
// mean_hi = T(mean) and mean_lo = T(mean − mean_hi): x − mean_hi is exact near the
// mean (Sterbenz), so a float32 xhat stays accurate even when the mean is large
// against the spread (a mean of 10⁴ rounded to float alone would shift xhat by up to
// 5e-4 σ⁻¹); for double, mean_lo is 0. The mean and scale are one value each (layer
// norm: [0]) or one per column (batch norm). xhat may be x; y may be xhat or x: each
// case its own loop, told that its pointers are distinct (restrict) so that it
// vectorizes.
template <bool per_column, typename T>
FASTMLP_CLONES void normalize_row(const T* x, const T* __restrict gain, const T* __restrict bias,
                                  T* xhat, T* y, const T* __restrict mean_hi,
                                  const T* __restrict mean_lo, const T* __restrict scale,
                                  index n) {
    auto at = [](const T* __restrict v, index j) { return per_column ? v[j] : v[0]; };
    auto normal = [&](T value, index j) {
        return ((value - at(mean_hi, j)) - at(mean_lo, j)) * at(scale, j);
    };
    if (y == xhat) {  // xhat is not kept: y alone, in place when x is y too
        if (y == x) {
            T* __restrict inout = y;
            for (index j = 0; j < n; ++j) inout[j] = gain[j] * normal(inout[j], j) + bias[j];
        } else {
            const T* __restrict in = x;
            T* __restrict out = y;
            for (index j = 0; j < n; ++j) out[j] = gain[j] * normal(in[j], j) + bias[j];
        }
    } else if (xhat == x || y == x) {  // one of the two in place
        T* __restrict inout = xhat == x ? xhat : y;
        T* __restrict other = xhat == x ? y : xhat;
        const bool in_xhat = xhat == x;
        for (index j = 0; j < n; ++j) {
            const T v = normal(inout[j], j);
            const T out = gain[j] * v + bias[j];
            inout[j] = in_xhat ? v : out;
            other[j] = in_xhat ? out : v;
        }
    } else {
        const T* __restrict in = x;
        T* __restrict xh = xhat;
        T* __restrict out = y;
        for (index j = 0; j < n; ++j) {
            const T v = normal(in[j], j);
            xh[j] = v;
            out[j] = gain[j] * v + bias[j];
        }
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
        for (index j = 0; j < n; ++j)
            out[j] = rstd * ((d[j] * gain[j] - mean_g) - xhat[j] * mean_gx);
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
        const T mean_hi = T(mean), mean_lo = T(mean - double(mean_hi)), rstd_t = T(rs);
        rstd[r] = rstd_t;
        normalize_row<false>(xr, gain, bias, xhr, y + r * width, &mean_hi, &mean_lo, &rstd_t,
                             width);
    }
}

// A buffer of n values of this thread's, kept between calls (the per-column
// statistics of batch norm, the column sums of the backward passes): no
// allocation per call once it has grown. A kernel that needs two takes them from
// two slots.
template <typename T, int slot = 0>
T* scratch(index n) {
    thread_local std::vector<T> buffer;
    if (index(buffer.size()) < n) buffer.resize(std::size_t(n));
    return buffer.data();
}

// Columns [j0, j1) of Σ_rows dy ⊙ xhat and Σ_rows dy into sum_gain and sum_bias, each
// column summed over the rows in order, in double. Reads only (dx may alias dy later).
template <typename T>
FASTMLP_CLONES void gain_bias_columns(const T* dy, const T* xhat, double* sum_gain,
                                      double* sum_bias, index rows, index width, index j0,
                                      index j1) {
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
        sum_gain[j0 + j] = acc_gain[j];
        sum_bias[j0 + j] = acc_bias[j];
    }
}

// Σ_rows dy ⊙ xhat and Σ_rows dy for every column (doubles, in parallel over column
// blocks), and d_gain, d_bias = (or += when accumulate) them.
template <typename T>
void gain_bias_sums(const T* dy, const T* xhat, double* sum_gain, double* sum_bias, T* d_gain,
                    T* d_bias, index rows, index width, bool accumulate) {
    const int nt = threads_for(double(rows) * double(width), layers_threshold);
    parallel_for(nt, ceil_div(width, column_block), [&](index b) {
        const index j0 = b * column_block, j1 = std::min(width, (b + 1) * column_block);
        gain_bias_columns(dy, xhat, sum_gain, sum_bias, rows, width, j0, j1);
        for (index j = j0; j < j1; ++j) {
            d_gain[j] = accumulate ? T(double(d_gain[j]) + sum_gain[j]) : T(sum_gain[j]);
            d_bias[j] = accumulate ? T(double(d_bias[j]) + sum_bias[j]) : T(sum_bias[j]);
        }
    });
}

// Rows per piece of the row-wise kernels: about elementwise_chunk elements.
index rows_per_piece(index width) {
    return std::max<index>(1, elementwise_chunk / std::max<index>(width, 1));
}

// f(begin, end) over [0, n) in fixed chunks: parallel only for long arrays.
template <typename F>
void for_each_chunk(index n, F f) {
    const int nt = threads_for(double(n), layers_threshold);
    parallel_for(nt, ceil_div(n, elementwise_chunk), [&](index c) {
        f(c * elementwise_chunk, std::min(n, (c + 1) * elementwise_chunk));
    });
}

// Column j's statistics from its mean and centred squares over `rows` rows.
template <typename T>
inline void finish_batch_statistics(index j, double mean, double squares, double rows, T* mean_hi,
                                    T* mean_lo, T* rstd, T* running_mean, T* running_var,
                                    double eps, double momentum) {
    const double variance = squares / rows;  // biased: the normalisation's
    mean_hi[j] = T(mean);
    mean_lo[j] = T(mean - double(mean_hi[j]));
    rstd[j] = T(1.0 / std::sqrt(variance + eps));
    if (running_mean != nullptr)
        running_mean[j] = T((1.0 - momentum) * double(running_mean[j]) + momentum * mean);
    if (running_var != nullptr)  // unbiased, as torch keeps it
        running_var[j] =
            T((1.0 - momentum) * double(running_var[j]) + momentum * (squares / (rows - 1)));
}

// Batch norm's training statistics for columns [j0, j1): each column's sum over the
// rows in order (the mean), then its centred squares (the variance), in double; the
// mean (in two parts, see normalize_row) and rstd per column, the running statistics
// moved.
template <typename T>
FASTMLP_CLONES void batch_statistics_columns(const T* x, T* mean_hi, T* mean_lo, T* rstd,
                                             T* running_mean, T* running_var, index rows,
                                             index width, index j0, index j1, double eps,
                                             double momentum) {
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
    for (index j = 0; j < n; ++j)
        finish_batch_statistics(j0 + j, mean[j], squares[j], double(rows), mean_hi, mean_lo, rstd,
                                running_mean, running_var, eps, momentum);
}

// Columns [j0, j1) of Σ_rows x, each summed over the rows in order, in double.
template <typename T>
FASTMLP_CLONES void column_sums(const T* x, double* sums, index rows, index width, index j0,
                                index j1) {
    const index n = j1 - j0;
    double acc[column_block] = {};
    for (index r = 0; r < rows; ++r) {
        const T* __restrict xr = x + r * width + j0;
        for (index j = 0; j < n; ++j) acc[j] += double(xr[j]);
    }
    std::copy(acc, acc + n, sums + j0);
}

// Columns [j0, j1) of Σ_rows (x − mean)², in double.
template <typename T>
FASTMLP_CLONES void centred_column_squares(const T* x, const double* mean, double* squares,
                                           index rows, index width, index j0, index j1) {
    const index n = j1 - j0;
    double acc[column_block] = {};
    for (index r = 0; r < rows; ++r) {
        const T* __restrict xr = x + r * width + j0;
        for (index j = 0; j < n; ++j) {
            const double d = double(xr[j]) - mean[j0 + j];
            acc[j] += d * d;
        }
    }
    std::copy(acc, acc + n, squares + j0);
}

// Batch norm's backward for rows [r0, r1), from the column sums Σ_r dy and
// Σ_r dy ⊙ xhat: mean_r g = gain · Σ dy / rows and mean_r (g ⊙ xhat) = gain ·
// Σ (dy ⊙ xhat) / rows, so dx = rstd · gain · ((dy − mean_dy) − xhat · mean_dyx),
// with scale = rstd · gain, mean_dy and mean_dyx per column. dx may be dy itself.
template <typename T>
FASTMLP_CLONES void batch_norm_backward_rows(const T* dy, const T* xhat, const T* scale,
                                             const T* mean_dy, const T* mean_dyx, T* dx,
                                             index width, index r0, index r1) {
    const T* __restrict s = scale;
    const T* __restrict m = mean_dy;
    const T* __restrict mx = mean_dyx;
    for (index r = r0; r < r1; ++r) {
        const index row = r * width;
        const T* __restrict xh = xhat + row;
        if (dx == dy) {
            T* __restrict inout = dx + row;
            for (index j = 0; j < width; ++j)
                inout[j] = s[j] * ((inout[j] - m[j]) - xh[j] * mx[j]);
        } else {
            const T* __restrict d = dy + row;
            T* __restrict out = dx + row;
            for (index j = 0; j < width; ++j) out[j] = s[j] * ((d[j] - m[j]) - xh[j] * mx[j]);
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

// Runs f(r0, r1) over fixed pieces of whole rows, in parallel for big arrays.
template <typename F>
void for_each_row_piece(index rows, index width, F f) {
    const index piece = rows_per_piece(width);
    const int nt = threads_for(double(rows) * double(width), layers_threshold);
    parallel_for(nt, ceil_div(rows, piece), [&](index p) {
        f(p * piece, std::min(rows, (p + 1) * piece));
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
    require(p >= 0 && p < 1,
            std::string(kernel) + ": p must be in [0, 1), got " + std::to_string(p));
}

}  // namespace

template <typename T>
void layer_norm_forward(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                        index rows, index width, double eps) {
    require_sizes("layer_norm_forward", rows, width);
    require_eps("layer_norm_forward", eps);
    if (rows == 0) return;
    require(width >= 1, "layer_norm_forward: a row needs at least one column (width 0)");
    for_each_row_piece(rows, width, [&](index r0, index r1) {
        layer_norm_rows(x, gain, bias, xhat, rstd, y, r0, r1, width, eps);
    });
}

template <typename T>
void layer_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                         T* d_gain, T* d_bias, index rows, index width, bool accumulate) {
    require_sizes("layer_norm_backward", rows, width);
    // Column sums first: dx may overwrite dy.
    double* sums = scratch<double, 1>(2 * width);
    gain_bias_sums(dy, xhat, sums, sums + width, d_gain, d_bias, rows, width, accumulate);
    if (rows == 0 || width == 0) return;
    for_each_row_piece(rows, width, [&](index r0, index r1) {
        for (index r = r0; r < r1; ++r) {
            const index row = r * width;
            // g = dy ⊙ gain: Σ_j g and Σ_j g ⊙ xhat, the products in double
            const double sum_g = dot_of(dy + row, gain, width);
            const double sum_gx = triple_dot_of(dy + row, gain, xhat + row, width);
            norm_backward_row(dy + row, xhat + row, gain, dx + row, rstd[r],
                              T(sum_g / double(width)), T(sum_gx / double(width)), width);
        }
    });
}

// Two passes: the statistics by column blocks (each column's rows in order), then xhat
// and y by pieces of whole rows (contiguous stores).
template <typename T>
void batch_norm_forward_train(const T* x, const T* gain, const T* bias, T* xhat, T* rstd, T* y,
                              T* running_mean, T* running_var, index rows, index width,
                              double eps, double momentum, const SumAcrossRanks* across) {
    require_sizes("batch_norm_forward_train", rows, width);
    require_eps("batch_norm_forward_train", eps);
    require(momentum >= 0 && momentum <= 1,
            "batch_norm_forward_train: momentum must be in [0, 1], got " +
                std::to_string(momentum));
    const char* too_few = " (one sample's variance is 0 and its unbiased variance undefined): "
                          "use a larger batch, or eval mode";
    require(rows >= (across != nullptr ? 1 : 2),
            "batch norm in training needs at least 2 samples per batch, got " +
                std::to_string(rows) + too_few);
    T* mean_hi = nullptr;
    if (across == nullptr) {
        mean_hi = scratch<T>(2 * width);
        T* mean_lo = mean_hi + width;
        for_each_column_block(rows, width, [&](index j0, index j1) {
            batch_statistics_columns(x, mean_hi, mean_lo, rstd, running_mean, running_var, rows,
                                     width, j0, j1, eps, momentum);
        });
    } else {  // the sums over this rank's rows, summed across the ranks: the batch's
        // Buffers of this call's own, not this thread's scratch: `across` runs Python (a
        // signal handler, say) that may run kernels on this thread, which would grow or
        // overwrite the scratch while its pointers are held here. Taken after the sums.
        std::vector<double> sums(std::size_t(2 * width + 1));
        double* mean = sums.data();
        double* squares = mean + width + 1;
        for_each_column_block(rows, width, [&](index j0, index j1) {
            column_sums(x, mean, rows, width, j0, j1);
        });
        mean[width] = double(rows);
        (*across)(mean, width + 1);
        const double total = mean[width];
        require(total >= 2, "batch norm in training needs at least 2 samples per batch, got " +
                                std::to_string(index(total)) + " on all ranks together" + too_few);
        for (index j = 0; j < width; ++j) mean[j] /= total;
        for_each_column_block(rows, width, [&](index j0, index j1) {
            centred_column_squares(x, mean, squares, rows, width, j0, j1);
        });
        (*across)(squares, width);
        mean_hi = scratch<T>(2 * width);
        for (index j = 0; j < width; ++j)
            finish_batch_statistics(j, mean[j], squares[j], total, mean_hi, mean_hi + width, rstd,
                                    running_mean, running_var, eps, momentum);
    }
    const T* mean_lo = mean_hi + width;
    for_each_row_piece(rows, width, [&](index r0, index r1) {
        for (index r = r0; r < r1; ++r)
            normalize_row<true>(x + r * width, gain, bias, xhat + r * width, y + r * width,
                                mean_hi, mean_lo, rstd, width);
    });
}

template <typename T>
void batch_norm_forward_eval(const T* x, const T* gain, const T* bias, const T* running_mean,
                             const T* running_var, T* y, index rows, index width, double eps) {
    require_sizes("batch_norm_forward_eval", rows, width);
    require_eps("batch_norm_forward_eval", eps);
    T* inverse_std = scratch<T>(2 * width);
    T* zeros = inverse_std + width;  // running_mean is exact in T: no low part
    for (index j = 0; j < width; ++j) {
        inverse_std[j] = T(1.0 / std::sqrt(double(running_var[j]) + eps));
        zeros[j] = T(0);
    }
    // y = gain ⊙ (x − running_mean) / √(running_var + eps) + bias
    for_each_row_piece(rows, width, [&](index r0, index r1) {
        for (index r = r0; r < r1; ++r)
            normalize_row<true>(x + r * width, gain, bias, y + r * width, y + r * width,
                                running_mean, zeros, inverse_std, width);
    });
}

// Two passes: the column sums by column blocks, then dx by pieces of whole rows.
template <typename T>
void batch_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* gain, T* dx,
                         T* d_gain, T* d_bias, index rows, index width, bool accumulate,
                         const SumAcrossRanks* across) {
    require_sizes("batch_norm_backward", rows, width);
    double* sums = scratch<double, 1>(2 * width + 1);
    gain_bias_sums(dy, xhat, sums, sums + width, d_gain, d_bias, rows, width, accumulate);
    double total = double(rows);
    std::vector<double> batch;  // across: the batch's sums, in this call's own buffer (see forward)
    if (across != nullptr) {  // the batch's sums; d_gain and d_bias keep this rank's part
        batch.assign(sums, sums + 2 * width);
        batch.push_back(total);
        (*across)(batch.data(), 2 * width + 1);
        total = batch[std::size_t(2 * width)];
        sums = batch.data();
    }
    if (rows == 0 || width == 0) return;
    T* per_column = scratch<T>(3 * width);
    T* scale = per_column;
    T* mean_dy = per_column + width;
    T* mean_dyx = per_column + 2 * width;
    for (index j = 0; j < width; ++j) {
        scale[j] = T(double(rstd[j]) * double(gain[j]));
        mean_dyx[j] = T(sums[j] / total);
        mean_dy[j] = T(sums[width + j] / total);
    }
    for_each_row_piece(rows, width, [&](index r0, index r1) {
        batch_norm_backward_rows(dy, xhat, scale, mean_dy, mean_dyx, dx, width, r0, r1);
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
    // A local copy of the generator: its state stays in registers (the byte stores
    // into mask could alias rng's state otherwise, forcing a reload every draw).
    Rng local = rng;
    index i = 0;
    for (; i + 2 <= n; i += 2) {
        const std::uint64_t draw = local.next();
        mask[i] = (draw & 0xffffffffu) < threshold;
        mask[i + 1] = (draw >> 32) < threshold;
    }
    if (i < n) mask[i] = (local.next() & 0xffffffffu) < threshold;
    rng = local;
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
    for_each_chunk(n,
                   [=](index begin, index end) { masked_scale(dy, mask, dx, scale, begin, end); });
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
                                              index, index, double, double,                      \
                                              const SumAcrossRanks*);                            \
    template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*,   \
                                             T*, index, index, double);                          \
    template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*,     \
                                         index, index, bool, const SumAcrossRanks*);             \
    template void dropout_forward<T>(const T*, const std::uint8_t*, T*, index, double);          \
    template void dropout_backward<T>(const T*, const std::uint8_t*, T*, index, double);         \
    template void residual_add<T>(const T*, const T*, T*, index);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
