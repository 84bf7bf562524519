// bindings/kernels.cpp — the kernels of fastmlp._core, one binding each, and
// how they run (threads, GEMM kernel, build info).
//
// Each binding checks what C++ cannot (dtype, shape, layout, writability,
// outputs overlapping inputs) and calls the kernel with the GIL released
// (arrays.hpp: dispatch). The Python layer (fastmlp.kernels) validates user
// input first; these checks are the second line.
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "fastmlp/activation.hpp"
#include "fastmlp/build_info.hpp"
#include "fastmlp/gemm.hpp"
#include "fastmlp/layers.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/threading.hpp"

namespace fastmlp::bindings {
namespace {

// c (M, N) = alpha · op(a) (M, K) · op(b) (K, N) + beta · c; c shares no memory with a or b.
void gemm_binding(const py::array& a, const py::array& b, py::array c, double alpha, double beta,
                  bool trans_a, bool trans_b, bool naive) {
    require_disjoint(c, "c", a, "a");
    require_disjoint(c, "c", b, "b");
    dispatch(c, "c", [&](auto tag) {
        using T = decltype(tag);
        Index lda, ldb, ldc;
        const T* pa = input_matrix<T>(a, "a", lda);
        const T* pb = input_matrix<T>(b, "b", ldb);
        T* pc = output_matrix<T>(c, "c", ldc);
        const Index m = c.shape(0), n = c.shape(1);
        const Index k = trans_a ? a.shape(0) : a.shape(1);
        const Index a_rows = trans_a ? a.shape(1) : a.shape(0);
        const Index b_rows = trans_b ? b.shape(1) : b.shape(0);
        const Index b_cols = trans_b ? b.shape(0) : b.shape(1);
        if (a_rows != m || b_rows != k || b_cols != n)
            throw py::value_error("gemm: op(a) " + shape_text(a) + (trans_a ? "ᵀ" : "") +
                                  " times op(b) " + shape_text(b) + (trans_b ? "ᵀ" : "") +
                                  " does not fit c " + shape_text(c));
        const auto op_a = trans_a ? Transpose::transpose : Transpose::none;
        const auto op_b = trans_b ? Transpose::transpose : Transpose::none;
        return [=] {
            if (naive)
                gemm_naive<T>(op_a, op_b, m, n, k, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
            else
                gemm<T>(op_a, op_b, m, n, k, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
        };
    });
}

// The arguments of fastmlp.kernels.gemm in its common case, read without the
// Python-side conversions: a, b (and c) plain ndarrays of one float dtype, a and
// b read where they lie (rows or columns contiguous, as kernels._matrix accepts
// them without a copy), c absent or a writable matrix sharing no bytes with a or
// b, alpha (and beta, when c is given) a finite float or int, trans_* True or
// False. Any other call returns None from gemm_fast_path, and kernels.gemm takes
// its checked path, which converts, copies or raises; so this path needs no error
// of its own, and a call it takes gives the bits the checked path would.
namespace gemm_fast {

bool is_plain_array(py::handle h) {
    return Py_TYPE(h.ptr()) == py::detail::npy_api::get().PyArray_Type_;
}

// A Python float or int (not bool) as a finite double; false otherwise.
bool finite_number(py::handle h, double& value) {
    if (PyFloat_CheckExact(h.ptr())) {
        value = PyFloat_AS_DOUBLE(h.ptr());
    } else if (PyLong_CheckExact(h.ptr())) {
        value = PyLong_AsDouble(h.ptr());
        if (value == -1.0 && PyErr_Occurred()) {  // too large for a double
            PyErr_Clear();
            return false;
        }
    } else {
        return false;
    }
    return std::isfinite(value);
}

bool as_flag(py::handle h, bool& flag) {
    flag = h.ptr() == Py_True;
    return flag || h.ptr() == Py_False;
}

// A 2-D operand as kernels._matrix takes it without a copy: rows contiguous (read
// as it is), else columns contiguous (column-major: its transpose is row-major, so
// that is read with `trans` flipped). Gives the pointer and leading dimension
// input_matrix would give for that view; false when _matrix would copy.
template <typename T>
bool operand(const py::array& x, bool& trans, const T*& data, Index& ld) {
    data = static_cast<const T*>(x.data());
    if (matrix_problem<T>(x, ld) == nullptr) return true;
    // Column-major storage, as kernels._matrix reads it: its transpose (cols × rows,
    // strides swapped) has contiguous rows.
    if (x.strides(0) != Index(sizeof(T)) ||
        row_major_problem(x.shape(1), x.shape(0), x.strides(1), x.strides(0), Index(sizeof(T)),
                          ld) != nullptr)
        return false;
    trans = !trans;
    return true;
}

template <typename T>
py::object run(const py::array& a, const py::array& b, py::handle c_handle, double alpha,
               py::handle beta_handle, bool trans_a, bool trans_b) {
    const T *pa, *pb;
    Index lda, ldb, ldc;
    const Index m = trans_a ? a.shape(1) : a.shape(0), k = trans_a ? a.shape(0) : a.shape(1);
    const Index n = trans_b ? b.shape(0) : b.shape(1);
    if ((trans_b ? b.shape(1) : b.shape(0)) != k) return py::none();
    if (!operand<T>(a, trans_a, pa, lda) || !operand<T>(b, trans_b, pb, ldb)) return py::none();
    double beta = 0.0;  // c absent: a new C, and beta (not even checked) has no part
    py::array c;
    if (c_handle.is_none()) {
        c = py::array_t<T>({m, n});  // uninitialised: beta == 0 overwrites C (gemm.hpp)
        ldc = std::max<Index>(n, 1);
    } else {
        c = py::reinterpret_borrow<py::array>(c_handle);
        if (!has_dtype<T>(c) || c.ndim() != 2 || c.shape(0) != m || c.shape(1) != n ||
            !c.writeable() || matrix_problem<T>(c, ldc) != nullptr ||
            !finite_number(beta_handle, beta) || bytes_overlap(c, a) || bytes_overlap(c, b))
            return py::none();
    }
    T* pc = static_cast<T*>(c.mutable_data());
    const auto op_a = trans_a ? Transpose::transpose : Transpose::none;
    const auto op_b = trans_b ? Transpose::transpose : Transpose::none;
    {
        py::gil_scoped_release release;
        gemm<T>(op_a, op_b, m, n, k, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
    }
    return std::move(c);
}

}  // namespace gemm_fast

// fastmlp.kernels.gemm's common case in one call (see gemm_fast above): the
// result (c, or a new C), or None when the call is not that case.
py::object gemm_fast_path(py::handle a_handle, py::handle b_handle, py::handle c,
                          py::handle alpha_handle, py::handle beta, py::handle trans_a_handle,
                          py::handle trans_b_handle) {
    using namespace gemm_fast;
    bool trans_a, trans_b;
    double alpha;
    if (!is_plain_array(a_handle) || !is_plain_array(b_handle) ||
        !(c.is_none() || is_plain_array(c)) || !as_flag(trans_a_handle, trans_a) ||
        !as_flag(trans_b_handle, trans_b) || !finite_number(alpha_handle, alpha))
        return py::none();
    const auto a = py::reinterpret_borrow<py::array>(a_handle);
    const auto b = py::reinterpret_borrow<py::array>(b_handle);
    if (a.ndim() != 2 || b.ndim() != 2) return py::none();
    if (has_dtype<float>(a) && has_dtype<float>(b))
        return run<float>(a, b, c, alpha, beta, trans_a, trans_b);
    if (has_dtype<double>(a) && has_dtype<double>(b))
        return run<double>(a, b, c, alpha, beta, trans_a, trans_b);
    return py::none();
}

// out = f(z); out may be z itself.
void activation_forward_binding(const std::string& name, const py::array& z, py::array out) {
    const Activation act = activation_from_name(name);
    require_same_shape(z, "z", out, "out");
    require_disjoint(out, "out", z, "z", true);
    dispatch(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = input<T>(z, "z");
        T* po = output<T>(out, "out");
        return [=, n = Index(out.size())] { activation_forward<T>(act, po, pz, n); };
    });
}

// z, a, da and out of one shape; out may be da itself but overlaps neither z nor a.
void check_backward_arrays(const py::array& z, const py::array& a, const py::array& da,
                           const py::array& out) {
    require_same_shape(z, "z", out, "out");
    require_same_shape(a, "a", out, "out");
    require_same_shape(da, "da", out, "out");
    require_disjoint(out, "out", z, "z");
    require_disjoint(out, "out", a, "a");
    require_disjoint(out, "out", da, "da", true);
}

// out = da ⊙ f'(z) with a = f(z); out may be da itself.
void activation_backward_binding(const std::string& name, const py::array& z, const py::array& a,
                                 const py::array& da, py::array out) {
    const Activation act = activation_from_name(name);
    check_backward_arrays(z, a, da, out);
    dispatch(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = input<T>(z, "z");
        const T* pa = input<T>(a, "a");
        const T* pda = input<T>(da, "da");
        T* po = output<T>(out, "out");
        return [=, n = Index(out.size())] { activation_backward<T>(act, po, pda, pz, pa, n); };
    });
}

// z (B, O) += bias (O) in place, out = f(z); out may be z itself.
void bias_activation_forward_binding(const std::string& name, py::array z, const py::array& bias,
                                     py::array out) {
    const Activation act = activation_from_name(name);
    require_same_shape(z, "z", out, "out");
    require_disjoint(out, "out", z, "z", true);
    require_disjoint(z, "z", bias, "bias");
    require_disjoint(out, "out", bias, "bias");
    dispatch(z, "z", [&](auto tag) {
        using T = decltype(tag);
        T* pz = output<T>(z, "z", 2);
        const T* pb = input<T>(bias, "bias", 1);
        T* po = output<T>(out, "out", 2);
        require_bias_width("bias_activation_forward", bias, "bias", z, "z");
        return [=, b = Index(z.shape(0)), o = Index(z.shape(1))] {
            bias_activation_forward<T>(act, po, pz, pb, b, o);
        };
    });
}

// out = da ⊙ f'(z) (out may be da itself); d_bias = (+= when accumulate) Σ_rows out.
void activation_bias_backward_binding(const std::string& name, const py::array& z,
                                      const py::array& a, const py::array& da, py::array out,
                                      py::array d_bias, bool accumulate) {
    const Activation act = activation_from_name(name);
    check_backward_arrays(z, a, da, out);
    require_disjoint(d_bias, "d_bias", z, "z");
    require_disjoint(d_bias, "d_bias", a, "a");
    require_disjoint(d_bias, "d_bias", da, "da");
    require_disjoint(d_bias, "d_bias", out, "out");
    dispatch(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = input<T>(z, "z", 2);
        const T* pa = input<T>(a, "a", 2);
        const T* pda = input<T>(da, "da", 2);
        T* po = output<T>(out, "out", 2);
        T* pdb = output<T>(d_bias, "d_bias", 1);
        require_bias_width("activation_bias_backward", d_bias, "d_bias", out, "out");
        return [=, b = Index(out.shape(0)), o = Index(out.shape(1))] {
            activation_bias_backward<T>(act, po, pdb, pda, pz, pa, b, o, accumulate);
        };
    });
}

// The mean loss of pred (B, O) against target (B, O), weighted by the rows' weights
// (B,) when given; dL/dpred into grad (may be pred) when given.
double loss_binding(const std::string& name, const py::array& pred, const py::array& target,
                    const py::object& grad, double delta, const py::object& weight) {
    const Loss loss = loss_from_name(name);
    require_same_shape(pred, "pred", target, "target");
    py::array g = grad.is_none() ? py::array() : grad.cast<py::array>();
    if (!grad.is_none()) {
        require_same_shape(pred, "pred", g, "grad");
        require_disjoint(g, "grad", target, "target");
        require_disjoint(g, "grad", pred, "pred", true);
    }
    return dispatch(pred, "pred", [&](auto tag) {
        using T = decltype(tag);
        const T* pp = input<T>(pred, "pred", 2);
        const T* pt = input<T>(target, "target", 2);
        T* pg = grad.is_none() ? nullptr : output<T>(g, "grad", 2);
        const T* pw = optional_weights<T>(weight, pred.shape(0), "weight");
        return [=, b = Index(pred.shape(0)), o = Index(pred.shape(1))] {
            return loss_forward_backward<T>(loss, pp, pt, pg, b, o, delta, pw);
        };
    });
}

double count_correct_binding(const std::string& name, const py::array& pred,
                             const py::array& target, const py::object& weight) {
    const Loss loss = loss_from_name(name);
    require_same_shape(pred, "pred", target, "target");
    return dispatch(pred, "pred", [&](auto tag) {
        using T = decltype(tag);
        const T* pp = input<T>(pred, "pred", 2);
        const T* pt = input<T>(target, "target", 2);
        const T* pw = optional_weights<T>(weight, pred.shape(0), "weight");
        return [=, b = Index(pred.shape(0)), o = Index(pred.shape(1))] {
            return count_correct<T>(loss, pp, pt, b, o, pw);
        };
    });
}

// Row-wise softmax of z (B, O) into out (may be z itself).
void softmax_binding(const py::array& z, py::array out) {
    require_same_shape(z, "z", out, "out");
    require_disjoint(out, "out", z, "z", true);
    dispatch(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = input<T>(z, "z", 2);
        T* po = output<T>(out, "out", 2);
        if (z.shape(1) < 1) throw py::value_error("softmax: z needs at least one column");
        return [=, b = Index(z.shape(0)), o = Index(z.shape(1))] { softmax_rows<T>(po, pz, b, o); };
    });
}

double grad_norm_binding(const py::array& grads, double clip_value) {
    return dispatch(grads, "grads", [&](auto tag) {
        using T = decltype(tag);
        const T* pg = input<T>(grads, "grads", 1);
        return [=, n = Index(grads.shape(0))] { return grad_norm<T>(pg, n, clip_value); };
    });
}

// One update in place on params and the state buffers, which share no memory
// with each other or with grads.
Index optimizer_update_binding(const OptimizerConfig& config, py::array params,
                               const py::array& grads, const py::object& s1,
                               const py::object& s2,
                               const std::vector<std::pair<Index, Index>>& segments,
                               std::int64_t t, double lr, double grad_scale) {
    require_same_shape(params, "params", grads, "grads");
    std::vector<std::pair<py::array, const char*>> written{{params, "params"}};
    if (!s1.is_none()) written.emplace_back(s1.cast<py::array>(), "state1");
    if (!s2.is_none()) written.emplace_back(s2.cast<py::array>(), "state2");
    for (std::size_t i = 0; i < written.size(); ++i) {
        require_same_shape(params, "params", written[i].first, written[i].second);
        require_disjoint(written[i].first, written[i].second, grads, "grads");
        for (std::size_t j = 0; j < i; ++j)
            require_disjoint(written[i].first, written[i].second, written[j].first,
                             written[j].second);
    }
    std::vector<Segment> segs;
    for (const auto& [offset, size] : segments) segs.push_back(Segment{offset, size});
    return dispatch(params, "params", [&](auto tag) {
        using T = decltype(tag);
        T* pp = output<T>(params, "params", 1);
        const T* pg = input<T>(grads, "grads", 1);
        T* p1 = s1.is_none() ? nullptr : output<T>(written[1].first, "state1", 1);
        T* p2 = s2.is_none() ? nullptr : output<T>(written.back().first, "state2", 1);
        return [=, &config, &segs, n = Index(params.shape(0))] {
            return optimizer_update<T>(config, pp, pg, p1, p2, n, segs, t, lr, grad_scale);
        };
    });
}


// ---- the layers between dense ones (layers.hpp) ----------------------------------------

// A 1-D array of `width` values (gain, bias, running statistics, rstd, d_gain, ...).
void require_length(const char* kernel, const py::array& vector, const char* name, Index width,
                    const char* what) {
    if (vector.ndim() != 1 || vector.shape(0) != width)
        throw py::value_error(std::string(kernel) + ": " + name + " has shape " +
                              shape_text(vector) + " but expected (" + std::to_string(width) +
                              ",), one value per " + what);
}

// No array in `written` shares memory with another written one or with one in
// `read`, except the pairs named in same_allowed, which may be exactly the same view.
using Named = std::pair<py::array, const char*>;
void require_apart(const std::vector<Named>& written, const std::vector<Named>& read,
                   const std::vector<std::pair<const char*, const char*>>& same_allowed = {}) {
    auto allowed = [&](const char* a, const char* b) {
        for (const auto& [x, y] : same_allowed)
            if ((std::string(x) == a && std::string(y) == b) ||
                (std::string(x) == b && std::string(y) == a))
                return true;
        return false;
    };
    for (std::size_t i = 0; i < written.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j)
            require_disjoint(written[i].first, written[i].second, written[j].first,
                             written[j].second, allowed(written[i].second, written[j].second));
        for (const auto& [array, name] : read)
            require_disjoint(written[i].first, written[i].second, array, name,
                             allowed(written[i].second, name));
    }
}

// A C-contiguous uint8 mask of n elements (values 0 or 1; fastmlp.kernels checks them).
const std::uint8_t* mask_input(const py::array& mask, Index n) {
    if (!mask.dtype().is(py::dtype::of<std::uint8_t>()))
        throw py::type_error("mask: expected dtype uint8, got " +
                             std::string(py::str(mask.dtype())));
    if (!(mask.flags() & py::array::c_style))
        throw py::value_error("mask: expected a C-contiguous array");
    if (Index(mask.size()) != n)
        throw py::value_error("mask: expected " + std::to_string(n) + " elements, got " +
                              std::to_string(mask.size()));
    return static_cast<const std::uint8_t*>(mask.data());
}

// Layer norm over the rows of x (B, W): xhat, y (B, W) and rstd (B) written; xhat
// may be x itself and y may be xhat or x itself (each row's statistics are taken
// before it is written).
void layer_norm_forward_binding(const py::array& x, const py::array& gain, const py::array& bias,
                                py::array xhat, py::array rstd, py::array y, double eps) {
    require_same_shape(x, "x", xhat, "xhat");
    require_same_shape(x, "x", y, "y");
    require_apart({{xhat, "xhat"}, {rstd, "rstd"}, {y, "y"}},
                  {{x, "x"}, {gain, "gain"}, {bias, "bias"}},
                  {{"xhat", "x"}, {"y", "xhat"}, {"y", "x"}});
    dispatch(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = input<T>(x, "x", 2);
        const Index rows = x.shape(0), width = x.shape(1);
        require_length("layer_norm_forward", gain, "gain", width, "column of x");
        require_length("layer_norm_forward", bias, "bias", width, "column of x");
        require_length("layer_norm_forward", rstd, "rstd", rows, "row of x");
        const T* pg = input<T>(gain, "gain", 1);
        const T* pb = input<T>(bias, "bias", 1);
        T* pxh = output<T>(xhat, "xhat", 2);
        T* pr = output<T>(rstd, "rstd", 1);
        T* py_ = output<T>(y, "y", 2);
        return [=] { layer_norm_forward<T>(px, pg, pb, pxh, pr, py_, rows, width, eps); };
    });
}

// Layer norm's or batch norm's backward: dx (B, W) (may be dy itself); d_gain and
// d_bias (W) = (or += when accumulate) their column sums. rstd is (B) for layer
// norm, (W) for batch norm.
template <bool batch>
void norm_backward_binding(const py::array& dy, const py::array& xhat, const py::array& rstd,
                           const py::array& gain, py::array dx, py::array d_gain,
                           py::array d_bias, bool accumulate) {
    const char* kernel = batch ? "batch_norm_backward" : "layer_norm_backward";
    require_same_shape(dy, "dy", xhat, "xhat");
    require_same_shape(dy, "dy", dx, "dx");
    require_apart({{dx, "dx"}, {d_gain, "d_gain"}, {d_bias, "d_bias"}},
                  {{dy, "dy"}, {xhat, "xhat"}, {rstd, "rstd"}, {gain, "gain"}}, {{"dx", "dy"}});
    dispatch(dy, "dy", [&](auto tag) {
        using T = decltype(tag);
        const T* pdy = input<T>(dy, "dy", 2);
        const Index rows = dy.shape(0), width = dy.shape(1);
        require_length(kernel, gain, "gain", width, "column of dy");
        require_length(kernel, d_gain, "d_gain", width, "column of dy");
        require_length(kernel, d_bias, "d_bias", width, "column of dy");
        require_length(kernel, rstd, "rstd", batch ? width : rows,
                       batch ? "column of dy" : "row of dy");
        const T* pxh = input<T>(xhat, "xhat", 2);
        const T* pr = input<T>(rstd, "rstd", 1);
        const T* pg = input<T>(gain, "gain", 1);
        T* pdx = output<T>(dx, "dx", 2);
        T* pdg = output<T>(d_gain, "d_gain", 1);
        T* pdb = output<T>(d_bias, "d_bias", 1);
        return [=] {
            if constexpr (batch)
                batch_norm_backward<T>(pdy, pxh, pr, pg, pdx, pdg, pdb, rows, width, accumulate);
            else
                layer_norm_backward<T>(pdy, pxh, pr, pg, pdx, pdg, pdb, rows, width, accumulate);
        };
    });
}

// Batch norm in training over the columns of x (B, W), B >= 2: xhat, y (B, W) and
// rstd (W) written; running_mean and running_var (W) updated in place when given.
void batch_norm_forward_train_binding(const py::array& x, const py::array& gain,
                                      const py::array& bias, py::array xhat, py::array rstd,
                                      py::array y, const py::object& running_mean,
                                      const py::object& running_var, double eps,
                                      double momentum) {
    require_same_shape(x, "x", xhat, "xhat");
    require_same_shape(x, "x", y, "y");
    std::vector<Named> written{{xhat, "xhat"}, {rstd, "rstd"}, {y, "y"}};
    py::array rm, rv;
    if (!running_mean.is_none())
        written.emplace_back(rm = running_mean.cast<py::array>(), "running_mean");
    if (!running_var.is_none())
        written.emplace_back(rv = running_var.cast<py::array>(), "running_var");
    require_apart(written, {{x, "x"}, {gain, "gain"}, {bias, "bias"}},
                  {{"xhat", "x"}, {"y", "xhat"}, {"y", "x"}});
    dispatch(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = input<T>(x, "x", 2);
        const Index rows = x.shape(0), width = x.shape(1);
        const char* kernel = "batch_norm_forward_train";
        require_length(kernel, gain, "gain", width, "column of x");
        require_length(kernel, bias, "bias", width, "column of x");
        require_length(kernel, rstd, "rstd", width, "column of x");
        T* prm = nullptr;
        T* prv = nullptr;
        if (!running_mean.is_none()) {
            require_length(kernel, rm, "running_mean", width, "column of x");
            prm = output<T>(rm, "running_mean", 1);
        }
        if (!running_var.is_none()) {
            require_length(kernel, rv, "running_var", width, "column of x");
            prv = output<T>(rv, "running_var", 1);
        }
        const T* pg = input<T>(gain, "gain", 1);
        const T* pb = input<T>(bias, "bias", 1);
        T* pxh = output<T>(xhat, "xhat", 2);
        T* pr = output<T>(rstd, "rstd", 1);
        T* py_ = output<T>(y, "y", 2);
        return [=] {
            batch_norm_forward_train<T>(px, pg, pb, pxh, pr, py_, prm, prv, rows, width, eps,
                                        momentum);
        };
    });
}

// Batch norm in eval mode: y (B, W) from the running statistics; y may be x itself.
void batch_norm_forward_eval_binding(const py::array& x, const py::array& gain,
                                     const py::array& bias, const py::array& running_mean,
                                     const py::array& running_var, py::array y, double eps) {
    require_same_shape(x, "x", y, "y");
    require_apart({{y, "y"}},
                  {{x, "x"}, {gain, "gain"}, {bias, "bias"}, {running_mean, "running_mean"},
                   {running_var, "running_var"}},
                  {{"y", "x"}});
    dispatch(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = input<T>(x, "x", 2);
        const Index rows = x.shape(0), width = x.shape(1);
        const char* kernel = "batch_norm_forward_eval";
        require_length(kernel, gain, "gain", width, "column of x");
        require_length(kernel, bias, "bias", width, "column of x");
        require_length(kernel, running_mean, "running_mean", width, "column of x");
        require_length(kernel, running_var, "running_var", width, "column of x");
        const T* pg = input<T>(gain, "gain", 1);
        const T* pb = input<T>(bias, "bias", 1);
        const T* prm = input<T>(running_mean, "running_mean", 1);
        const T* prv = input<T>(running_var, "running_var", 1);
        T* py_ = output<T>(y, "y", 2);
        return [=] { batch_norm_forward_eval<T>(px, pg, pb, prm, prv, py_, rows, width, eps); };
    });
}

// A dropout mask into out (uint8, C-contiguous) drawn from the generator state
// (words, has_spare, spare); returns the state after the draws in the same form.
py::tuple dropout_mask_binding(const std::array<std::uint64_t, 4>& words, bool has_spare,
                               double spare, double p, py::array out) {
    Rng::State state{{words[0], words[1], words[2], words[3]}, has_spare, spare};
    Rng::check_state(state);
    if (!out.dtype().is(py::dtype::of<std::uint8_t>()))
        throw py::type_error("out: expected dtype uint8, got " + std::string(py::str(out.dtype())));
    if (!(out.flags() & py::array::c_style))
        throw py::value_error("out: expected a C-contiguous array");
    require_writable(out, "out");
    auto* mask = static_cast<std::uint8_t*>(out.mutable_data());
    const Index n = out.size();
    Rng rng;
    rng.set_state(state);
    {
        py::gil_scoped_release release;
        dropout_mask(rng, mask, n, p);
    }
    state = rng.state();
    const auto& w = state.words;
    return py::make_tuple(py::make_tuple(w[0], w[1], w[2], w[3]), state.has_spare, state.spare);
}

// out = x ⊙ mask / (1 − p) (backward: dx = dy ⊙ mask / (1 − p)); out may be x itself.
template <bool backward>
void dropout_binding(const py::array& x, const py::array& mask, double p, py::array out) {
    const char* x_name = backward ? "dy" : "x";
    const char* out_name = backward ? "dx" : "y";
    require_same_shape(x, x_name, out, out_name);
    require_disjoint(out, out_name, x, x_name, true);
    require_disjoint(out, out_name, mask, "mask");
    dispatch(x, x_name, [&](auto tag) {
        using T = decltype(tag);
        const T* px = input<T>(x, x_name);
        const std::uint8_t* pm = mask_input(mask, Index(x.size()));
        T* po = output<T>(out, out_name);
        return [=, n = Index(x.size())] {
            if constexpr (backward)
                dropout_backward<T>(px, pm, po, n, p);
            else
                dropout_forward<T>(px, pm, po, n, p);
        };
    });
}

// out = x + skip; out may be x or skip itself.
void residual_add_binding(const py::array& x, const py::array& skip, py::array out) {
    require_same_shape(x, "x", skip, "skip");
    require_same_shape(x, "x", out, "out");
    require_disjoint(out, "out", x, "x", true);
    require_disjoint(out, "out", skip, "skip", true);
    dispatch(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = input<T>(x, "x");
        const T* ps = input<T>(skip, "skip");
        T* po = output<T>(out, "out");
        return [=, n = Index(x.size())] { residual_add<T>(px, ps, po, n); };
    });
}

// Every array's elements [start, stop) become their sum across the arrays, in
// list order, in place: arrays of one dtype and length, 1-D, C-contiguous,
// writable and apart in memory.
void sum_into_each_binding(std::vector<py::array> arrays, Index start, Index stop) {
    if (arrays.empty()) throw py::value_error("arrays: expected at least one array");
    if (arrays.size() > 1024) throw py::value_error("arrays: at most 1024 arrays");
    const Index n = Index(arrays[0].size());
    if (start < 0 || stop < start || stop > n)
        throw py::value_error("sum_into_each: expected 0 <= start <= stop <= " + std::to_string(n) +
                              ", got start " + std::to_string(start) + ", stop " +
                              std::to_string(stop));
    for (std::size_t a = 0; a < arrays.size(); ++a) {
        const std::string name = "arrays[" + std::to_string(a) + "]";
        if (arrays[a].ndim() != 1 || Index(arrays[a].size()) != n)
            throw py::value_error(name + ": expected a 1-D array of " + std::to_string(n) +
                                  " values (as arrays[0]), got shape " + shape_text(arrays[a]));
        for (std::size_t b = 0; b < a; ++b)
            if (bytes_overlap(arrays[a], arrays[b]))
                throw py::value_error(name + " overlaps arrays[" + std::to_string(b) +
                                      "] in memory: each array is written on its own");
    }
    dispatch(arrays[0], "arrays[0]", [&](auto tag) {
        using T = decltype(tag);
        std::vector<T*> pointers;
        for (std::size_t a = 0; a < arrays.size(); ++a)
            pointers.push_back(output<T>(arrays[a], ("arrays[" + std::to_string(a) + "]").c_str()) + start);
        return [pointers = std::move(pointers), n = stop - start] {
            sum_into_each<T>(pointers.data(), int(pointers.size()), n);
        };
    });
}

}  // namespace

void bind_kernels(py::module_& m) {
    m.def("gemm", &gemm_binding, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha"),
          py::arg("beta"), py::arg("trans_a"), py::arg("trans_b"), py::arg("naive") = false);
    m.def("gemm_fast_path", &gemm_fast_path, py::arg("a"), py::arg("b"), py::arg("c"),
          py::arg("alpha"), py::arg("beta"), py::arg("trans_a"), py::arg("trans_b"));
    m.def("activation_forward", &activation_forward_binding, py::arg("name"), py::arg("z"),
          py::arg("out"));
    m.def("activation_backward", &activation_backward_binding, py::arg("name"), py::arg("z"),
          py::arg("a"), py::arg("da"), py::arg("out"));
    m.def("bias_activation_forward", &bias_activation_forward_binding, py::arg("name"),
          py::arg("z"), py::arg("bias"), py::arg("out"));
    m.def("activation_bias_backward", &activation_bias_backward_binding, py::arg("name"),
          py::arg("z"), py::arg("a"), py::arg("da"), py::arg("out"), py::arg("d_bias"),
          py::arg("accumulate"));
    m.def("loss", &loss_binding, py::arg("name"), py::arg("pred"), py::arg("target"),
          py::arg("grad"), py::arg("delta") = 1.0, py::arg("weight") = py::none());
    m.def("count_correct", &count_correct_binding, py::arg("name"), py::arg("pred"),
          py::arg("target"), py::arg("weight") = py::none());
    m.def("softmax", &softmax_binding, py::arg("z"), py::arg("out"));
    m.def("grad_norm", &grad_norm_binding, py::arg("grads"), py::arg("clip_value") = 0.0);
    m.def("optimizer_update", &optimizer_update_binding, py::arg("config"), py::arg("params"),
          py::arg("grads"), py::arg("state1"), py::arg("state2"), py::arg("segments"),
          py::arg("t"), py::arg("lr"), py::arg("grad_scale") = 1.0);
    m.def("layer_norm_forward", &layer_norm_forward_binding, py::arg("x"), py::arg("gain"),
          py::arg("bias"), py::arg("xhat"), py::arg("rstd"), py::arg("y"), py::arg("eps"));
    m.def("layer_norm_backward", &norm_backward_binding<false>, py::arg("dy"), py::arg("xhat"),
          py::arg("rstd"), py::arg("gain"), py::arg("dx"), py::arg("d_gain"), py::arg("d_bias"),
          py::arg("accumulate"));
    m.def("batch_norm_forward_train", &batch_norm_forward_train_binding, py::arg("x"),
          py::arg("gain"), py::arg("bias"), py::arg("xhat"), py::arg("rstd"), py::arg("y"),
          py::arg("running_mean"), py::arg("running_var"), py::arg("eps"), py::arg("momentum"));
    m.def("batch_norm_forward_eval", &batch_norm_forward_eval_binding, py::arg("x"),
          py::arg("gain"), py::arg("bias"), py::arg("running_mean"), py::arg("running_var"),
          py::arg("y"), py::arg("eps"));
    m.def("batch_norm_backward", &norm_backward_binding<true>, py::arg("dy"), py::arg("xhat"),
          py::arg("rstd"), py::arg("gain"), py::arg("dx"), py::arg("d_gain"), py::arg("d_bias"),
          py::arg("accumulate"));
    m.def("dropout_mask", &dropout_mask_binding, py::arg("words"), py::arg("has_spare"),
          py::arg("spare"), py::arg("p"), py::arg("out"));
    m.def("dropout_forward", &dropout_binding<false>, py::arg("x"), py::arg("mask"), py::arg("p"),
          py::arg("y"));
    m.def("dropout_backward", &dropout_binding<true>, py::arg("dy"), py::arg("mask"), py::arg("p"),
          py::arg("dx"));
    m.def("residual_add", &residual_add_binding, py::arg("x"), py::arg("skip"), py::arg("out"));
    m.def("sum_into_each", &sum_into_each_binding, py::arg("arrays"), py::arg("start"),
          py::arg("stop"));
    m.def(
        "schedule_factor",
        [](const Schedule& schedule, Index t) {
            if (t < 0) throw py::value_error("schedule_factor: t must be >= 0");
            return schedule.factor(t);
        },
        py::arg("schedule"), py::arg("t"));
}

void bind_runtime(py::module_& m) {
    m.def("gemm_kernel", []() { return std::string(gemm_kernel_name()); });
    m.def("gemm_available_kernels", &gemm_available_kernels);
    m.def("set_gemm_kernel", &set_gemm_kernel, py::arg("name"));
    m.def("get_num_threads", &get_num_threads);
    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.attr("MAX_THREADS") = max_threads;
    m.def("build_info", []() {
        py::dict info;
        info["compiler"] = compiler_name();
        info["build_type"] = build_type();
        info["build_flags"] = build_flags();
        info["architecture"] = architecture();
        info["cpu_features"] = cpu_features();
        info["gemm_kernel"] = gemm_kernel_name();
        return info;
    });
}

}  // namespace fastmlp::bindings
