// bindings/arrays.hpp — checked views of NumPy arrays, and the one dispatch pattern.
//
// Inputs are read through data(), so read-only arrays (np.load(mmap_mode="r"),
// np.frombuffer) are used as they are, without a copy; outputs are written
// through mutable_data() and a read-only one is refused, naming the argument.
// Every binding runs as dispatch(array, name, prepare): prepare(T{}) checks the
// arguments with the GIL held and returns the kernel call, which then runs with
// the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <utility>

#include "fastmlp/common.hpp"

namespace fastmlp::bindings {

namespace py = pybind11;
using Index = fastmlp::index;

template <typename T>
const char* dtype_name() {
    return sizeof(T) == 4 ? "float32" : "float64";
}

template <typename T>
bool has_dtype(const py::array& array) {
    return array.dtype().is(py::dtype::of<T>());
}

inline std::string shape_text(const py::array& array) {
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

inline void require_writable(const py::array& array, const char* name) {
    if (!array.writeable())
        throw py::value_error(std::string(name) + ": the array is read-only (it is written)");
}

// A C-contiguous array of T with the given ndim (any ndim when ndim < 0).
template <typename T>
const T* input(const py::array& array, const char* name, int ndim = -1) {
    require_dtype<T>(array, name);
    if (ndim >= 0 && array.ndim() != ndim)
        throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) +
                              "-D array, got shape " + shape_text(array));
    if (!(array.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + ": expected a C-contiguous array");
    return static_cast<const T*>(array.data());
}

// Per-sample weights: None (nullptr), or a C-contiguous (n,) array of T.
template <typename T>
const T* optional_weights(const py::object& weights, Index n, const char* name) {
    if (weights.is_none()) return nullptr;
    const py::array array = weights.cast<py::array>();
    const T* p = input<T>(array, name, 1);
    if (array.shape(0) != n)
        throw py::value_error(std::string(name) + ": expected " + std::to_string(n) +
                              " weights (one per sample), got " + std::to_string(array.shape(0)));
    return p;
}

template <typename T>
T* output(py::array& array, const char* name, int ndim = -1) {
    input<T>(array, name, ndim);
    require_writable(array, name);
    return static_cast<T*>(array.mutable_data());
}

// Why a non-empty rows × cols matrix with these byte strides cannot be read in
// place with contiguous rows (nullptr: it can; ld is then its leading dimension
// in elements of `item` bytes).
inline const char* row_major_problem(Index rows, Index cols, Index row_stride, Index col_stride,
                                     Index item, Index& ld) {
    ld = std::max<Index>(cols, 1);
    if (cols > 1 && col_stride != item) return "rows must be contiguous (unit column stride)";
    if (rows > 1) {
        if (row_stride % item != 0 || row_stride / item < ld) return "unsupported row stride";
        ld = row_stride / item;
    }
    return nullptr;
}

// Whether a 2-D array of T can be read in place with contiguous rows (any empty
// one can: NumPy gives empty arrays any strides, and nothing is read); sets ld.
template <typename T>
const char* matrix_problem(const py::array& array, Index& ld) {
    if (array.size() == 0) {
        ld = std::max<Index>(array.shape(1), 1);
        return nullptr;
    }
    return row_major_problem(array.shape(0), array.shape(1), array.strides(0), array.strides(1),
                             Index(sizeof(T)), ld);
}

// A 2-D matrix whose rows are contiguous (unit column stride), with its leading dimension.
template <typename T>
const T* input_matrix(const py::array& array, const char* name, Index& ld) {
    require_dtype<T>(array, name);
    if (array.ndim() != 2)
        throw py::value_error(std::string(name) + ": expected a 2-D array, got shape " +
                              shape_text(array));
    if (const char* problem = matrix_problem<T>(array, ld))
        throw py::value_error(std::string(name) + ": " + problem);
    return static_cast<const T*>(array.data());
}

template <typename T>
T* output_matrix(py::array& array, const char* name, Index& ld) {
    input_matrix<T>(array, name, ld);
    require_writable(array, name);
    return static_cast<T*>(array.mutable_data());
}

inline void require_same_shape(const py::array& a, const char* a_name, const py::array& b,
                               const char* b_name) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == b.shape(d);
    if (!same)
        throw py::value_error(std::string(a_name) + " has shape " + shape_text(a) + " but " +
                              b_name + " has shape " + shape_text(b) +
                              ": expected the same shape");
}

// A bias vector (O) for a (B, O) matrix; names the kernel and both arrays otherwise.
inline void require_bias_width(const char* kernel, const py::array& bias, const char* bias_name,
                               const py::array& matrix, const char* matrix_name) {
    if (bias.shape(0) != matrix.shape(1))
        throw py::value_error(std::string(kernel) + ": " + bias_name + " has shape " +
                              shape_text(bias) + " but " + matrix_name + " has " +
                              std::to_string(matrix.shape(1)) + " columns");
}

// The bytes [first, last) an array's elements span (empty: first == last).
inline std::pair<const char*, const char*> byte_range(const py::array& array) {
    const char* first = static_cast<const char*>(array.data());
    if (array.size() == 0) return {first, first};
    const char* last = first;
    for (py::ssize_t d = 0; d < array.ndim(); ++d) {
        const Index step = Index(array.strides(d)) * Index(array.shape(d) - 1);
        (step < 0 ? first : last) += step;
    }
    return {first, last + array.itemsize()};
}

// Whether two arrays' elements share any byte.
inline bool bytes_overlap(const py::array& x, const py::array& y) {
    const auto a = byte_range(x), b = byte_range(y);
    return a.first < a.second && b.first < b.second && a.first < b.second && b.first < a.second;
}

inline bool same_view(const py::array& a, const py::array& b) {
    if (a.data() != b.data() || a.ndim() != b.ndim()) return false;
    for (py::ssize_t d = 0; d < a.ndim(); ++d)
        if (a.shape(d) != b.shape(d) || a.strides(d) != b.strides(d)) return false;
    return true;
}

// An output the kernel writes while it reads `in`: their bytes must not overlap
// (or, when same_allowed, be exactly the same view: an elementwise kernel that
// reads each element before it writes it).
inline void require_disjoint(const py::array& out, const char* out_name, const py::array& in,
                             const char* in_name, bool same_allowed = false) {
    if (same_allowed && same_view(out, in)) return;
    if (bytes_overlap(out, in))
        throw py::value_error(std::string(out_name) + " overlaps " + in_name +
                              " in memory: pass an output that shares no memory with the inputs" +
                              (same_allowed ? std::string(" (or ") + in_name + " itself)" : ""));
}

// Runs prepare(T{}) with T the dtype of `array` (float32 or float64): it checks
// the arguments (GIL held) and returns the kernel call, run with the GIL released.
template <typename Prepare>
auto dispatch(const py::array& array, const char* name, Prepare&& prepare) {
    auto run = [&](auto tag) {
        auto kernel = prepare(tag);
        py::gil_scoped_release release;
        return kernel();
    };
    if (has_dtype<float>(array)) return run(float{});
    if (has_dtype<double>(array)) return run(double{});
    throw py::type_error(std::string(name) + ": expected dtype float32 or float64, got " +
                         std::string(py::str(array.dtype())));
}

}  // namespace fastmlp::bindings
