// bindings/cuda_kernels.cpp — fastmlp._core.cuda: the CUDA kernels (cpp/cuda/kernels.cuh)
// one function each, for the tests (built only with FASTMLP_CUDA).
//
// Each function takes NumPy arrays (float32 or float64, all of one dtype; any
// layout: a non-contiguous one is copied to a C-contiguous one first), checks
// their shapes (ValueError naming the argument), then with the GIL released copies
// them to the device, runs the kernel on the thread's stream, waits, copies the
// results back and returns new NumPy arrays. Nothing here is fast: it is the
// kernels' test harness. `available()` says whether a GPU can run them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../cuda/device.cuh"
#include "../cuda/kernels.cuh"
#include "arrays.hpp"
#include "bindings.hpp"

namespace fastmlp::bindings {
namespace {

namespace cu = fastmlp::cuda;

// The calling thread's stream (made on its first call, kept until the thread
// ends: gemm keeps a cuBLAS handle per stream), waited for at the end of a call.
class Stream {
public:
    Stream() : stream_(thread_stream()) {}
    cudaStream_t get() const { return stream_; }
    void wait() const { cu::check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

private:
    struct Owned {
        cudaStream_t stream = nullptr;
        Owned() { cu::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"); }
        ~Owned() {
            try {
                cu::cublas_release(stream);  // its cuBLAS handle, if any, goes with it
            } catch (const std::exception&) {  // a thread's end: nothing to report it to
            }
            cudaStreamDestroy(stream);
        }
        Owned(const Owned&) = delete;
        Owned& operator=(const Owned&) = delete;
    };
    static cudaStream_t thread_stream() {
        thread_local Owned owned;
        return owned.stream;
    }
    cudaStream_t stream_;
};

// ---- host arrays -------------------------------------------------------------------------------
// `object` as a C-contiguous array (copied when it is not one); nothing else converted.
py::array contiguous(const py::object& object, const char* name) {
    if (object.is_none()) throw py::value_error(std::string(name) + ": expected an array, got None");
    py::array array = py::array::ensure(object, py::array::c_style);
    if (!array) throw py::type_error(std::string(name) + ": expected a NumPy array");
    return array;
}

// None: a null array handle (false when tested; never read). A default py::array
// would not do: it is an empty array, true when tested.
py::array contiguous_or_none(const py::object& object, const char* name) {
    return object.is_none() ? py::reinterpret_steal<py::array>(py::handle()) : contiguous(object, name);
}

void require_ndim(const py::array& array, const char* name, int ndim) {
    if (array.ndim() != ndim)
        throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) +
                              "-D array, got shape " + shape_text(array));
}

void require_length(const py::array& array, const char* name, Index n, const char* what) {
    require_ndim(array, name, 1);
    if (array.shape(0) != n)
        throw py::value_error(std::string(name) + ": expected " + std::to_string(n) + " values (" +
                              what + "), got shape " + shape_text(array));
}

template <typename T>
const T* host(const py::array& array, const char* name) {
    require_dtype<T>(array, name);
    return static_cast<const T*>(array.data());
}

template <typename T>
py::array_t<T> empty_like_shape(const py::array& like) {
    std::vector<py::ssize_t> shape(like.shape(), like.shape() + like.ndim());
    return py::array_t<T>(shape);
}

// ---- device copies (GIL released) ----------------------------------------------------------
template <typename T>
cu::DeviceArray<T> upload(const T* data, Index n, cudaStream_t stream) {
    cu::DeviceArray<T> device(n);
    if (n > 0 && data != nullptr)
        cu::check(cudaMemcpyAsync(device.data(), data, sizeof(T) * std::size_t(n), cudaMemcpyHostToDevice,
                                  stream),
                  "cudaMemcpy (to the device)");
    return device;
}

template <typename T>
void download(T* out, const cu::DeviceArray<T>& device, Index n, cudaStream_t stream) {
    if (n > 0)
        cu::check(cudaMemcpyAsync(out, device.data(), sizeof(T) * std::size_t(n), cudaMemcpyDeviceToHost,
                                  stream),
                  "cudaMemcpy (to the host)");
}

// Dtype dispatch on `array` as arrays.hpp's dispatch, the call's GIL released.
template <typename Prepare>
auto on_dtype(const py::array& array, const char* name, Prepare&& prepare) {
    return dispatch(array, name, std::forward<Prepare>(prepare));
}

// ---- availability, cuBLAS --------------------------------------------------------------------
bool available() {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        cudaGetLastError();  // clear it
        return false;
    }
    return count > 0;
}

cu::Op op_from(const std::string& text, const char* name) {
    if (text == "N" || text == "n") return cu::Op::N;
    if (text == "T" || text == "t") return cu::Op::T;
    throw py::value_error(std::string(name) + ": expected \"N\" or \"T\", got \"" + text + "\"");
}

// ---- gemm ----------------------------------------------------------------------------------
// c (m, n) = op(a) · op(b) + beta · c, then bias, activation (z kept when keep_z).
py::object gemm_binding(const py::object& a_object, const py::object& b_object, const std::string& op_a_text,
                        const std::string& op_b_text, const py::object& c_object, double beta,
                        const py::object& bias_object, const std::string& activation_name, bool keep_z,
                        bool own) {
    const py::array a = contiguous(a_object, "a"), b = contiguous(b_object, "b");
    const py::array c_in = contiguous_or_none(c_object, "c");
    const py::array bias = contiguous_or_none(bias_object, "bias");
    const cu::Op op_a = op_from(op_a_text, "op_a"), op_b = op_from(op_b_text, "op_b");
    const Activation activation = activation_from_name(activation_name);
    if (beta != 0 && beta != 1) throw py::value_error("gemm: beta must be 0 or 1");
    if (beta != 0 && c_object.is_none()) throw py::value_error("gemm: beta = 1 needs c");
    require_ndim(a, "a", 2);
    require_ndim(b, "b", 2);
    const Index m = op_a == cu::Op::N ? a.shape(0) : a.shape(1);
    const Index k = op_a == cu::Op::N ? a.shape(1) : a.shape(0);
    const Index kb = op_b == cu::Op::N ? b.shape(0) : b.shape(1);
    const Index n = op_b == cu::Op::N ? b.shape(1) : b.shape(0);
    if (k != kb)
        throw py::value_error("gemm: op(a) is " + std::to_string(m) + " × " + std::to_string(k) +
                              " but op(b) is " + std::to_string(kb) + " × " + std::to_string(n));
    if (c_in) {
        require_ndim(c_in, "c", 2);
        if (c_in.shape(0) != m || c_in.shape(1) != n)
            throw py::value_error("gemm: c has shape " + shape_text(c_in) + ", expected (" +
                                  std::to_string(m) + ", " + std::to_string(n) + ")");
    }
    if (bias) require_length(bias, "bias", n, "one per column of c");
    return on_dtype(a, "a", [&](auto tag) {
        using T = decltype(tag);
        const T* pa = host<T>(a, "a");
        const T* pb = host<T>(b, "b");
        const T* pc = c_in ? host<T>(c_in, "c") : nullptr;
        const T* pbias = bias ? host<T>(bias, "bias") : nullptr;
        py::array_t<T> c({m, n}), z({keep_z ? m : Index(0), keep_z ? n : Index(0)});
        T* out = c.mutable_data();
        T* z_out = z.mutable_data();
        const Index a_size = a.size(), b_size = b.size();
        const Index lda = std::max<Index>(a.shape(1), 1), ldb = std::max<Index>(b.shape(1), 1);
        return [=, c = std::move(c), z = std::move(z)]() -> py::object {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto da = upload(pa, a_size, s);
                auto db = upload(pb, b_size, s);
                auto dc = upload(pc, m * n, s);  // allocated even without pc
                auto dbias = upload(pbias, pbias ? n : 0, s);
                cu::DeviceArray<T> dz(keep_z ? m * n : 0);
                cu::Epilogue<T> epilogue;
                epilogue.bias = pbias ? dbias.data() : nullptr;
                epilogue.activation = activation;
                epilogue.z_out = keep_z ? dz.data() : nullptr;
                epilogue.ldz = n;
                const Index ldc = std::max<Index>(n, 1);
                if (own)
                    cu::gemm_own_kernel<T>(s, op_a, op_b, m, n, k, da.data(), lda, db.data(), ldb, T(beta),
                                           dc.data(), ldc, epilogue);
                else
                    cu::gemm<T>(s, op_a, op_b, m, n, k, da.data(), lda, db.data(), ldb, T(beta), dc.data(),
                                ldc, epilogue);
                download(out, dc, m * n, s);
                if (keep_z) download(z_out, dz, m * n, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            if (keep_z) return py::make_tuple(c, z);
            return c;
        };
    });
}

// ---- activations ---------------------------------------------------------------------------
py::array activation_forward_binding(const std::string& name, const py::object& z_object, bool in_place) {
    const Activation activation = activation_from_name(name);
    const py::array z = contiguous(z_object, "z");
    return on_dtype(z, "z", [&](auto tag) {
        using T = decltype(tag);
        const T* pz = host<T>(z, "z");
        py::array_t<T> a = empty_like_shape<T>(z);
        T* out = a.mutable_data();
        const Index n = z.size();
        return [=, a = std::move(a)]() -> py::array {
            {
                Stream stream;
                auto dz = upload(pz, n, stream.get());
                cu::DeviceArray<T> da(in_place ? 0 : n);
                T* target = in_place ? dz.data() : da.data();
                cu::activation_forward<T>(stream.get(), activation, target, dz.data(), n);
                download(out, in_place ? dz : da, n, stream.get());
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return a;
        };
    });
}

py::array activation_backward_binding(const std::string& name, const py::object& da_object,
                                      const py::object& z_object, const py::object& a_object, bool in_place) {
    const Activation activation = activation_from_name(name);
    const py::array da = contiguous(da_object, "da"), z = contiguous(z_object, "z"),
                    a = contiguous(a_object, "a");
    require_same_shape(z, "z", da, "da");
    require_same_shape(a, "a", da, "da");
    return on_dtype(da, "da", [&](auto tag) {
        using T = decltype(tag);
        const T* pda = host<T>(da, "da");
        const T* pz = host<T>(z, "z");
        const T* pa = host<T>(a, "a");
        py::array_t<T> dz = empty_like_shape<T>(da);
        T* out = dz.mutable_data();
        const Index n = da.size();
        return [=, dz = std::move(dz)]() -> py::array {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_da = upload(pda, n, s), d_z = upload(pz, n, s), d_a = upload(pa, n, s);
                cu::DeviceArray<T> d_dz(in_place ? 0 : n);
                T* target = in_place ? d_da.data() : d_dz.data();
                cu::activation_backward<T>(s, activation, target, d_da.data(), d_z.data(), d_a.data(), n);
                download(out, in_place ? d_da : d_dz, n, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return dz;
        };
    });
}

// (dz, d_bias); d_bias given: accumulated into (a copy of) it. with_bias false: d_bias None.
py::tuple activation_bias_backward_binding(const std::string& name, const py::object& da_object,
                                           const py::object& z_object, const py::object& a_object,
                                           const py::object& d_bias_object, bool with_bias, bool in_place) {
    const Activation activation = activation_from_name(name);
    const py::array da = contiguous(da_object, "da"), z = contiguous(z_object, "z"),
                    a = contiguous(a_object, "a");
    const py::array bias_in = contiguous_or_none(d_bias_object, "d_bias");
    require_ndim(da, "da", 2);
    require_same_shape(z, "z", da, "da");
    require_same_shape(a, "a", da, "da");
    const Index rows = da.shape(0), cols = da.shape(1);
    if (bias_in) require_length(bias_in, "d_bias", cols, "one per column");
    return on_dtype(da, "da", [&](auto tag) {
        using T = decltype(tag);
        const T* pda = host<T>(da, "da");
        const T* pz = host<T>(z, "z");
        const T* pa = host<T>(a, "a");
        const T* pbias = bias_in ? host<T>(bias_in, "d_bias") : nullptr;
        py::array_t<T> dz = empty_like_shape<T>(da);
        py::array_t<T> db(std::vector<py::ssize_t>{py::ssize_t(with_bias ? cols : 0)});
        T* out = dz.mutable_data();
        T* out_bias = db.mutable_data();
        const Index n = rows * cols;
        return [=, dz = std::move(dz), db = std::move(db)]() -> py::tuple {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_da = upload(pda, n, s), d_z = upload(pz, n, s), d_a = upload(pa, n, s);
                cu::DeviceArray<T> d_dz(in_place ? 0 : n);
                auto d_db = upload(pbias, with_bias ? cols : 0, s);  // allocated even without pbias
                T* target = in_place ? d_da.data() : d_dz.data();
                cu::activation_bias_backward<T>(s, activation, target, with_bias ? d_db.data() : nullptr,
                                                d_da.data(), d_z.data(), d_a.data(), rows, cols,
                                                pbias != nullptr);
                download(out, in_place ? d_da : d_dz, n, s);
                if (with_bias) download(out_bias, d_db, cols, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return py::make_tuple(dz, with_bias ? py::object(db) : py::object(py::none()));
        };
    });
}

// ---- rows ----------------------------------------------------------------------------------
py::array gather_rows_binding(const py::object& src_object, const py::object& order_object, Index first,
                              Index rows) {
    const py::array src = contiguous(src_object, "src");
    require_ndim(src, "src", 2);
    const Index n = src.shape(0), width = src.shape(1);
    if (first < 0 || rows < 0) throw py::value_error("gather_rows: first and rows must be >= 0");
    std::vector<std::int32_t> order;
    if (!order_object.is_none()) {
        const py::array_t<std::int32_t, py::array::c_style | py::array::forcecast> o(order_object);
        require_ndim(o, "order", 1);
        if (first + rows > o.shape(0))
            throw py::value_error("gather_rows: order has " + std::to_string(o.shape(0)) +
                                  " entries, fewer than first + rows");
        order.assign(o.data(), o.data() + o.shape(0));
        for (Index r = first; r < first + rows; ++r)
            if (order[std::size_t(r)] < 0 || order[std::size_t(r)] >= n)
                throw py::value_error("gather_rows: order[" + std::to_string(r) + "] = " +
                                      std::to_string(order[std::size_t(r)]) + " is not a row of src");
    } else if (first + rows > n) {
        throw py::value_error("gather_rows: rows first .. first + rows exceed src's " + std::to_string(n));
    }
    const bool ordered = !order_object.is_none();
    return on_dtype(src, "src", [&](auto tag) {
        using T = decltype(tag);
        const T* psrc = host<T>(src, "src");
        py::array_t<T> dst({rows, width});
        T* out = dst.mutable_data();
        return [=, dst = std::move(dst), order = std::move(order)]() -> py::array {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_src = upload(psrc, n * width, s);
                auto d_order = upload(order.data(), Index(order.size()), s);
                cu::DeviceArray<T> d_dst(rows * width);
                cu::gather_rows<T>(s, d_dst.data(), d_src.data(), ordered ? d_order.data() : nullptr, first,
                                   rows, width);
                download(out, d_dst, rows * width, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return dst;
        };
    });
}

// ---- loss ----------------------------------------------------------------------------------
// (loss_sum, correct, normalizer, grad or None, status): with_state false runs it
// without a StepState (status then 0); status sets the state's status before the call.
py::tuple loss_binding(const std::string& name, const py::object& pred_object, const py::object& target_object,
                       const py::object& weight_object, double delta, bool count, bool with_grad, bool in_place,
                       bool with_state, int status_before, std::int64_t step) {
    const Loss loss = loss_from_name(name);
    const py::array pred = contiguous(pred_object, "pred"), target = contiguous(target_object, "target");
    const py::array weight = contiguous_or_none(weight_object, "weight");
    require_ndim(pred, "pred", 2);
    require_same_shape(target, "target", pred, "pred");
    const Index rows = pred.shape(0), outputs = pred.shape(1);
    if (weight) require_length(weight, "weight", rows, "one per row");
    if (step < 0) throw py::value_error("loss: step must be >= 0");
    return on_dtype(pred, "pred", [&](auto tag) {
        using T = decltype(tag);
        const T* pp = host<T>(pred, "pred");
        const T* pt = host<T>(target, "target");
        const T* pw = weight ? host<T>(weight, "weight") : nullptr;
        py::array_t<T> grad = empty_like_shape<T>(pred);
        T* out = grad.mutable_data();
        const Index n = rows * outputs;
        return [=, grad = std::move(grad)]() -> py::tuple {
            cu::StepFigures figures;
            cu::StepState state;
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_pred = upload(pp, n, s), d_target = upload(pt, n, s), d_weight = upload(pw, pw ? rows : 0, s);
                cu::DeviceArray<T> d_grad(with_grad && !in_place ? n : 0);
                if (d_grad.size() > 0)  // zeros where a failed state writes nothing
                    cu::check(cudaMemsetAsync(d_grad.data(), 0, sizeof(T) * std::size_t(n), s), "cudaMemset");
                T* g = !with_grad ? nullptr : (in_place ? d_pred.data() : d_grad.data());
                state.status = status_before;
                state.step = step;
                std::vector<cu::StepFigures> host_figures(std::size_t(step + 1));
                auto d_figures = upload(host_figures.data(), step + 1, s);
                auto d_state = upload(&state, 1, s);
                cu::loss_forward_backward<T>(s, loss, d_pred.data(), d_target.data(), pw ? d_weight.data() : nullptr,
                                             g, rows, outputs, delta, count, d_figures.data(),
                                             with_state ? d_state.data() : nullptr);
                if (with_grad) download(out, in_place ? d_pred : d_grad, n, s);
                download(host_figures.data(), d_figures, step + 1, s);
                download(&state, d_state, 1, s);
                stream.wait();
                figures = host_figures[std::size_t(with_state ? step : 0)];
            }
            py::gil_scoped_acquire acquire;
            return py::make_tuple(figures.loss_sum, figures.correct, figures.normalizer,
                                  with_grad ? py::object(grad) : py::object(py::none()), state.status);
        };
    });
}

// ---- optimizer -----------------------------------------------------------------------------
std::vector<Segment> segments_from(const py::object& object, Index n) {
    std::vector<Segment> segments;
    if (object.is_none()) return segments;
    Index covered = 0;
    for (const py::handle item : object) {
        const auto pair = item.cast<std::pair<Index, Index>>();
        Segment s{pair.first, pair.second};
        if (s.offset < covered || s.size < 0 || s.offset > n || s.size > n - s.offset)
            throw py::value_error("optimizer_update: segments must be in order, disjoint and inside the " +
                                  std::to_string(n) + " parameters, got (" + std::to_string(s.offset) + ", " +
                                  std::to_string(s.size) + ")");
        covered = s.offset + s.size;
        segments.push_back(s);
    }
    return segments;
}

// (params, s1, s2, grad_norm, lr, status, state dict) after one update from `t`
// updates made (status: the state's status before the call).
py::tuple optimizer_binding(const py::object& config_object, const py::object& schedule_object,
                            const py::object& params_object, const py::object& grads_object,
                            const py::object& s1_object, const py::object& s2_object,
                            const py::object& segments_object, std::int64_t t, int status_before,
                            std::int64_t step) {
    const OptimizerConfig config = config_object.cast<OptimizerConfig>();
    const Schedule schedule = schedule_object.is_none() ? Schedule{} : schedule_object.cast<Schedule>();
    const py::array params = contiguous(params_object, "params"), grads = contiguous(grads_object, "grads");
    const py::array s1 = contiguous_or_none(s1_object, "s1"), s2 = contiguous_or_none(s2_object, "s2");
    require_ndim(params, "params", 1);
    const Index n = params.shape(0);
    require_length(grads, "grads", n, "one per parameter");
    if (s1) require_length(s1, "s1", n, "one per parameter");
    if (s2) require_length(s2, "s2", n, "one per parameter");
    if (config.state_buffers() >= 1 && !s1) throw py::value_error("optimizer_update: this rule needs s1");
    if (config.state_buffers() >= 2 && !s2) throw py::value_error("optimizer_update: this rule needs s2");
    if (t < 0 || step < 0) throw py::value_error("optimizer_update: t and step must be >= 0");
    std::vector<Segment> segments = segments_from(segments_object, n);
    return on_dtype(params, "params", [&](auto tag) {
        using T = decltype(tag);
        const T* pp = host<T>(params, "params");
        const T* pg = host<T>(grads, "grads");
        const T* p1 = s1 ? host<T>(s1, "s1") : nullptr;
        const T* p2 = s2 ? host<T>(s2, "s2") : nullptr;
        py::array_t<T> params_out(n), s1_out(s1 ? n : 0), s2_out(s2 ? n : 0);
        T* o_params = params_out.mutable_data();
        T* o_s1 = s1_out.mutable_data();
        T* o_s2 = s2_out.mutable_data();
        return [=, params_out = std::move(params_out), s1_out = std::move(s1_out),
                s2_out = std::move(s2_out), segments = std::move(segments)]() -> py::tuple {
            cu::StepState state;
            cu::StepFigures figures;
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                state.t = t;
                state.step = step;
                state.status = status_before;
                auto d_params = upload(pp, n, s), d_grads = upload(pg, n, s);
                auto d_s1 = upload(p1, p1 ? n : 0, s), d_s2 = upload(p2, p2 ? n : 0, s);
                auto d_segments = upload(segments.data(), Index(segments.size()), s);
                cu::DeviceArray<double> scratch(cu::optimizer_scratch(n, Index(segments.size())));
                std::vector<cu::StepFigures> host_figures(std::size_t(step + 1));
                auto d_figures = upload(host_figures.data(), step + 1, s);
                auto d_state = upload(&state, 1, s);
                cu::optimizer_update<T>(s, config, schedule, d_params.data(), d_grads.data(),
                                        p1 ? d_s1.data() : nullptr, p2 ? d_s2.data() : nullptr, n,
                                        segments.empty() ? nullptr : d_segments.data(), Index(segments.size()),
                                        scratch.data(), d_state.data(), d_figures.data());
                download(o_params, d_params, n, s);
                if (p1) download(o_s1, d_s1, n, s);
                if (p2) download(o_s2, d_s2, n, s);
                download(host_figures.data(), d_figures, step + 1, s);
                download(&state, d_state, 1, s);
                stream.wait();
                figures = host_figures[std::size_t(step)];
            }
            py::gil_scoped_acquire acquire;
            py::dict info;
            info["t"] = state.t;
            info["step"] = state.step;
            info["status"] = state.status;
            info["failed_step"] = state.failed_step;
            info["grad_norm"] = state.grad_norm;
            info["scale"] = state.scale;
            info["lr"] = state.lr;
            info["bias1"] = state.bias1;
            info["bias2"] = state.bias2;
            info["kept"] = state.kept;
            return py::make_tuple(params_out, p1 ? py::object(s1_out) : py::object(py::none()),
                                  p2 ? py::object(s2_out) : py::object(py::none()), figures.grad_norm, figures.lr,
                                  state.status, info);
        };
    });
}

// ---- layers --------------------------------------------------------------------------------
// (y, xhat, rstd); in_place: y written over x's device copy.
py::tuple layer_norm_forward_binding(const py::object& x_object, const py::object& gain_object,
                                     const py::object& bias_object, double eps, bool in_place) {
    const py::array x = contiguous(x_object, "x"), gain = contiguous(gain_object, "gain"),
                    bias = contiguous(bias_object, "bias");
    require_ndim(x, "x", 2);
    const Index rows = x.shape(0), width = x.shape(1);
    require_length(gain, "gain", width, "one per column of x");
    require_length(bias, "bias", width, "one per column of x");
    return on_dtype(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T *px = host<T>(x, "x"), *pg = host<T>(gain, "gain"), *pb = host<T>(bias, "bias");
        py::array_t<T> y = empty_like_shape<T>(x), xhat = empty_like_shape<T>(x), rstd(rows);
        T *oy = y.mutable_data(), *oxhat = xhat.mutable_data(), *orstd = rstd.mutable_data();
        const Index n = rows * width;
        return [=, y = std::move(y), xhat = std::move(xhat), rstd = std::move(rstd)]() -> py::tuple {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_x = upload(px, n, s), d_g = upload(pg, width, s), d_b = upload(pb, width, s);
                cu::DeviceArray<T> d_y(in_place ? 0 : n), d_xhat(n), d_rstd(rows);
                T* target = in_place ? d_x.data() : d_y.data();
                cu::layer_norm_forward<T>(s, d_x.data(), d_g.data(), d_b.data(), d_xhat.data(), d_rstd.data(),
                                          target, rows, width, eps);
                download(oy, in_place ? d_x : d_y, n, s);
                download(oxhat, d_xhat, n, s);
                download(orstd, d_rstd, rows, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return py::make_tuple(y, xhat, rstd);
        };
    });
}

// layer norm's and batch norm's backward: (dx, d_gain, d_bias); d_gain, d_bias given:
// accumulated into copies of them. in_place: dx written over dy's device copy.
template <bool batch>
py::tuple norm_backward_binding(const py::object& dy_object, const py::object& xhat_object,
                                const py::object& rstd_object, const py::object& gain_object,
                                const py::object& d_gain_object, const py::object& d_bias_object, bool in_place) {
    const py::array dy = contiguous(dy_object, "dy"), xhat = contiguous(xhat_object, "xhat"),
                    rstd = contiguous(rstd_object, "rstd"), gain = contiguous(gain_object, "gain");
    const py::array g_in = contiguous_or_none(d_gain_object, "d_gain"),
                    b_in = contiguous_or_none(d_bias_object, "d_bias");
    require_ndim(dy, "dy", 2);
    require_same_shape(xhat, "xhat", dy, "dy");
    const Index rows = dy.shape(0), width = dy.shape(1);
    require_length(rstd, "rstd", batch ? width : rows, batch ? "one per column" : "one per row");
    require_length(gain, "gain", width, "one per column of dy");
    if (bool(g_in) != bool(b_in)) throw py::value_error("d_gain and d_bias: give both or neither");
    if (g_in) {
        require_length(g_in, "d_gain", width, "one per column of dy");
        require_length(b_in, "d_bias", width, "one per column of dy");
    }
    return on_dtype(dy, "dy", [&](auto tag) {
        using T = decltype(tag);
        const T *pdy = host<T>(dy, "dy"), *pxhat = host<T>(xhat, "xhat"), *prstd = host<T>(rstd, "rstd"),
                *pgain = host<T>(gain, "gain");
        const T* pg_in = g_in ? host<T>(g_in, "d_gain") : nullptr;
        const T* pb_in = b_in ? host<T>(b_in, "d_bias") : nullptr;
        py::array_t<T> dx = empty_like_shape<T>(dy), d_gain(width), d_bias(width);
        T *odx = dx.mutable_data(), *og = d_gain.mutable_data(), *ob = d_bias.mutable_data();
        const Index n = rows * width;
        const Index rstd_n = batch ? width : rows;
        return [=, dx = std::move(dx), d_gain = std::move(d_gain), d_bias = std::move(d_bias)]() -> py::tuple {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_dy = upload(pdy, n, s), d_xhat = upload(pxhat, n, s), d_rstd = upload(prstd, rstd_n, s),
                     d_gain_in = upload(pgain, width, s);
                auto d_g = upload(pg_in, width, s), d_b = upload(pb_in, width, s);  // allocated even when null
                cu::DeviceArray<T> d_dx(in_place ? 0 : n);
                T* target = in_place ? d_dy.data() : d_dx.data();
                if (batch)
                    cu::batch_norm_backward<T>(s, d_dy.data(), d_xhat.data(), d_rstd.data(), d_gain_in.data(),
                                               target, d_g.data(), d_b.data(), rows, width, pg_in != nullptr);
                else
                    cu::layer_norm_backward<T>(s, d_dy.data(), d_xhat.data(), d_rstd.data(), d_gain_in.data(),
                                               target, d_g.data(), d_b.data(), rows, width, pg_in != nullptr);
                download(odx, in_place ? d_dy : d_dx, n, s);
                download(og, d_g, width, s);
                download(ob, d_b, width, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return py::make_tuple(dx, d_gain, d_bias);
        };
    });
}

// (y, xhat, rstd, running_mean, running_var): the running statistics moved (copies;
// None when not given).
py::tuple batch_norm_train_binding(const py::object& x_object, const py::object& gain_object,
                                   const py::object& bias_object, const py::object& mean_object,
                                   const py::object& var_object, double eps, double momentum, bool in_place) {
    const py::array x = contiguous(x_object, "x"), gain = contiguous(gain_object, "gain"),
                    bias = contiguous(bias_object, "bias");
    const py::array mean = contiguous_or_none(mean_object, "running_mean"),
                    var = contiguous_or_none(var_object, "running_var");
    require_ndim(x, "x", 2);
    const Index rows = x.shape(0), width = x.shape(1);
    require_length(gain, "gain", width, "one per column of x");
    require_length(bias, "bias", width, "one per column of x");
    if (bool(mean) != bool(var)) throw py::value_error("running_mean and running_var: give both or neither");
    if (mean) {
        require_length(mean, "running_mean", width, "one per column of x");
        require_length(var, "running_var", width, "one per column of x");
    }
    return on_dtype(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T *px = host<T>(x, "x"), *pg = host<T>(gain, "gain"), *pb = host<T>(bias, "bias");
        const T* pm = mean ? host<T>(mean, "running_mean") : nullptr;
        const T* pv = var ? host<T>(var, "running_var") : nullptr;
        py::array_t<T> y = empty_like_shape<T>(x), xhat = empty_like_shape<T>(x), rstd(width),
                       mean_out(mean ? width : 0), var_out(var ? width : 0);
        T *oy = y.mutable_data(), *oxhat = xhat.mutable_data(), *orstd = rstd.mutable_data(),
          *om = mean_out.mutable_data(), *ov = var_out.mutable_data();
        const Index n = rows * width;
        const bool running = pm != nullptr;
        return [=, y = std::move(y), xhat = std::move(xhat), rstd = std::move(rstd), mean_out = std::move(mean_out),
                var_out = std::move(var_out)]() -> py::tuple {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_x = upload(px, n, s), d_g = upload(pg, width, s), d_b = upload(pb, width, s);
                auto d_m = upload(pm, running ? width : 0, s), d_v = upload(pv, running ? width : 0, s);
                cu::DeviceArray<T> d_y(in_place ? 0 : n), d_xhat(n), d_rstd(width);
                T* target = in_place ? d_x.data() : d_y.data();
                cu::batch_norm_forward_train<T>(s, d_x.data(), d_g.data(), d_b.data(), d_xhat.data(), d_rstd.data(),
                                                target, running ? d_m.data() : nullptr,
                                                running ? d_v.data() : nullptr, rows, width, eps, momentum);
                download(oy, in_place ? d_x : d_y, n, s);
                download(oxhat, d_xhat, n, s);
                download(orstd, d_rstd, width, s);
                if (running) {
                    download(om, d_m, width, s);
                    download(ov, d_v, width, s);
                }
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return py::make_tuple(y, xhat, rstd, running ? py::object(mean_out) : py::object(py::none()),
                                  running ? py::object(var_out) : py::object(py::none()));
        };
    });
}

py::array batch_norm_eval_binding(const py::object& x_object, const py::object& gain_object,
                                  const py::object& bias_object, const py::object& mean_object,
                                  const py::object& var_object, double eps) {
    const py::array x = contiguous(x_object, "x"), gain = contiguous(gain_object, "gain"),
                    bias = contiguous(bias_object, "bias"), mean = contiguous(mean_object, "running_mean"),
                    var = contiguous(var_object, "running_var");
    require_ndim(x, "x", 2);
    const Index rows = x.shape(0), width = x.shape(1);
    require_length(gain, "gain", width, "one per column of x");
    require_length(bias, "bias", width, "one per column of x");
    require_length(mean, "running_mean", width, "one per column of x");
    require_length(var, "running_var", width, "one per column of x");
    return on_dtype(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T *px = host<T>(x, "x"), *pg = host<T>(gain, "gain"), *pb = host<T>(bias, "bias"),
                *pm = host<T>(mean, "running_mean"), *pv = host<T>(var, "running_var");
        py::array_t<T> y = empty_like_shape<T>(x);
        T* oy = y.mutable_data();
        const Index n = rows * width;
        return [=, y = std::move(y)]() -> py::array {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_x = upload(px, n, s), d_g = upload(pg, width, s), d_b = upload(pb, width, s),
                     d_m = upload(pm, width, s), d_v = upload(pv, width, s);
                cu::batch_norm_forward_eval<T>(s, d_x.data(), d_g.data(), d_b.data(), d_m.data(), d_v.data(),
                                               d_x.data(), rows, width, eps);  // y over x
                download(oy, d_x, n, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return y;
        };
    });
}

py::array dropout_mask_binding(Index n, double p, std::uint64_t seed, std::int64_t counter) {
    if (n < 0) throw py::value_error("dropout_mask: n must be >= 0");
    if (!(p >= 0 && p < 1)) throw py::value_error("dropout_mask: p must be in [0, 1)");
    py::array_t<std::uint8_t> mask(n);
    std::uint8_t* out = mask.mutable_data();
    {
        py::gil_scoped_release release;
        Stream stream;
        const cudaStream_t s = stream.get();
        auto d_counter = upload(&counter, 1, s);
        cu::DeviceArray<std::uint8_t> d_mask(n);
        cu::dropout_mask(s, d_mask.data(), n, p, seed, d_counter.data());
        download(out, d_mask, n, s);
        stream.wait();
    }
    return mask;
}

// dropout forward (backward is the same map) of x by mask.
template <bool backward>
py::array dropout_binding(const py::object& x_object, const py::object& mask_object, double p) {
    const py::array x = contiguous(x_object, backward ? "dy" : "x");
    const py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> mask(mask_object);
    require_same_shape(mask, "mask", x, backward ? "dy" : "x");
    if (!(p >= 0 && p < 1)) throw py::value_error("dropout: p must be in [0, 1)");
    return on_dtype(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = host<T>(x, "x");
        const std::uint8_t* pm = mask.data();
        py::array_t<T> y = empty_like_shape<T>(x);
        T* oy = y.mutable_data();
        const Index n = x.size();
        return [=, y = std::move(y)]() -> py::array {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_x = upload(px, n, s);
                auto d_mask = upload(pm, n, s);
                cu::DeviceArray<T> d_y(n);
                if (backward)
                    cu::dropout_backward<T>(s, d_x.data(), d_mask.data(), d_y.data(), n, p);
                else
                    cu::dropout_forward<T>(s, d_x.data(), d_mask.data(), d_y.data(), n, p);
                download(oy, d_y, n, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return y;
        };
    });
}

// residual_add (x + skip into a new array) or add_into (dst += src, in place on the device).
template <bool into>
py::array add_binding(const py::object& x_object, const py::object& other_object) {
    const py::array x = contiguous(x_object, into ? "dst" : "x"), other = contiguous(other_object, into ? "src" : "skip");
    require_same_shape(other, into ? "src" : "skip", x, into ? "dst" : "x");
    return on_dtype(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = host<T>(x, into ? "dst" : "x");
        const T* po = host<T>(other, into ? "src" : "skip");
        py::array_t<T> y = empty_like_shape<T>(x);
        T* oy = y.mutable_data();
        const Index n = x.size();
        return [=, y = std::move(y)]() -> py::array {
            {
                Stream stream;
                const cudaStream_t s = stream.get();
                auto d_x = upload(px, n, s), d_o = upload(po, n, s);
                if (into) {
                    cu::add_into<T>(s, d_x.data(), d_o.data(), n);
                } else {
                    cu::residual_add<T>(s, d_x.data(), d_o.data(), d_x.data(), n);  // y over x
                }
                download(oy, d_x, n, s);
                stream.wait();
            }
            py::gil_scoped_acquire acquire;
            return y;
        };
    });
}

}  // namespace

void bind_cuda_kernels(py::module_& parent) {
    py::module_ m = parent.def_submodule(
        "cuda", "fastmlp's CUDA kernels one by one, host arrays in and out (for the tests)");
    using namespace pybind11::literals;
    m.def("available", &available, "Whether a GPU can run the kernels (a device and a driver).");
    m.def("cublas_load", [](const std::string& path) {
        py::gil_scoped_release release;
        return cu::cublas_load(path);
    }, "path"_a = "", "Load cuBLAS (a path, or \"\": the loader's search); returns what was loaded or \"\".");
    m.def("use_cublas", &cu::use_cublas, "on"_a);
    m.def("cublas_active", &cu::cublas_active);
    m.def("gemm", &gemm_binding, "a"_a, "b"_a, "op_a"_a = "N", "op_b"_a = "N", "c"_a = py::none(),
          "beta"_a = 0.0, "bias"_a = py::none(), "activation"_a = "linear", "keep_z"_a = false,
          "own"_a = false,
          "c = op(a) op(b) + beta c, then bias and activation; (c, z) when keep_z. own: the own "
          "kernel whatever cuBLAS.");
    m.def("activation_forward", &activation_forward_binding, "name"_a, "z"_a, "in_place"_a = false);
    m.def("activation_backward", &activation_backward_binding, "name"_a, "da"_a, "z"_a, "a"_a,
          "in_place"_a = false);
    m.def("activation_bias_backward", &activation_bias_backward_binding, "name"_a, "da"_a, "z"_a, "a"_a,
          "d_bias"_a = py::none(), "with_bias"_a = true, "in_place"_a = false,
          "(dz, d_bias); d_bias given: the sums are added to it.");
    m.def("gather_rows", &gather_rows_binding, "src"_a, "order"_a, "first"_a, "rows"_a);
    m.def("loss_forward_backward", &loss_binding, "loss"_a, "pred"_a, "target"_a, "weight"_a = py::none(),
          "delta"_a = 1.0, "count_correct"_a = false, "grad"_a = true, "in_place"_a = false,
          "with_state"_a = true, "status"_a = 0, "step"_a = 0,
          "(loss_sum, correct, normalizer, grad, status).");
    m.def("optimizer_scratch", &cu::optimizer_scratch, "n"_a, "segments"_a);
    m.def("optimizer_update", &optimizer_binding, "config"_a, "schedule"_a, "params"_a, "grads"_a,
          "s1"_a = py::none(), "s2"_a = py::none(), "segments"_a = py::none(), "t"_a = 0, "status"_a = 0,
          "step"_a = 0, "(params, s1, s2, grad_norm, lr, status, state) after one update from t updates.");
    m.def("layer_norm_forward", &layer_norm_forward_binding, "x"_a, "gain"_a, "bias"_a, "eps"_a = 1e-5,
          "in_place"_a = false, "(y, xhat, rstd)");
    m.def("layer_norm_backward", &norm_backward_binding<false>, "dy"_a, "xhat"_a, "rstd"_a, "gain"_a,
          "d_gain"_a = py::none(), "d_bias"_a = py::none(), "in_place"_a = false, "(dx, d_gain, d_bias)");
    m.def("batch_norm_forward_train", &batch_norm_train_binding, "x"_a, "gain"_a, "bias"_a,
          "running_mean"_a = py::none(), "running_var"_a = py::none(), "eps"_a = 1e-5, "momentum"_a = 0.1,
          "in_place"_a = false, "(y, xhat, rstd, running_mean, running_var)");
    m.def("batch_norm_forward_eval", &batch_norm_eval_binding, "x"_a, "gain"_a, "bias"_a, "running_mean"_a,
          "running_var"_a, "eps"_a = 1e-5);
    m.def("batch_norm_backward", &norm_backward_binding<true>, "dy"_a, "xhat"_a, "rstd"_a, "gain"_a,
          "d_gain"_a = py::none(), "d_bias"_a = py::none(), "in_place"_a = false, "(dx, d_gain, d_bias)");
    m.def("dropout_mask", &dropout_mask_binding, "n"_a, "p"_a, "seed"_a, "counter"_a);
    m.def("dropout_forward", &dropout_binding<false>, "x"_a, "mask"_a, "p"_a);
    m.def("dropout_backward", &dropout_binding<true>, "dy"_a, "mask"_a, "p"_a);
    m.def("residual_add", &add_binding<false>, "x"_a, "skip"_a);
    m.def("add_into", &add_binding<true>, "dst"_a, "src"_a, "dst + src (the kernel adds in place)");
}

}  // namespace fastmlp::bindings
