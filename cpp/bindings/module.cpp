// module.cpp — fastmlp._core: pybind11 glue only.
//
// Checks what C++ cannot (dtype, shape, layout, writability), releases the GIL
// around every kernel, and lets C++ exceptions become Python ones
// (std::invalid_argument -> ValueError, std::bad_alloc -> MemoryError).
// The Python layer validates user input first and passes arrays that already
// have the right dtype and layout; these checks are the second line.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastmlp/activation.hpp"
#include "fastmlp/build_info.hpp"
#include "fastmlp/dense.hpp"
#include "fastmlp/gemm.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/network.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/threading.hpp"

namespace py = pybind11;
using Index = fastmlp::index;

namespace {

template <typename T>
const char* dtype_name() {
    return sizeof(T) == 4 ? "float32" : "float64";
}

template <typename T>
bool has_dtype(const py::array& array) {
    return array.dtype().is(py::dtype::of<T>());
}

std::string shape_text(const py::array& array) {
    std::string text = "(";
    for (py::ssize_t d = 0; d < array.ndim(); ++d) {
        if (d) text += ", ";
        text += std::to_string(array.shape(d));
    }
    return text + (array.ndim() == 1 ? ",)" : ")");
}

template <typename T>
void require_dtype(const py::array& array, const char* name) {
    if (!has_dtype<T>(array))
        throw py::type_error(std::string(name) + ": expected dtype " + dtype_name<T>() +
                             ", got " + std::string(py::str(array.dtype())));
}

// A C-contiguous array of T with the given ndim (or any ndim when ndim < 0).
template <typename T>
T* contiguous_data(py::array& array, const char* name, int ndim, bool writable) {
    require_dtype<T>(array, name);
    if (ndim >= 0 && array.ndim() != ndim)
        throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) +
                              "-D array, got shape " + shape_text(array));
    if (!(array.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + ": expected a C-contiguous array");
    if (writable && !array.writeable())
        throw py::value_error(std::string(name) + ": the array is read-only");
    return static_cast<T*>(array.mutable_data());
}

// A 2-D matrix whose rows are contiguous (unit column stride), with its leading dimension.
template <typename T>
T* matrix_data(py::array& array, const char* name, bool writable, Index& ld) {
    require_dtype<T>(array, name);
    if (array.ndim() != 2)
        throw py::value_error(std::string(name) + ": expected a 2-D array, got shape " +
                              shape_text(array));
    const Index rows = array.shape(0), cols = array.shape(1);
    const Index item = sizeof(T);
    if (writable && !array.writeable())
        throw py::value_error(std::string(name) + ": the array is read-only");
    if (array.size() == 0) {  // NumPy gives empty arrays any strides; nothing is read
        ld = std::max<Index>(cols, 1);
        return static_cast<T*>(array.mutable_data());
    }
    if (cols > 1 && array.strides(1) != item)
        throw py::value_error(std::string(name) + ": rows must be contiguous (unit column stride)");
    if (rows > 1) {
        if (array.strides(0) % item != 0 || array.strides(0) / item < std::max<Index>(cols, 1))
            throw py::value_error(std::string(name) + ": unsupported row stride");
        ld = array.strides(0) / item;
    } else {
        ld = std::max<Index>(cols, 1);
    }
    return static_cast<T*>(array.mutable_data());
}

void require_same_shape(const py::array& a, const char* a_name, const py::array& b,
                        const char* b_name) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == b.shape(d);
    if (!same)
        throw py::value_error(std::string(a_name) + " has shape " + shape_text(a) + " but " +
                              b_name + " has shape " + shape_text(b) +
                              ": expected the same shape");
}

// A bias vector (O) for a (B, O) matrix; names the kernel and both arrays otherwise.
void require_bias_width(const char* kernel, const py::array& bias, const char* bias_name,
                        const py::array& matrix, const char* matrix_name) {
    if (bias.shape(0) != matrix.shape(1))
        throw py::value_error(std::string(kernel) + ": " + bias_name + " has shape " +
                              shape_text(bias) + " but " + matrix_name + " has " +
                              std::to_string(matrix.shape(1)) + " columns");
}

// Calls f(T{}) with T the dtype of `array` (float32 or float64).
template <typename F>
auto by_dtype(const py::array& array, const char* name, F&& f) {
    if (has_dtype<float>(array)) return f(float{});
    if (has_dtype<double>(array)) return f(double{});
    throw py::type_error(std::string(name) + ": expected dtype float32 or float64, got " +
                         std::string(py::str(array.dtype())));
}

// ---- kernels ---------------------------------------------------------------

void gemm_binding(py::array a, py::array b, py::array c, double alpha, double beta,
                  bool trans_a, bool trans_b, bool naive) {
    by_dtype(c, "c", [&](auto tag) {
        using T = decltype(tag);
        Index lda, ldb, ldc;
        const T* pa = matrix_data<T>(a, "a", false, lda);
        const T* pb = matrix_data<T>(b, "b", false, ldb);
        T* pc = matrix_data<T>(c, "c", true, ldc);
        const Index m = c.shape(0), n = c.shape(1);
        const Index k = trans_a ? a.shape(0) : a.shape(1);
        const Index a_rows = trans_a ? a.shape(1) : a.shape(0);
        const Index b_rows = trans_b ? b.shape(1) : b.shape(0);
        const Index b_cols = trans_b ? b.shape(0) : b.shape(1);
        if (a_rows != m || b_rows != k || b_cols != n)
            throw py::value_error("gemm: op(a) " + shape_text(a) + (trans_a ? "ᵀ" : "") +
                                  " times op(b) " + shape_text(b) + (trans_b ? "ᵀ" : "") +
                                  " does not fit c " + shape_text(c));
        py::gil_scoped_release release;
        const auto op_a = trans_a ? fastmlp::Transpose::transpose : fastmlp::Transpose::none;
        const auto op_b = trans_b ? fastmlp::Transpose::transpose : fastmlp::Transpose::none;
        if (naive)
            fastmlp::gemm_naive<T>(op_a, op_b, m, n, k, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
        else
            fastmlp::gemm<T>(op_a, op_b, m, n, k, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
    });
}

void activation_forward_binding(const std::string& name, py::array z, py::array out) {
    const fastmlp::Activation act = fastmlp::activation_from_name(name);
    require_same_shape(z, "z", out, "out");
    by_dtype(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = contiguous_data<T>(z, "z", -1, false);
        T* po = contiguous_data<T>(out, "out", -1, true);
        py::gil_scoped_release release;
        fastmlp::activation_forward<T>(act, po, pz, Index(out.size()));
    });
}

void activation_backward_binding(const std::string& name, py::array z, py::array a,
                                 py::array da, py::array out) {
    const fastmlp::Activation act = fastmlp::activation_from_name(name);
    require_same_shape(z, "z", out, "out");
    require_same_shape(a, "a", out, "out");
    require_same_shape(da, "da", out, "out");
    by_dtype(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = contiguous_data<T>(z, "z", -1, false);
        const T* pa = contiguous_data<T>(a, "a", -1, false);
        const T* pda = contiguous_data<T>(da, "da", -1, false);
        T* po = contiguous_data<T>(out, "out", -1, true);
        py::gil_scoped_release release;
        fastmlp::activation_backward<T>(act, po, pda, pz, pa, Index(out.size()));
    });
}

void bias_activation_forward_binding(const std::string& name, py::array z, py::array bias,
                                     py::array out) {
    const fastmlp::Activation act = fastmlp::activation_from_name(name);
    require_same_shape(z, "z", out, "out");
    by_dtype(z, "z", [&](auto tag) {
        using T = decltype(tag);
        T* pz = contiguous_data<T>(z, "z", 2, true);
        const T* pb = contiguous_data<T>(bias, "bias", 1, false);
        T* po = contiguous_data<T>(out, "out", 2, true);
        require_bias_width("bias_activation_forward", bias, "bias", z, "z");
        py::gil_scoped_release release;
        fastmlp::bias_activation_forward<T>(act, po, pz, pb, z.shape(0), z.shape(1));
    });
}

void activation_bias_backward_binding(const std::string& name, py::array z, py::array a,
                                      py::array da, py::array out, py::array d_bias,
                                      bool accumulate) {
    const fastmlp::Activation act = fastmlp::activation_from_name(name);
    require_same_shape(z, "z", out, "out");
    require_same_shape(a, "a", out, "out");
    require_same_shape(da, "da", out, "out");
    by_dtype(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = contiguous_data<T>(z, "z", 2, false);
        const T* pa = contiguous_data<T>(a, "a", 2, false);
        const T* pda = contiguous_data<T>(da, "da", 2, false);
        T* po = contiguous_data<T>(out, "out", 2, true);
        T* pdb = contiguous_data<T>(d_bias, "d_bias", 1, true);
        require_bias_width("activation_bias_backward", d_bias, "d_bias", out, "dz");
        py::gil_scoped_release release;
        fastmlp::activation_bias_backward<T>(act, po, pdb, pda, pz, pa, out.shape(0),
                                             out.shape(1), accumulate);
    });
}

void bias_add_forward_binding(py::array z, py::array bias) {
    by_dtype(z, "z", [&](auto tag) {
        using T = decltype(tag);
        T* pz = contiguous_data<T>(z, "z", 2, true);
        const T* pb = contiguous_data<T>(bias, "bias", 1, false);
        require_bias_width("bias_add_forward", bias, "bias", z, "z");
        py::gil_scoped_release release;
        fastmlp::bias_add_forward<T>(pz, pb, z.shape(0), z.shape(1));
    });
}

void bias_add_backward_binding(py::array d_bias, py::array dz) {
    by_dtype(dz, "dz", [&](auto tag) {
        using T = decltype(tag);
        T* pdb = contiguous_data<T>(d_bias, "d_bias", 1, true);
        const T* pdz = contiguous_data<T>(dz, "dz", 2, false);
        require_bias_width("bias_add_backward", d_bias, "d_bias", dz, "dz");
        py::gil_scoped_release release;
        fastmlp::bias_add_backward<T>(pdb, pdz, dz.shape(0), dz.shape(1));
    });
}

double mse_forward_binding(py::array pred, py::array target) {
    require_same_shape(pred, "pred", target, "target");
    return by_dtype(pred, "pred", [&](auto tag) -> double {
        using T = decltype(tag);
        const T* pp = contiguous_data<T>(pred, "pred", -1, false);
        const T* pt = contiguous_data<T>(target, "target", -1, false);
        py::gil_scoped_release release;
        return double(fastmlp::mse_forward<T>(pp, pt, Index(pred.size())));
    });
}

void mse_backward_binding(py::array out, py::array pred, py::array target, double scale) {
    require_same_shape(pred, "pred", target, "target");
    require_same_shape(pred, "pred", out, "out");
    by_dtype(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pp = contiguous_data<T>(pred, "pred", -1, false);
        const T* pt = contiguous_data<T>(target, "target", -1, false);
        T* po = contiguous_data<T>(out, "out", -1, true);
        py::gil_scoped_release release;
        fastmlp::mse_backward<T>(po, pp, pt, Index(out.size()), T(scale));
    });
}

void sgd_update_binding(py::array params, py::array grads, double lr) {
    require_same_shape(params, "params", grads, "grads");
    by_dtype(params, "params", [&](auto tag) {
        using T = decltype(tag);
        T* pp = contiguous_data<T>(params, "params", -1, true);
        const T* pg = contiguous_data<T>(grads, "grads", -1, false);
        py::gil_scoped_release release;
        fastmlp::sgd_update<T>(pp, pg, Index(params.size()), T(lr));
    });
}

// ---- training configuration from Python dicts ------------------------------------

template <typename V>
V dict_get(const py::dict& d, const char* key, V fallback) {
    return d.contains(key) ? d[key].cast<V>() : fallback;
}

// Refuses a key of d outside `allowed` (a typo is an error, not a default), and
// a missing key of `required`; `what` names the dict in the message.
void require_keys(const py::dict& d, const char* what, const std::vector<std::string>& allowed,
                  const std::vector<std::string>& required = {}) {
    for (auto item : d) {
        const std::string key = py::str(item.first);
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
            throw py::value_error(std::string(what) + ": unknown key '" + key + "'");
    }
    for (const auto& key : required)
        if (!d.contains(key.c_str()))
            throw py::value_error(std::string(what) + ": needs '" + key + "'");
}

// {"kind": "adam", "lr": ..., "momentum": ..., ...}: missing keys keep their defaults.
fastmlp::OptimizerConfig optimizer_config(const py::dict& d) {
    require_keys(d, "optimizer",
                 {"kind", "lr", "momentum", "dampening", "weight_decay", "nesterov", "beta1",
                  "beta2", "eps", "clip_norm", "clip_value"});
    fastmlp::OptimizerConfig c;
    c.kind = fastmlp::optimizer_from_name(dict_get<std::string>(d, "kind", "sgd"));
    c.lr = dict_get<double>(d, "lr", c.lr);
    c.momentum = dict_get<double>(d, "momentum", c.momentum);
    c.dampening = dict_get<double>(d, "dampening", c.dampening);
    c.weight_decay = dict_get<double>(d, "weight_decay", c.weight_decay);
    c.nesterov = dict_get<bool>(d, "nesterov", c.nesterov);
    c.beta1 = dict_get<double>(d, "beta1", c.beta1);
    c.beta2 = dict_get<double>(d, "beta2", c.beta2);
    c.eps = dict_get<double>(d, "eps", c.eps);
    c.clip_norm = dict_get<double>(d, "clip_norm", c.clip_norm);
    c.clip_value = dict_get<double>(d, "clip_value", c.clip_value);
    c.validate();
    return c;
}

// {"kind": "cosine", "warmup_steps": ..., ...} or None (constant).
fastmlp::Schedule schedule_config(const py::object& o) {
    fastmlp::Schedule s;
    if (o.is_none()) return s;
    const py::dict d = o.cast<py::dict>();
    s.kind = fastmlp::schedule_from_name(dict_get<std::string>(d, "kind", "constant"));
    // Every key the kind reads must be there (min_factor may be left out), and no other.
    const std::string what = "schedule '" + dict_get<std::string>(d, "kind", "constant") + "'";
    switch (s.kind) {
        case fastmlp::Schedule::Kind::constant:
            require_keys(d, what.c_str(), {"kind", "warmup_steps"});
            break;
        case fastmlp::Schedule::Kind::step:
            require_keys(d, what.c_str(), {"kind", "warmup_steps", "step_size", "gamma"},
                         {"step_size", "gamma"});
            break;
        case fastmlp::Schedule::Kind::exponential:
            require_keys(d, what.c_str(), {"kind", "warmup_steps", "gamma"}, {"gamma"});
            break;
        case fastmlp::Schedule::Kind::cosine:
            require_keys(d, what.c_str(), {"kind", "warmup_steps", "total_steps", "min_factor"},
                         {"total_steps"});
            break;
    }
    s.warmup_steps = dict_get<Index>(d, "warmup_steps", s.warmup_steps);
    s.step_size = dict_get<Index>(d, "step_size", s.step_size);
    s.gamma = dict_get<double>(d, "gamma", s.gamma);
    s.total_steps = dict_get<Index>(d, "total_steps", s.total_steps);
    s.min_factor = dict_get<double>(d, "min_factor", s.min_factor);
    s.validate();
    return s;
}

std::vector<fastmlp::Segment> segments_from(const std::vector<std::pair<Index, Index>>& pairs) {
    std::vector<fastmlp::Segment> out;
    for (const auto& [offset, size] : pairs) out.push_back(fastmlp::Segment{offset, size});
    return out;
}

double loss_binding(const std::string& name, py::array pred, py::array target, py::object grad,
                    double delta) {
    const fastmlp::Loss loss = fastmlp::loss_from_name(name);
    require_same_shape(pred, "pred", target, "target");
    return by_dtype(pred, "pred", [&](auto tag) -> double {
        using T = decltype(tag);
        const T* pp = contiguous_data<T>(pred, "pred", 2, false);
        const T* pt = contiguous_data<T>(target, "target", 2, false);
        T* pg = nullptr;
        if (!grad.is_none()) {
            py::array g = grad.cast<py::array>();
            require_same_shape(pred, "pred", g, "grad");
            pg = contiguous_data<T>(g, "grad", 2, true);
        }
        py::gil_scoped_release release;
        return fastmlp::loss_forward_backward<T>(loss, pp, pt, pg, pred.shape(0), pred.shape(1),
                                                 delta);
    });
}

Index count_correct_binding(const std::string& name, py::array pred, py::array target) {
    const fastmlp::Loss loss = fastmlp::loss_from_name(name);
    require_same_shape(pred, "pred", target, "target");
    return by_dtype(pred, "pred", [&](auto tag) -> Index {
        using T = decltype(tag);
        const T* pp = contiguous_data<T>(pred, "pred", 2, false);
        const T* pt = contiguous_data<T>(target, "target", 2, false);
        py::gil_scoped_release release;
        return fastmlp::count_correct<T>(loss, pp, pt, pred.shape(0), pred.shape(1));
    });
}

void softmax_binding(py::array z, py::array out) {
    require_same_shape(z, "z", out, "out");
    by_dtype(out, "out", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = contiguous_data<T>(z, "z", 2, false);
        T* po = contiguous_data<T>(out, "out", 2, true);
        if (z.shape(1) < 1) throw py::value_error("softmax: z needs at least one column");
        py::gil_scoped_release release;
        fastmlp::softmax_rows<T>(po, pz, z.shape(0), z.shape(1));
    });
}

double grad_norm_binding(py::array grads, double clip_value) {
    return by_dtype(grads, "grads", [&](auto tag) -> double {
        using T = decltype(tag);
        const T* pg = contiguous_data<T>(grads, "grads", 1, false);
        py::gil_scoped_release release;
        return fastmlp::grad_norm<T>(pg, grads.shape(0), clip_value);
    });
}

Index optimizer_update_binding(const py::dict& config, py::array params, py::array grads,
                               py::object s1, py::object s2,
                               const std::vector<std::pair<Index, Index>>& segments,
                               std::int64_t t, double lr, double grad_scale) {
    const fastmlp::OptimizerConfig c = optimizer_config(config);
    require_same_shape(params, "params", grads, "grads");
    const auto segs = segments_from(segments);
    return by_dtype(params, "params", [&](auto tag) -> Index {
        using T = decltype(tag);
        T* pp = contiguous_data<T>(params, "params", 1, true);
        const T* pg = contiguous_data<T>(grads, "grads", 1, false);
        auto state = [&](py::object o, const char* name) -> T* {
            if (o.is_none()) return nullptr;
            py::array a = o.cast<py::array>();
            require_same_shape(params, "params", a, name);
            return contiguous_data<T>(a, name, 1, true);
        };
        T* p1 = state(s1, "state1");
        T* p2 = state(s2, "state2");
        py::gil_scoped_release release;
        return fastmlp::optimizer_update<T>(c, pp, pg, p1, p2, params.shape(0), segs, t, lr,
                                            grad_scale);
    });
}

// ---- the engine --------------------------------------------------------------

// One network and the lock that keeps its calls one at a time. The GIL is
// always released before the lock is taken, so the two never deadlock.
template <typename T>
class NetworkHandle {
public:
    NetworkHandle(const std::vector<Index>& sizes, const std::vector<std::string>& activations,
                  std::uint64_t seed, const std::vector<std::string>& inits)
        : net_(sizes, to_activations(activations), seed, to_inits(inits)) {}

    static std::vector<fastmlp::Init> to_inits(const std::vector<std::string>& names) {
        std::vector<fastmlp::Init> out;
        for (const auto& name : names) out.push_back(fastmlp::init_from_name(name));
        return out;
    }

    static std::vector<fastmlp::Activation> to_activations(const std::vector<std::string>& names) {
        std::vector<fastmlp::Activation> out;
        for (const auto& name : names) out.push_back(fastmlp::activation_from_name(name));
        return out;
    }

    fastmlp::Network<T>& net() { return net_; }
    std::mutex& mutex() { return mutex_; }

private:
    fastmlp::Network<T> net_;
    std::mutex mutex_;
};

void check_rows(const py::array& array, const char* name, Index cols) {
    if (array.ndim() != 2 || array.shape(1) != cols)
        throw py::value_error(std::string(name) + ": expected shape (n, " + std::to_string(cols) +
                              "), got " + shape_text(array));
}

template <typename T>
void bind_network(py::module_& m, const char* class_name) {
    using Handle = NetworkHandle<T>;
    py::class_<Handle>(m, class_name)
        .def(py::init<const std::vector<Index>&, const std::vector<std::string>&, std::uint64_t,
                      const std::vector<std::string>&>(),
             py::arg("sizes"), py::arg("activations"), py::arg("seed"),
             py::arg("inits") = std::vector<std::string>{})
        .def_property_readonly("dtype", [](Handle&) { return py::dtype::of<T>(); })
        .def_property_readonly("parameter_count",
                               [](Handle& h) { return h.net().parameter_count(); })
        .def_property_readonly("layers",
                               [](Handle& h) {
                                   py::list out;
                                   for (const auto& l : h.net().layers())
                                       out.append(py::make_tuple(
                                           l.inputs, l.outputs, l.weight_offset, l.bias_offset,
                                           fastmlp::activation_name(l.activation)));
                                   return out;
                               })
        // Zero-copy views of the flat buffers; each keeps the network alive.
        .def_property_readonly("params",
                               [](py::object self) {
                                   Handle& h = self.cast<Handle&>();
                                   return py::array_t<T>({h.net().parameter_count()},
                                                         {Index(sizeof(T))}, h.net().params(), self);
                               })
        .def_property_readonly("grads",
                               [](py::object self) {
                                   Handle& h = self.cast<Handle&>();
                                   return py::array_t<T>({h.net().parameter_count()},
                                                         {Index(sizeof(T))}, h.net().grads(), self);
                               })
        .def("forward",
             [](Handle& h, py::array x) {
                 auto& net = h.net();
                 const T* px = contiguous_data<T>(x, "X", 2, false);
                 check_rows(x, "X", net.inputs());
                 const Index batch = x.shape(0);
                 py::array_t<T> out({batch, net.outputs()});
                 T* po = out.mutable_data();
                 {
                     py::gil_scoped_release release;
                     std::lock_guard<std::mutex> lock(h.mutex());
                     const T* result = net.forward(px, batch);
                     std::memcpy(po, result, sizeof(T) * batch * net.outputs());
                 }
                 return out;
             })
        .def("backward",
             [](Handle& h, py::array x, py::array d_out) {
                 auto& net = h.net();
                 const T* px = contiguous_data<T>(x, "X", 2, false);
                 const T* pd = contiguous_data<T>(d_out, "d_out", 2, false);
                 check_rows(x, "X", net.inputs());
                 check_rows(d_out, "d_out", net.outputs());
                 if (d_out.shape(0) != x.shape(0))
                     throw py::value_error("backward: X and d_out have different sample counts");
                 py::gil_scoped_release release;
                 std::lock_guard<std::mutex> lock(h.mutex());
                 net.backward(px, pd, x.shape(0), /*accumulate=*/false);
             })
        .def("cache",
             [](Handle& h, Index layer) {
                 auto& net = h.net();
                 Index rows = 0, cols = 0;
                 std::vector<T> z, a;
                 {
                     py::gil_scoped_release release;  // never wait for the lock holding the GIL
                     std::lock_guard<std::mutex> lock(h.mutex());
                     if (net.cached_batch() < 1)
                         throw std::invalid_argument("cache: no forward pass yet");
                     if (layer < 0 || layer >= Index(net.layers().size()))
                         throw std::out_of_range("cache: layer out of range");
                     rows = net.cached_batch();
                     cols = net.layers()[layer].outputs;
                     z.assign(net.cached_pre_activation(layer),
                              net.cached_pre_activation(layer) + rows * cols);
                     a.assign(net.cached_activation(layer),
                              net.cached_activation(layer) + rows * cols);
                 }
                 py::array_t<T> z_out({rows, cols}), a_out({rows, cols});
                 std::memcpy(z_out.mutable_data(), z.data(), sizeof(T) * rows * cols);
                 std::memcpy(a_out.mutable_data(), a.data(), sizeof(T) * rows * cols);
                 return py::make_tuple(z_out, a_out);
             })
        .def("zero_grad",
             [](Handle& h) {
                 py::gil_scoped_release release;
                 std::lock_guard<std::mutex> lock(h.mutex());
                 h.net().zero_grad();
             })
        .def("predict",
             [](Handle& h, py::array x, py::array out) {
                 auto& net = h.net();
                 const T* px = contiguous_data<T>(x, "X", 2, false);
                 T* po = contiguous_data<T>(out, "out", 2, true);
                 check_rows(x, "X", net.inputs());
                 check_rows(out, "out", net.outputs());
                 if (out.shape(0) != x.shape(0))
                     throw py::value_error("predict: X and out have different sample counts");
                 py::gil_scoped_release release;
                 std::lock_guard<std::mutex> lock(h.mutex());
                 net.predict(px, x.shape(0), po);
             })
        .def(
            "fit",
            [](Handle& h, py::array x, py::array y, Index epochs, Index batch_size, bool shuffle,
               const std::string& loss, double huber_delta, const py::dict& optimizer,
               const py::object& schedule, bool count_correct) {
                auto& net = h.net();
                const T* px = contiguous_data<T>(x, "X", 2, false);
                const T* py_ = contiguous_data<T>(y, "y", 2, false);
                check_rows(x, "X", net.inputs());
                check_rows(y, "y", net.outputs());
                if (y.shape(0) != x.shape(0))
                    throw py::value_error("fit: X and y have different sample counts");
                if (epochs < 1) throw py::value_error("fit: epochs must be >= 1");
                fastmlp::FitOptions options;
                options.epochs = epochs;
                options.batch_size = batch_size;
                options.shuffle = shuffle;
                options.loss = fastmlp::loss_from_name(loss);
                options.huber_delta = huber_delta;
                options.optimizer = optimizer_config(optimizer);
                options.schedule = schedule_config(schedule);
                options.count_correct = count_correct;
                py::array_t<double> losses(epochs), norms(epochs), lrs(epochs), accuracy(epochs);
                fastmlp::FitRecord record;
                record.loss = losses.mutable_data();
                record.grad_norm = norms.mutable_data();
                record.lr = lrs.mutable_data();
                record.accuracy = count_correct ? accuracy.mutable_data() : nullptr;
                // Ctrl-C: every 100 ms, take the GIL briefly and ask Python for signals.
                using clock = std::chrono::steady_clock;
                auto last_check = clock::now();
                bool python_error = false;
                auto should_stop = [&]() {
                    const auto now = clock::now();
                    if (now - last_check < std::chrono::milliseconds(100)) return false;
                    last_check = now;
                    py::gil_scoped_acquire acquire;
                    if (PyErr_CheckSignals() != 0) python_error = true;
                    return python_error;
                };
                fastmlp::FitResult result;
                {
                    py::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(h.mutex());
                    result = net.fit(px, py_, x.shape(0), options, record, should_stop);
                }
                if (python_error) throw py::error_already_set();
                const char* status = result.status == fastmlp::FitStatus::completed ? "completed"
                                     : result.status == fastmlp::FitStatus::non_finite
                                         ? "non_finite"
                                         : "interrupted";
                py::dict out;
                out["status"] = status;
                out["epochs"] = result.epochs_completed;
                out["failed_epoch"] = result.failed_epoch;
                out["failed_batch"] = result.failed_batch;
                out["reason"] = result.reason;
                out["loss"] = losses;
                out["grad_norm"] = norms;
                out["lr"] = lrs;
                if (count_correct) out["accuracy"] = accuracy;
                return out;
            },
            py::arg("x"), py::arg("y"), py::arg("epochs"), py::arg("batch_size"),
            py::arg("shuffle"), py::arg("loss"), py::arg("huber_delta"), py::arg("optimizer"),
            py::arg("schedule"), py::arg("count_correct"))
        .def(
            "optimizer_step",
            [](Handle& h, const py::dict& optimizer, const py::object& schedule) {
                const auto config = optimizer_config(optimizer);
                const auto sched = schedule_config(schedule);
                fastmlp::StepResult r;
                {
                    py::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(h.mutex());
                    r = h.net().optimizer_step(config, sched);
                }
                return py::make_tuple(r.grad_norm, r.lr, r.gradient_finite, r.kept);
            },
            py::arg("optimizer"), py::arg("schedule"))
        .def("reset_optimizer",
             [](Handle& h) {
                 py::gil_scoped_release release;
                 std::lock_guard<std::mutex> lock(h.mutex());
                 h.net().reset_optimizer();
             })
        .def("optimizer_state",
             [](Handle& h) {
                 // (rule, update count, [copies of the state buffers])
                 py::list buffers;
                 std::string kind;
                 std::int64_t steps = 0;
                 std::vector<std::vector<T>> copies;
                 {
                     py::gil_scoped_release release;
                     std::lock_guard<std::mutex> lock(h.mutex());
                     auto& net = h.net();
                     kind = fastmlp::optimizer_name(net.optimizer_kind());
                     steps = net.optimizer_steps();
                     for (int b = 0; b < net.optimizer_buffers(); ++b)
                         copies.emplace_back(net.optimizer_state(b),
                                             net.optimizer_state(b) + net.parameter_count());
                 }
                 for (const auto& c : copies) {
                     py::array_t<T> a(Index(c.size()));
                     std::memcpy(a.mutable_data(), c.data(), sizeof(T) * c.size());
                     buffers.append(a);
                 }
                 return py::make_tuple(kind, steps, buffers);
             })
        .def(
            "set_optimizer_state",
            [](Handle& h, const py::dict& optimizer, std::int64_t steps, const py::list& buffers) {
                const auto config = optimizer_config(optimizer);
                if (Index(buffers.size()) != config.state_buffers())
                    throw py::value_error("optimizer state: expected " +
                                          std::to_string(config.state_buffers()) + " buffers");
                std::vector<py::array> arrays;
                for (auto item : buffers) {
                    py::array a = py::reinterpret_borrow<py::array>(item);
                    contiguous_data<T>(a, "optimizer state", 1, false);
                    if (a.shape(0) != h.net().parameter_count())
                        throw py::value_error("optimizer state: wrong buffer length");
                    arrays.push_back(a);
                }
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(h.mutex());
                auto& net = h.net();
                net.reset_optimizer();
                net.prepare_optimizer(config);
                net.set_optimizer_steps(steps);
                for (std::size_t b = 0; b < arrays.size(); ++b)
                    std::memcpy(net.optimizer_state(int(b)), arrays[b].data(),
                                sizeof(T) * net.parameter_count());
            },
            py::arg("optimizer"), py::arg("steps"), py::arg("buffers"))
        .def(
            "evaluate",
            [](Handle& h, py::array x, py::array y, const std::string& loss, double huber_delta,
               bool count) {
                auto& net = h.net();
                const T* px = contiguous_data<T>(x, "X", 2, false);
                const T* py_ = contiguous_data<T>(y, "y", 2, false);
                check_rows(x, "X", net.inputs());
                check_rows(y, "y", net.outputs());
                if (y.shape(0) != x.shape(0))
                    throw py::value_error("evaluate: X and y have different sample counts");
                const fastmlp::Loss kind = fastmlp::loss_from_name(loss);
                Index correct = 0;
                double value = 0;
                {
                    py::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(h.mutex());
                    value = net.evaluate(px, py_, x.shape(0), kind, huber_delta,
                                         count ? &correct : nullptr);
                }
                return py::make_tuple(value, correct);
            },
            py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("huber_delta"),
            py::arg("count_correct"))
        .def("rng_state",
             [](Handle& h) {
                 fastmlp::Rng::State st;
                 {
                     py::gil_scoped_release release;
                     std::lock_guard<std::mutex> lock(h.mutex());
                     st = h.net().rng().state();
                 }
                 return py::make_tuple(
                     py::make_tuple(st.words[0], st.words[1], st.words[2], st.words[3]),
                     st.has_spare, st.spare);
             })
        .def(
            "set_rng_state",
            [](Handle& h, const std::vector<std::uint64_t>& words, bool has_spare, double spare) {
                if (words.size() != 4) throw py::value_error("rng state: expected 4 words");
                fastmlp::Rng::State st{{words[0], words[1], words[2], words[3]}, has_spare, spare};
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(h.mutex());
                h.net().rng().set_state(st);
            },
            py::arg("words"), py::arg("has_spare"), py::arg("spare"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastmlp's C++ kernels and engine (private: use the fastmlp package)";
#ifdef FASTMLP_VERSION
    m.attr("__version__") = FASTMLP_VERSION;
#endif

    m.def("gemm", &gemm_binding, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha"),
          py::arg("beta"), py::arg("trans_a"), py::arg("trans_b"), py::arg("naive") = false);
    m.def("activation_forward", &activation_forward_binding, py::arg("name"), py::arg("z"),
          py::arg("out"));
    m.def("activation_backward", &activation_backward_binding, py::arg("name"), py::arg("z"),
          py::arg("a"), py::arg("da"), py::arg("out"));
    m.def("bias_activation_forward", &bias_activation_forward_binding, py::arg("name"),
          py::arg("z"), py::arg("bias"), py::arg("out"));
    m.def("activation_bias_backward", &activation_bias_backward_binding, py::arg("name"),
          py::arg("z"), py::arg("a"), py::arg("da"), py::arg("out"), py::arg("d_bias"),
          py::arg("accumulate"));
    m.def("bias_add_forward", &bias_add_forward_binding, py::arg("z"), py::arg("bias"));
    m.def("bias_add_backward", &bias_add_backward_binding, py::arg("d_bias"), py::arg("dz"));
    m.def("mse_forward", &mse_forward_binding, py::arg("pred"), py::arg("target"));
    m.def("mse_backward", &mse_backward_binding, py::arg("out"), py::arg("pred"),
          py::arg("target"), py::arg("scale"));
    m.def("sgd_update", &sgd_update_binding, py::arg("params"), py::arg("grads"), py::arg("lr"));
    m.def("loss", &loss_binding, py::arg("name"), py::arg("pred"), py::arg("target"),
          py::arg("grad"), py::arg("delta") = 1.0);
    m.def("count_correct", &count_correct_binding, py::arg("name"), py::arg("pred"),
          py::arg("target"));
    m.def("softmax", &softmax_binding, py::arg("z"), py::arg("out"));
    m.def("grad_norm", &grad_norm_binding, py::arg("grads"), py::arg("clip_value") = 0.0);
    m.def("optimizer_update", &optimizer_update_binding, py::arg("config"), py::arg("params"),
          py::arg("grads"), py::arg("state1"), py::arg("state2"), py::arg("segments"),
          py::arg("t"), py::arg("lr"), py::arg("grad_scale") = 1.0);
    m.def(
        "schedule_factor",
        [](const py::object& schedule, Index t) {
            if (t < 0) throw py::value_error("schedule_factor: t must be >= 0");
            return schedule_config(schedule).factor(t);
        },
        py::arg("schedule"), py::arg("t"));

    bind_network<float>(m, "Network32");
    bind_network<double>(m, "Network64");

    m.def("gemm_kernel", []() { return std::string(fastmlp::gemm_kernel_name()); });
    m.def("gemm_available_kernels", &fastmlp::gemm_available_kernels);
    m.def("set_gemm_kernel", &fastmlp::set_gemm_kernel, py::arg("name"));

    m.def("get_num_threads", &fastmlp::get_num_threads);
    m.def("set_num_threads", &fastmlp::set_num_threads, py::arg("n"));
    m.def("build_info", []() {
        py::dict info;
        info["compiler"] = fastmlp::compiler_name();
        info["build_type"] = fastmlp::build_type();
        info["build_flags"] = fastmlp::build_flags();
        info["architecture"] = fastmlp::architecture();
        info["cpu_features"] = fastmlp::cpu_features();
        info["gemm_kernel"] = fastmlp::gemm_kernel_name();
        return info;
    });
}
