// bindings/network.cpp — the engine as fastmlp._core.Network32 / Network64.
//
// Locking. Each network has one lock (NetworkLock). The GIL is always released
// before the lock is taken, and no Python runs while a call holds it, so the two
// never deadlock. Readers (predict, evaluate, cache, snapshot) take the lock
// alone. Mutators (forward, backward, zero_grad, optimizer_step, reset_optimizer,
// restore, fit) also wait until no fit is running. A fit holds the lock while it
// steps; between two batches it lets in the readers waiting at that moment, and
// every 100 ms it lets go of the lock to ask Python for signals (Ctrl-C). So a
// reader on another thread, or in a signal handler, sees the network between
// two batches (parameters and optimizer state of the same update), never in the
// middle of one; a mutator called from a signal handler on the fitting thread
// raises RuntimeError instead of waiting for a fit that waits for it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "fastmlp/cuda.hpp"
#include "fastmlp/network.hpp"

namespace fastmlp::bindings {
namespace {

class NetworkLock {
public:
    using Guard = std::unique_lock<std::mutex>;

    // For a call that only reads the network; a running fit lets it in between two batches.
    Guard read() {
        ++arrivals_;
        Guard lock(mutex_);
        ++served_;
        changed_.notify_all();
        return lock;
    }

    // For a call that changes the network: once no fit is running. On the thread
    // that runs a fit (a signal handler during it) it throws instead.
    Guard write(const char* what) {
        Guard lock(mutex_);
        if (fitting_ && fit_thread_ == std::this_thread::get_id())
            throw std::runtime_error(std::string(what) +
                                     ": this network is running a fit on this thread (called "
                                     "from a signal handler during fit?); call it after the fit");
        changed_.wait(lock, [&] { return !fitting_; });
        return lock;
    }

    // Marks a fit as running while it lives; made and destroyed under write()'s guard.
    class Fitting {
    public:
        explicit Fitting(NetworkLock& lock) : lock_(lock) {
            lock_.fitting_ = true;
            lock_.fit_thread_ = std::this_thread::get_id();
        }
        ~Fitting() {
            lock_.fitting_ = false;
            lock_.changed_.notify_all();
        }
        Fitting(const Fitting&) = delete;
        Fitting& operator=(const Fitting&) = delete;

    private:
        NetworkLock& lock_;
    };

    // Between two batches of a fit (guard held): lets in the readers waiting now.
    void let_readers_in(Guard& guard) {
        const std::uint64_t waiting = arrivals_.load();
        changed_.wait(guard, [&] { return served_ >= waiting; });
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::atomic<std::uint64_t> arrivals_{0};  // readers that asked for the lock
    std::uint64_t served_ = 0;                 // readers that got it (guarded by mutex_)
    bool fitting_ = false;                     // guarded by mutex_
    std::thread::id fit_thread_;
};

// A layer of the list the Python layer passes: a dict with "type" and the keys
// that type reads ("inputs", "outputs", "init", "activation", "eps", "momentum",
// "p", "skip_from"); fastmlp.network checks them first, with better messages.
LayerSpec layer_spec(const py::handle& item, std::size_t l) {
    const std::string where = "layers[" + std::to_string(l) + "]";
    if (!py::isinstance<py::dict>(item))
        throw py::type_error(where + ": expected a dict, got " + std::string(py::repr(item)));
    const auto d = py::reinterpret_borrow<py::dict>(item);
    if (!d.contains("type")) throw py::value_error(where + ": has no \"type\"");
    LayerSpec spec;
    spec.kind = layer_kind_names.from_name(d["type"].cast<std::string>());
    auto get = [&](const char* key, auto& field) {
        if (d.contains(key)) field = d[key].cast<std::remove_reference_t<decltype(field)>>();
    };
    get("inputs", spec.inputs);
    get("outputs", spec.outputs);
    if (spec.kind != LayerKind::dense) spec.outputs = spec.inputs;
    if (d.contains("init")) spec.init = init_from_name(d["init"].cast<std::string>());
    if (d.contains("activation"))
        spec.activation = activation_from_name(d["activation"].cast<std::string>());
    get("eps", spec.eps);
    get("momentum", spec.momentum);
    get("p", spec.p);
    get("skip_from", spec.skip_from);
    return spec;
}

std::vector<LayerSpec> layer_specs(const py::list& layers) {
    std::vector<LayerSpec> specs;
    for (std::size_t l = 0; l < layers.size(); ++l) specs.push_back(layer_spec(layers[l], l));
    return specs;
}

// The layer list of a plain stack of dense layers, each with its activation.
std::vector<LayerSpec> dense_stack(const std::vector<index>& sizes,
                                   const std::vector<std::string>& activations,
                                   const std::vector<std::string>& inits) {
    require(sizes.size() >= 2, "Network: layer_sizes needs at least an input and an output size");
    require(activations.size() == sizes.size() - 1, "Network: expected one activation per layer");
    require(inits.empty() || inits.size() == sizes.size() - 1,
            "initialize: expected one scheme per layer");
    std::string listed;
    for (const index size : sizes) listed += (listed.empty() ? "[" : ", ") + std::to_string(size);
    listed += "]";
    require(*std::min_element(sizes.begin(), sizes.end()) >= 1,
            "Network: every entry of layer_sizes must be >= 1, got " + listed);
    const std::string too_large = "Network: layer_sizes " + listed +
                                  " hold more parameters than an index can count";
    index count = 0;
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l)
        count = checked_sum(
            count,
            checked_sum(checked_product(sizes[l], sizes[l + 1], too_large.c_str()), sizes[l + 1],
                        too_large.c_str()),
            too_large.c_str());
    std::vector<LayerSpec> layers;
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
        LayerSpec dense;
        dense.inputs = sizes[l];
        dense.outputs = sizes[l + 1];
        if (!inits.empty()) dense.init = init_from_name(inits[l]);
        layers.push_back(dense);
        LayerSpec activation;
        activation.kind = LayerKind::activation;
        activation.inputs = activation.outputs = sizes[l + 1];
        activation.activation = activation_from_name(activations[l]);
        layers.push_back(activation);
    }
    return layers;
}

// One network, its lock and, when it lives on a GPU, its device side.
//
// On a device (to_device), the host network stays the mirror of the device's
// buffers: fit, predict and evaluate run on the device; every other call runs on
// the host mirror, first brought up to date (sync_host: the device's buffers
// copied back when a device fit changed them), and marks it changed when it
// writes (host_changed: the device gets the host's buffers before its next call).
// Both under the network's lock.
template <typename T>
class NetworkHandle {
public:
    NetworkHandle(const std::vector<LayerSpec>& layers, std::uint64_t seed) : net_(layers, seed) {}

    Network<T>& net() { return net_; }
    NetworkLock& lock() { return lock_; }

    bool on_device() const { return device_ != nullptr; }
    void to_device(std::uint64_t mask_seed) {
        if (device_) return;  // already there, with whatever is pending
        device_ = std::make_unique<cuda::DeviceNetwork<T>>(net_, mask_seed);
        device_ahead_ = host_ahead_ = false;
    }
    void to_host() {
        sync_host();
        device_.reset();
        host_ahead_ = false;
    }
    // The host mirror up to date (for a call that reads or writes it).
    void sync_host() {
        if (device_ && device_ahead_) device_->download(net_);
        device_ahead_ = false;
    }
    void host_changed() {
        if (device_) host_ahead_ = true;
    }
    // The device, up to date, for a call that runs there (null: on the host); a
    // fit marks it ahead of the host (device_changed).
    cuda::DeviceNetwork<T>* device() {
        if (!device_) return nullptr;
        if (host_ahead_) device_->upload(net_);
        host_ahead_ = false;
        return device_.get();
    }
    void device_changed() {
        if (device_) device_ahead_ = true;
    }

private:
    Network<T> net_;
    NetworkLock lock_;
    std::unique_ptr<cuda::DeviceNetwork<T>> device_;
    bool device_ahead_ = false;  // a device fit changed the device's buffers since the last sync
    bool host_ahead_ = false;    // a host call changed the host's buffers since the last upload
};

template <typename T>
using NetworkClass = py::class_<NetworkHandle<T>>;

void check_rows(const py::array& array, const char* name, index cols) {
    if (array.ndim() != 2 || array.shape(1) != cols)
        throw py::value_error(std::string(name) + ": expected shape (n, " + std::to_string(cols) +
                              "), got " + shape_text(array));
}

// X (n, inputs) and, when given, Y (n, width) of the same n.
template <typename T>
const T* samples(const py::array& x, const py::array* y, const char* y_name, index width,
                 const char* what, Network<T>& net) {
    const T* px = input<T>(x, "X", 2);
    check_rows(x, "X", net.inputs());
    if (y) {
        check_rows(*y, y_name, width);
        if (y->shape(0) != x.shape(0))
            throw py::value_error(std::string(what) + ": X and " + y_name +
                                  " have different sample counts");
    }
    return px;
}

template <typename T>
py::array_t<T> to_array(const std::vector<T>& values) {
    py::array_t<T> out(index(values.size()));
    if (!values.empty()) std::memcpy(out.mutable_data(), values.data(), sizeof(T) * values.size());
    return out;
}

// ---- structure: sizes, names, zero-copy views of the flat buffers --------------------

template <typename T>
void bind_structure(NetworkClass<T>& cls) {
    using Handle = NetworkHandle<T>;
    cls.def(py::init([](const py::list& layers, std::uint64_t seed) {
                return std::make_unique<Handle>(layer_specs(layers), seed);
            }),
            py::arg("layers"), py::arg("seed"))
        // A plain stack of dense layers: sizes I, H_1, ..., O, one activation and
        // (optionally) one init per dense layer.
        .def(py::init([](const std::vector<index>& sizes, const std::vector<std::string>& activations,
                         std::uint64_t seed, const std::vector<std::string>& inits) {
                 return std::make_unique<Handle>(dense_stack(sizes, activations, inits), seed);
             }),
             py::arg("sizes"), py::arg("activations"), py::arg("seed"),
             py::arg("inits") = std::vector<std::string>{})
        .def_property_readonly("dtype", [](Handle&) { return py::dtype::of<T>(); })
        .def_property_readonly("parameter_count",
                               [](Handle& h) { return h.net().parameter_count(); })
        .def_property_readonly("layers", [](Handle& h) {
            py::list out;
            for (const Layer& l : h.net().layers()) {
                py::dict d;
                d["type"] = layer_kind_names.name(l.kind);
                d["inputs"] = l.inputs;
                d["outputs"] = l.outputs;
                d["init"] = init_names.name(l.init);
                d["activation"] = activation_name(l.activation);
                d["eps"] = l.eps;
                d["momentum"] = l.momentum;
                d["p"] = l.p;
                d["skip_from"] = l.skip_from;
                d["weight_offset"] = l.weight_offset;
                d["bias_offset"] = l.bias_offset;
                d["state_offset"] = l.state_offset;
                d["stage"] = l.stage;
                out.append(d);
            }
            return out;
        })
        .def("activation_memory", [](Handle& h, index batch, index checkpoint) {
            if (batch < 1) throw py::value_error("activation_memory: batch_size must be >= 1");
            if (checkpoint < 0) throw py::value_error("activation_memory: checkpoint must be >= 0");
            return h.net().activation_memory(batch, checkpoint);
        }, py::arg("batch"), py::arg("checkpoint"))
        .def_property_readonly("sqrt_checkpoint", [](Handle& h) { return h.net().sqrt_checkpoint(); });
    // Each view keeps the network alive.
    cls.def_property_readonly("params", [](py::object self) {
        Network<T>& net = self.cast<Handle&>().net();
        return py::array_t<T>({net.parameter_count()}, {index(sizeof(T))}, net.params(), self);
    });
    cls.def_property_readonly("grads", [](py::object self) {
        Network<T>& net = self.cast<Handle&>().net();
        return py::array_t<T>({net.parameter_count()}, {index(sizeof(T))}, net.grads(), self);
    });
    cls.def_property_readonly("state", [](py::object self) {
        Network<T>& net = self.cast<Handle&>().net();
        return py::array_t<T>({net.state_count()}, {index(sizeof(T))}, net.state(), self);
    });
}

// ---- step by step: forward, backward, zero_grad, optimizer_step ----------------------

// A ScheduleConfig, or None for the constant schedule.
Schedule schedule_argument(const py::object& schedule) {
    if (schedule.is_none()) return Schedule{};
    if (!py::isinstance<Schedule>(schedule))
        throw py::type_error("schedule: expected a ScheduleConfig or None, got " +
                             std::string(py::repr(schedule)));
    return schedule.cast<Schedule>();
}

template <typename T>
py::array_t<T> forward(NetworkHandle<T>& h, const py::array& x) {
    auto& net = h.net();
    const T* px = samples<T>(x, nullptr, "", 0, "forward", net);
    const index batch = x.shape(0);
    py::array_t<T> out({batch, net.outputs()});
    T* po = out.mutable_data();
    py::gil_scoped_release release;
    auto lock = h.lock().write("forward");
    h.sync_host();
    h.host_changed();  // batch norm's running statistics move
    std::memcpy(po, net.forward(px, batch), sizeof(T) * batch * net.outputs());
    return out;
}

template <typename T>
void backward(NetworkHandle<T>& h, const py::array& x, const py::array& d_out) {
    auto& net = h.net();
    const T* px = samples<T>(x, &d_out, "d_out", net.outputs(), "backward", net);
    const T* pd = input<T>(d_out, "d_out", 2);
    py::gil_scoped_release release;
    auto lock = h.lock().write("backward");
    h.sync_host();
    h.host_changed();
    net.backward(px, pd, x.shape(0), /*accumulate=*/false);
}

template <typename T>
py::tuple optimizer_step(NetworkHandle<T>& h, const OptimizerConfig& config,
                         const py::object& schedule) {
    const Schedule sched = schedule_argument(schedule);
    StepResult r;
    {
        py::gil_scoped_release release;
        auto lock = h.lock().write("optimizer_step");
        h.sync_host();
        h.host_changed();
        r = h.net().optimizer_step(config, sched);
    }
    return py::make_tuple(r.grad_norm, r.lr, r.gradient_finite, r.kept);
}

template <typename T>
void bind_steps(NetworkClass<T>& cls) {
    using Handle = NetworkHandle<T>;
    cls.def("forward", &forward<T>, py::arg("x"));
    cls.def("backward", &backward<T>, py::arg("x"), py::arg("d_out"));
    cls.def("zero_grad", [](Handle& h) {
        py::gil_scoped_release release;
        auto lock = h.lock().write("zero_grad");
        h.sync_host();
        h.host_changed();
        h.net().zero_grad();
    });
    cls.def("optimizer_step", &optimizer_step<T>, py::arg("optimizer"), py::arg("schedule"));
    cls.def("reset_optimizer", [](Handle& h) {
        py::gil_scoped_release release;
        auto lock = h.lock().write("reset_optimizer");
        h.sync_host();
        h.host_changed();
        h.net().reset_optimizer();
    });
}

// ---- readers: predict, evaluate, the last forward's cache ------------------------------

template <typename T>
void predict(NetworkHandle<T>& h, const py::array& x, py::array out) {
    auto& net = h.net();
    const T* px = samples<T>(x, &out, "out", net.outputs(), "predict", net);
    T* po = output<T>(out, "out", 2);
    require_disjoint(out, "out", x, "X");
    py::gil_scoped_release release;
    auto lock = h.lock().read();
    if (auto* device = h.device()) return device->predict(px, x.shape(0), po);
    net.predict(px, x.shape(0), po);
}

template <typename T>
py::tuple evaluate(NetworkHandle<T>& h, const py::array& x, const py::array& y,
                   const std::string& loss, double huber_delta, bool count,
                   const py::object& sample_weight) {
    auto& net = h.net();
    const T* px = samples<T>(x, &y, "y", net.outputs(), "evaluate", net);
    const T* py_ = input<T>(y, "y", 2);
    const T* pw = optional_weights<T>(sample_weight, x.shape(0), "sample_weight");
    const Loss kind = loss_from_name(loss);
    double correct = 0, value = 0;
    {
        py::gil_scoped_release release;
        auto lock = h.lock().read();
        if (auto* device = h.device())
            value = device->evaluate(px, py_, pw, x.shape(0), kind, huber_delta, count ? &correct : nullptr);
        else
            value = net.evaluate(px, py_, pw, x.shape(0), kind, huber_delta, count ? &correct : nullptr);
    }
    return py::make_tuple(value, correct);
}

// Copies of the last forward's (Z, A) of the stage that runs `layer` (Network::cached),
// each (B, width).
template <typename T>
py::tuple cache(NetworkHandle<T>& h, index layer) {
    auto& net = h.net();
    index rows = 0, cols = 0;
    std::vector<T> z, a;
    {
        py::gil_scoped_release release;
        auto lock = h.lock().read();
        if (layer < 0 || layer >= index(net.layers().size()))
            throw std::out_of_range("cache: layer out of range");
        const auto [pre, post] = net.cached(layer);
        rows = net.cached_batch();
        cols = net.layers()[layer].outputs;
        z.assign(pre, pre + rows * cols);
        a.assign(post, post + rows * cols);
    }
    return py::make_tuple(to_array(z).reshape({rows, cols}), to_array(a).reshape({rows, cols}));
}

template <typename T>
void bind_readers(NetworkClass<T>& cls) {
    cls.def("predict", &predict<T>, py::arg("x"), py::arg("out"));
    cls.def("evaluate", &evaluate<T>, py::arg("x"), py::arg("y"), py::arg("loss"),
            py::arg("huber_delta"), py::arg("count_correct"), py::arg("sample_weight") = py::none());
    cls.def("cache", &cache<T>, py::arg("layer"));
}

// ---- fit -------------------------------------------------------------------------------

// The per-epoch figures fit writes, and the dict it returns.
struct FitArrays {
    py::array_t<double> loss, grad_norm, lr, accuracy, layer_grad_norm;
    FitRecord record;

    FitArrays(index epochs, bool count_correct, index layers, bool layer_norms)
        : loss(epochs), grad_norm(epochs), lr(epochs), accuracy(count_correct ? epochs : 0),
          layer_grad_norm(std::vector<py::ssize_t>{layer_norms ? epochs : 0, layers}) {
        record.loss = loss.mutable_data();
        record.grad_norm = grad_norm.mutable_data();
        record.lr = lr.mutable_data();
        record.accuracy = count_correct ? accuracy.mutable_data() : nullptr;
        record.layer_grad_norm = layer_norms ? layer_grad_norm.mutable_data() : nullptr;
    }

    py::dict result(const FitResult& r) const {
        py::dict out;
        out["status"] = fit_status_name(r.status);
        out["epochs"] = r.epochs_completed;
        out["failed_epoch"] = r.failed_epoch;
        out["failed_batch"] = r.failed_batch;
        out["reason"] = r.reason;
        out["loss"] = loss;
        out["grad_norm"] = grad_norm;
        out["lr"] = lr;
        if (record.accuracy) out["accuracy"] = accuracy;
        if (record.layer_grad_norm) out["layer_grad_norm"] = layer_grad_norm;
        return out;
    }
};

// Runs the engine's fit under the network's lock (GIL released). Between two
// batches it lets waiting readers in; every 100 ms it lets go of the lock, takes
// the GIL and asks Python for signals. Returns whether Python raised.
template <typename T>
bool run_fit(NetworkHandle<T>& h, const T* px, const T* py_, const T* pw, index n,
             const FitOptions& options, const FitRecord& record, FitResult& result,
             const GradientReduce<T>& reduce, T* gradient_memory, std::int64_t data_key) {
    using clock = std::chrono::steady_clock;
    py::gil_scoped_release release;
    auto guard = h.lock().write("fit");
    NetworkLock::Fitting fitting(h.lock());
    auto last_check = clock::now();
    bool python_error = false;
    auto should_stop = [&] {
        h.lock().let_readers_in(guard);
        if (clock::now() - last_check < std::chrono::milliseconds(100)) return false;
        guard.unlock();
        {
            py::gil_scoped_acquire acquire;
            python_error = PyErr_CheckSignals() != 0;
        }
        guard.lock();
        last_check = clock::now();
        return python_error;
    };
    // The reduce runs Python (and so, maybe, a signal handler that saves or reads the
    // network): without the network's lock, as should_stop's signal check, so that
    // such a handler finds a network between two steps instead of a lock it holds.
    GradientReduce<T> unlocked;
    if (reduce) {
        unlocked = [&](T* grads, index count, double* figures, index n_figures) {
            guard.unlock();
            struct Relock {
                decltype(guard)& g;
                ~Relock() { g.lock(); }
            } relock{guard};
            reduce(grads, count, figures, n_figures);
        };
    }
    if (auto* device = h.device()) {
        // From its start the device is ahead of the host mirror: a reader let in between
        // two groups of steps (snapshot, say) brings the host up to date first.
        // When it ends, however it ends, the device is ahead again.
        h.device_changed();
        struct Ahead {
            NetworkHandle<T>& h;
            ~Ahead() { h.device_changed(); }
        } ahead{h};
        result = device->fit(h.net(), px, py_, pw, n, options, record, should_stop, data_key);
    } else {
        result = h.net().fit(px, py_, pw, n, options, record, should_stop, unlocked, gradient_memory);
    }
    return python_error;
}

template <typename T>
py::dict fit(NetworkHandle<T>& h, const py::array& x, const py::array& y, index epochs,
             index batch_size, bool shuffle, const std::string& loss, double huber_delta,
             const OptimizerConfig& optimizer, const py::object& schedule, bool count_correct,
             bool record_layer_norms, index checkpoint, const py::object& sample_weight,
             int rank, int ranks, const py::object& reduce, const py::object& gradient_memory,
             const std::vector<index>& shard_rows, std::int64_t data_key) {
    auto& net = h.net();
    const T* px = samples<T>(x, &y, "y", net.outputs(), "fit", net);
    const T* py_ = input<T>(y, "y", 2);
    const T* pw = optional_weights<T>(sample_weight, x.shape(0), "sample_weight");
    if (epochs < 1) throw py::value_error("fit: epochs must be >= 1");
    FitOptions options;
    options.epochs = epochs;
    options.batch_size = batch_size;
    options.shuffle = shuffle;
    options.loss = loss_from_name(loss);
    options.huber_delta = huber_delta;
    options.optimizer = optimizer;
    options.schedule = schedule_argument(schedule);
    options.count_correct = count_correct;
    if (checkpoint < 0) throw py::value_error("fit: checkpoint must be >= 0");
    options.checkpoint = checkpoint;
    options.rank = rank;
    options.ranks = ranks;
    options.shard_rows = shard_rows;
    // Across ranks: each step, reduce(grads, figures) is called with views of the flat
    // gradient and of the step's two figures, to sum them in place (fastmlp.distributed);
    // with batch norm, also with no gradient and its statistics as the figures; sharded
    // with weights, with no gradient and the global batches' weights.
    GradientReduce<T> sum_across;
    if (!reduce.is_none()) {
        sum_across = [&reduce](T* grads, index n, double* figures, index n_figures) {
            py::gil_scoped_acquire acquire;
            const py::capsule keep(figures, [](void*) {});  // views: the engine owns the memory
            reduce(grads == nullptr ? py::array_t<T>(0)  // figures alone (batch norm's, weights)
                                    : py::array_t<T>({n}, {py::ssize_t(sizeof(T))}, grads, keep),
                   py::array_t<double>({n_figures}, {py::ssize_t(sizeof(double))}, figures, keep));
        };
    }
    // Where the gradient lives during the fit (memory shared with the other ranks of
    // this machine, say): parameter_count() values of T, held by the caller until fit returns.
    T* memory = nullptr;
    if (!gradient_memory.is_none()) {
        // An array itself, not one converted here (a list's copy would be freed before
        // the fit writes into it).
        if (!py::isinstance<py::array>(gradient_memory))
            throw py::type_error(std::string("gradient_memory: expected a NumPy array (the communicator's "
                                             "gradient_memory), got ") + Py_TYPE(gradient_memory.ptr())->tp_name);
        py::array array = py::reinterpret_borrow<py::array>(gradient_memory);
        memory = output<T>(array, "gradient_memory", 1);
        if (index(array.shape(0)) != net.parameter_count())
            throw py::value_error("gradient_memory: expected " + std::to_string(net.parameter_count()) +
                                  " values (one per parameter), got " + std::to_string(array.shape(0)));
        for (const py::array* other : {&x, &y})
            if (bytes_overlap(array, *other))
                throw py::value_error("gradient_memory overlaps the training data in memory");
    }
    FitArrays arrays(epochs, count_correct, index(net.dense_layers().size()), record_layer_norms);
    FitResult result;
    if (h.on_device() && (ranks > 1 || memory != nullptr))
        throw py::value_error("fit: training across ranks (comm) is not supported on device='cuda' yet; "
                              "use device='cpu' with comm");
    if (run_fit<T>(h, px, py_, pw, x.shape(0), options, arrays.record, result, sum_across, memory,
                   data_key))
        throw py::error_already_set();
    return arrays.result(result);
}

template <typename T>
void bind_fit(NetworkClass<T>& cls) {
    cls.def("fit", &fit<T>, py::arg("x"), py::arg("y"), py::arg("epochs"),
            py::arg("batch_size"), py::arg("shuffle"), py::arg("loss"), py::arg("huber_delta"),
            py::arg("optimizer"), py::arg("schedule"), py::arg("count_correct"),
            py::arg("record_layer_norms") = false, py::arg("checkpoint") = 0,
            py::arg("sample_weight") = py::none(), py::arg("rank") = 0, py::arg("ranks") = 1,
            py::arg("reduce") = py::none(), py::arg("gradient_memory") = py::none(),
            py::arg("shard_rows") = std::vector<index>{}, py::arg("data_key") = 0);
}

// ---- the device: to_device, to_host, sync_host, touch ---------------------------------

template <typename T>
void bind_device(NetworkClass<T>& cls) {
    using Handle = NetworkHandle<T>;
    // mask_seed: the network's seed (dropout's masks on the device, cuda.hpp).
    cls.def("to_device", [](Handle& h, std::uint64_t mask_seed) {
        py::gil_scoped_release release;
        auto lock = h.lock().write("to_device");
        cuda::require_device();
        h.to_device(mask_seed);
    }, py::arg("mask_seed") = 0);
    cls.def("to_host", [](Handle& h) {
        py::gil_scoped_release release;
        auto lock = h.lock().write("to_host");
        h.to_host();
    });
    cls.def_property_readonly("device", [](Handle& h) { return h.on_device() ? "cuda" : "cpu"; });
    cls.def("sync_host", [](Handle& h) {
        py::gil_scoped_release release;
        auto lock = h.lock().read();
        h.sync_host();
    });
    cls.def("touch", [](Handle& h) {
        py::gil_scoped_release release;
        auto lock = h.lock().write("touch");
        h.sync_host();  // no-op when nothing is ahead; keeps the grads the device computed
        h.host_changed();
    });
    cls.def("release_device_data", [](Handle& h) {
        py::gil_scoped_release release;
        auto lock = h.lock().write("release_device_data");
        if (auto* device = h.device()) device->release_data();
    });
    // Which path a device fit of `batch` rows takes ("fused" or "layers"), for tests and benchmarks.
    cls.def("fit_path", [](Handle& h, index batch, const std::string& loss) {
        const Loss kind = loss_from_name(loss);
        if (batch < 1) throw py::value_error("fit_path: batch must be >= 1");
        py::gil_scoped_release release;
        auto lock = h.lock().read();
        auto* device = h.device();
        if (device == nullptr) throw py::value_error("fit_path: the network is not on a device");
        return device->fit_path(batch, kind);
    }, py::arg("batch"), py::arg("loss"));
}

py::dict cuda_info() {
    const cuda::DeviceInfo info = cuda::device_info();
    py::dict d;
    d["built"] = info.built;
    d["devices"] = info.devices;
    d["name"] = info.name;
    d["capability"] = info.devices > 0 ? std::to_string(info.major) + "." + std::to_string(info.minor) : "";
    d["memory"] = info.memory;
    d["multiprocessors"] = info.multiprocessors;
    d["runtime_version"] = info.runtime_version;
    d["driver_version"] = info.driver_version;
    d["cublas"] = info.cublas;
    d["error"] = info.error;
    return d;
}

// ---- consistent state: snapshot and restore ------------------------------------------

// An integer argument in [low, high], or TypeError / ValueError naming it.
std::int64_t int_argument(const py::handle& value, const char* name, std::int64_t low,
                          std::int64_t high) {
    if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr()))
        throw py::type_error(std::string(name) + ": expected an integer, got " +
                             std::string(py::repr(value)));
    int overflow = 0;
    const auto number = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
    const long long x = PyLong_AsLongLongAndOverflow(number.ptr(), &overflow);
    if (overflow || x < low || x > high)
        throw py::value_error(std::string(name) + ": expected an integer in [" +
                              std::to_string(low) + ", " + std::to_string(high) + "], got " +
                              std::string(py::repr(value)));
    return x;
}

// A generator word: an integer in [0, 2**64).
std::uint64_t word_argument(const py::handle& value, const char* name) {
    if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr()))
        throw py::type_error(std::string(name) + ": expected an integer, got " +
                             std::string(py::repr(value)));
    const auto number = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
    const unsigned long long x = PyLong_AsUnsignedLongLong(number.ptr());
    if (PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(std::string(name) + ": expected an integer in [0, 2**64), got " +
                              std::string(py::repr(value)));
    }
    return x;
}

// A (n,) array of values finite in T (read as float64, so a value too large for T is refused).
template <typename T>
std::vector<T> finite_vector(const py::handle& value, const std::string& name, index n) {
    // The usual case, an array of T already (a snapshot's): copied, then checked in
    // one vectorized pass over the copy's bits (an all-ones exponent: inf or NaN),
    // without going through double.
    if (py::isinstance<py::array>(value)) {
        const auto same = py::reinterpret_borrow<py::array>(value);
        if (has_dtype<T>(same) && same.ndim() == 1 && same.shape(0) == n &&
            (same.flags() & py::array::c_style)) {
            using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
            constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
            const T* p = static_cast<const T*>(same.data());
            std::vector<T> copy(p, p + n);
            Bits special = 0;
            for (index i = 0; i < n; ++i) {
                Bits bits;
                std::memcpy(&bits, &copy[std::size_t(i)], sizeof(T));
                special |= Bits((bits & exponent) == exponent);
            }
            if (special == 0) return copy;
        }
    }
    const auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(value);
    if (!a) throw py::type_error(name + ": expected a numeric array of shape (" +
                                 std::to_string(n) + ",)");
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(name + ": expected shape (" + std::to_string(n) + ",), got " +
                              shape_text(a));
    const double* p = a.data();
    for (index i = 0; i < n; ++i)
        if (!std::isfinite(p[i]) || std::abs(p[i]) > double(std::numeric_limits<T>::max()))
            throw py::value_error(name + ": expected finite values (as " + dtype_name<T>() +
                                  "), got " + std::to_string(p[i]) + " at index " +
                                  std::to_string(i));
    return std::vector<T>(p, p + n);
}

std::vector<py::handle> list_argument(const py::handle& value, const char* name) {
    if (!py::isinstance<py::list>(value) && !py::isinstance<py::tuple>(value))
        throw py::type_error(std::string(name) + ": expected a list, got " +
                             std::string(py::repr(value)));
    std::vector<py::handle> items;
    for (auto item : value) items.push_back(item);
    return items;
}

// The whole mutable state of a network, taken or applied under one lock.
template <typename T>
struct NetworkState {
    std::vector<T> params, state;  // state: batch norm's running statistics
    bool has_state = true;         // restore: apply `state` (else keep the network's)
    bool has_optimizer = false;  // restore: apply `optimizer` (else: no optimizer state)
    OptimizerConfig optimizer;
    std::int64_t steps = 0;
    std::vector<std::vector<T>> buffers;
    Rng::State rng{};
};

template <typename T>
NetworkState<T> capture(Network<T>& net, OptimizerKind& kind) {
    NetworkState<T> s;
    s.params.assign(net.params(), net.params() + net.parameter_count());
    s.state.assign(net.state(), net.state() + net.state_count());
    kind = net.optimizer_kind();
    s.steps = net.optimizer_steps();
    for (int b = 0; b < net.optimizer_buffers(); ++b)
        s.buffers.emplace_back(net.optimizer_state(b), net.optimizer_state(b) + net.parameter_count());
    s.rng = net.rng().state();
    return s;
}

// Applies all of s (checked before). Only prepare_optimizer allocates: should it fail (out
// of memory) the network keeps its parameters and generator, and no optimizer state.
template <typename T>
void apply(Network<T>& net, const NetworkState<T>& s) {
    net.reset_optimizer();
    if (s.has_optimizer) net.prepare_optimizer(s.optimizer);
    net.set_optimizer_steps(s.steps);
    for (std::size_t b = 0; b < s.buffers.size(); ++b)
        std::copy(s.buffers[b].begin(), s.buffers[b].end(), net.optimizer_state(int(b)));
    std::copy(s.params.begin(), s.params.end(), net.params());
    if (s.has_state) std::copy(s.state.begin(), s.state.end(), net.state());
    net.rng().set_state(s.rng);
}

py::tuple rng_tuple(const Rng::State& st) {
    return py::make_tuple(py::make_tuple(st.words[0], st.words[1], st.words[2], st.words[3]),
                          st.has_spare, st.spare);
}

// (params, kind, steps, buffers, ((w0, w1, w2, w3), has_spare, spare), state), all
// under one lock; state: batch norm's running statistics.
template <typename T>
py::tuple snapshot(NetworkHandle<T>& h) {
    NetworkState<T> s;
    OptimizerKind kind{};
    {
        py::gil_scoped_release release;
        auto lock = h.lock().read();
        h.sync_host();
        s = capture(h.net(), kind);
    }
    py::list buffers;
    for (const auto& b : s.buffers) buffers.append(to_array(b));
    return py::make_tuple(to_array(s.params), optimizer_name(kind), s.steps, buffers,
                          rng_tuple(s.rng), to_array(s.state));
}

// The optimizer part of a state: config (or None), steps, buffers, each checked.
template <typename T>
void check_optimizer_state(NetworkState<T>& s, const py::object& optimizer,
                           const py::handle& steps, const py::handle& buffers, index n) {
    s.has_optimizer = !optimizer.is_none();
    if (s.has_optimizer) {
        if (!py::isinstance<OptimizerConfig>(optimizer))
            throw py::type_error("optimizer: expected an OptimizerConfig or None, got " +
                                 std::string(py::repr(optimizer)));
        s.optimizer = optimizer.cast<OptimizerConfig>();
    }
    s.steps = int_argument(steps, "steps", 0, std::int64_t(1) << 62);
    const auto items = list_argument(buffers, "buffers");
    const int expected = s.has_optimizer ? s.optimizer.state_buffers() : 0;
    if (index(items.size()) != expected)
        throw py::value_error("buffers: the optimizer " +
                              std::string(s.has_optimizer ? optimizer_name(s.optimizer.kind)
                                                          : "None") +
                              " keeps " + std::to_string(expected) + " state buffers, got " +
                              std::to_string(items.size()));
    if (!s.has_optimizer && s.steps != 0)
        throw py::value_error("steps: expected 0 without an optimizer (None), got " +
                              std::to_string(s.steps));
    for (std::size_t b = 0; b < items.size(); ++b)
        s.buffers.push_back(finite_vector<T>(items[b], "buffers[" + std::to_string(b) + "]", n));
}

Rng::State checked_rng(const py::handle& words, bool has_spare, double spare) {
    const auto items = list_argument(words, "rng_words");
    if (items.size() != 4)
        throw py::value_error("rng_words: expected 4 words, got " + std::to_string(items.size()));
    Rng::State st{};
    for (int i = 0; i < 4; ++i)
        st.words[i] = word_argument(items[i], ("rng_words[" + std::to_string(i) + "]").c_str());
    st.has_spare = has_spare;
    st.spare = spare;
    Rng::check_state(st);  // before anything is applied
    return st;
}

// Checks every field, then applies all of them under one lock (or nothing).
template <typename T>
void restore(NetworkHandle<T>& h, const py::handle& params, const py::object& optimizer,
             const py::handle& steps, const py::handle& buffers, const py::handle& rng_words,
             bool has_spare, double spare, const py::object& state) {
    const index n = h.net().parameter_count();
    NetworkState<T> s;
    s.params = finite_vector<T>(params, "params", n);
    s.has_state = !state.is_none();  // None: keep the running statistics
    if (s.has_state) s.state = finite_vector<T>(state, "state", h.net().state_count());
    check_optimizer_state(s, optimizer, steps, buffers, n);
    s.rng = checked_rng(rng_words, has_spare, spare);
    py::gil_scoped_release release;
    auto lock = h.lock().write("restore");
    h.sync_host();
    h.host_changed();
    apply(h.net(), s);
}

template <typename T>
void bind_state(NetworkClass<T>& cls) {
    cls.def("snapshot", &snapshot<T>);
    cls.def("restore", &restore<T>, py::arg("params"), py::arg("optimizer"), py::arg("steps"),
            py::arg("buffers"), py::arg("rng_words"), py::arg("has_spare"), py::arg("spare"),
            py::arg("state") = py::none());
}

}  // namespace

void bind_network(py::module_& m) {
    // The sharded fit's interleave of the ranks' rows (network.hpp), for tests.
    m.def(
        "shard_prefix",
        [](const std::vector<index>& shard_rows, index rank, index e) {
            index total = 0;
            for (const index rows : shard_rows) {
                if (rows < 1) throw py::value_error("shard_prefix: every shard needs at least one row");
                total = checked_sum(total, rows, "shard_prefix: the rows overflow an index");
            }
            if (rank < 0 || rank >= index(shard_rows.size()))
                throw py::value_error("shard_prefix: rank must be in [0, len(shard_rows))");
            if (e < 0 || e > total) throw py::value_error("shard_prefix: e must be in [0, Σ shard_rows]");
            return shard_prefix(shard_rows, rank, e);
        },
        py::arg("shard_rows"), py::arg("rank"), py::arg("e"));
    NetworkClass<float> n32(m, "Network32");
    NetworkClass<double> n64(m, "Network64");
    bind_structure(n32), bind_steps(n32), bind_readers(n32), bind_fit(n32), bind_state(n32), bind_device(n32);
    bind_structure(n64), bind_steps(n64), bind_readers(n64), bind_fit(n64), bind_state(n64), bind_device(n64);
    // The CUDA backend of this build and the GPU it sees (fastmlp/cuda.hpp).
    m.def("cuda_info", &cuda_info);
}

}  // namespace fastmlp::bindings
