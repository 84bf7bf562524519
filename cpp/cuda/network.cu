// network.cu — DeviceNetwork<T>: the engine's device side (see fastmlp/cuda.hpp).
//
// The stages are the CPU engine's (Network::stages()): a dense or norm layer with the
// activation fused into it, or one layer. A training step on the layer path, for a batch of B rows:
//
//   gather   X, Y (and the weights) rows of the epoch's order → xb, yb, wb
//   forward  per stage: dense = one GEMM with the bias and activation as its
//            epilogue (Z kept when the activation needs it); norms, dropout,
//            residual: their kernels
//   loss     one kernel: the batch's loss sums (to the step's figures) and dL/dY
//   backward per stage, last first: dense = the activation's derivative with the
//            bias's column sums, then dW = dZᵀ·A and dA = dZ·W (added to the skip
//            path's gradient where a residual block starts)
//   update   optimizer_update: norm, clip, schedule, rule; t and step += 1
//
// Every kernel reads the step's state (StepState, device memory) instead of
// values from the host, so one step is captured once in a CUDA graph per batch
// size and replayed: one launch per step. Which batch a step runs comes from
// state->step: step k of the group runs batch k mod steps_per_epoch of epoch
// k / steps_per_epoch, whose order sits at order + epoch · n. A group is as many
// epochs as fit one order buffer; its orders (drawn on the host from the host
// network's generator, as the CPU fit draws them) are copied over before its steps,
// its figures copied back after them, through pinned buffers used in turn, so the
// host waits on the device only for the group before last.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "device.cuh"
#include "fastmlp/cuda.hpp"
#include "fused.cuh"
#include "kernels.cuh"

namespace fastmlp::cuda {

bool built() { return true; }

namespace {
// Nothing: device_info asks the runtime whether this build's code runs on the GPU.
__global__ void probe_kernel() {}
}  // namespace

DeviceInfo device_info() {
    DeviceInfo info;
    info.built = true;
    cudaRuntimeGetVersion(&info.runtime_version);
    cudaDriverGetVersion(&info.driver_version);
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        info.error = std::string("no usable GPU: ") + cudaGetErrorString(status);
        cudaGetLastError();
        return info;
    }
    info.devices = count;
    if (count == 0) {
        info.error = "no usable GPU: the CUDA runtime sees no device";
        return info;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
        info.name = prop.name;
        info.major = prop.major;
        info.minor = prop.minor;
        info.memory = std::int64_t(prop.totalGlobalMem);
        info.multiprocessors = prop.multiProcessorCount;
        // Whether this build has code the GPU runs (its machine code, or PTX it can compile).
        cudaFuncAttributes attributes{};
        if (cudaFuncGetAttributes(&attributes, probe_kernel) != cudaSuccess)
            info.error = "no usable GPU: this fastmlp has no code for " + info.name + " (compute capability " +
                         std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                         "; reinstall with -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=" +
                         std::to_string(prop.major) + std::to_string(prop.minor) + ")";
    }
    cudaGetLastError();
    info.cublas = cublas_load("");
    return info;
}

void require_device() {
    const DeviceInfo info = device_info();
    if (!info.error.empty()) throw std::runtime_error("device='cuda': " + info.error);
}

namespace {

// A step's shape-dependent kernels as one CUDA graph (null until captured).
struct Graph {
    cudaGraphExec_t exec = nullptr;
    ~Graph() { reset(); }
    void reset() {
        if (exec != nullptr) cudaGraphExecDestroy(exec);
        exec = nullptr;
    }
};

bool graphs_wanted() {
    const char* value = std::getenv("FASTMLP_CUDA_GRAPHS");
    return value == nullptr || std::string(value) != "0";
}

// dst = src (n values) while no step has failed: batch norm's running statistics
// before a step, put back when the step fails (as the CPU's fit does).
template <typename T>
__global__ void save_while_ok_kernel(T* __restrict__ dst, const T* __restrict__ src, index n,
                                     const StepState* state) {
    if (state->status != step_ok) return;
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index(gridDim.x) * blockDim.x)
        dst[i] = src[i];
}

// dst = src (n values) in the step that failed (run after its update, which moved
// step on): the failed step's gradient, kept from the steps after it.
template <typename T>
__global__ void keep_failed_kernel(T* __restrict__ dst, const T* __restrict__ src, index n,
                                   const StepState* state) {
    if (state->status == step_ok || state->failed_step != state->step - 1) return;
    for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index(gridDim.x) * blockDim.x)
        dst[i] = src[i];
}

// Pinned host memory (cudaMallocHost), for copies that do not wait.
template <typename T>
class PinnedArray {
public:
    PinnedArray() = default;
    ~PinnedArray() {
        if (data_ != nullptr) cudaFreeHost(data_);
    }
    PinnedArray(const PinnedArray&) = delete;
    PinnedArray& operator=(const PinnedArray&) = delete;
    void reserve(index n) {
        if (n <= size_) return;
        if (data_ != nullptr) cudaFreeHost(data_);
        data_ = nullptr;
        size_ = 0;
        check(cudaMallocHost(reinterpret_cast<void**>(&data_), sizeof(T) * std::size_t(n)),
              "cudaMallocHost");
        size_ = n;
    }
    void release() {
        if (data_ != nullptr) cudaFreeHost(data_);
        data_ = nullptr;
        size_ = 0;
    }
    T* data() const { return data_; }

private:
    T* data_ = nullptr;
    index size_ = 0;
};

constexpr index order_budget = index(1) << 22;  // indices in a group's orders (16 MiB)
constexpr index predict_rows = 16384;             // rows per inference chunk on the device
constexpr std::int64_t fused_steps_per_launch = 2048;

}  // namespace

template <typename T>
struct DeviceNetwork<T>::Impl {
    using Stage = typename Network<T>::Stage;  // the CPU engine's stages, run alike here
    // ---- structure ----
    std::vector<Layer> layers;
    std::vector<Stage> stages;
    std::vector<Segment> host_segments;
    index inputs = 0, outputs = 0, n_params = 0, n_state = 0, max_width = 0;
    bool has_dropout = false, has_batch_norm = false, plain = true;
    FusedArgs<T> fused;  // the network part of the fused path's arguments (plain networks)
    std::size_t max_shared = 0;

    // ---- device state ----
    cudaStream_t stream = nullptr;
    DeviceArray<T> params, grads, state, s1, s2;
    DeviceArray<Segment> segments;
    OptimizerKind opt_kind = OptimizerKind::sgd;
    int opt_buffers = -1;  // -1: no optimizer state yet
    DeviceArray<StepState> step_state;
    DeviceArray<double> scratch;
    std::uint64_t mask_seed = 0;

    // ---- data of the current fit (data_key) ----
    std::int64_t data_key = 0;
    index data_n = -1;
    bool data_weighted = false;
    DeviceArray<T> x, y, w;
    DeviceArray<std::int32_t> order;
    DeviceArray<StepFigures> figures;
    PinnedArray<std::int32_t> host_order[2];
    PinnedArray<StepFigures> host_figures[2];
    PinnedArray<StepState> host_state[2];
    cudaEvent_t done[2] = {nullptr, nullptr};
    // A look at the state while the fit runs (a failure stops the enqueueing early).
    PinnedArray<StepState> poll_state;
    cudaEvent_t polled = nullptr;
    bool poll_pending = false;
    // Batch norm's running statistics before the step (layer path), the failed step's gradient.
    DeviceArray<T> state_before, failed_grads;

    // ---- the layer path's workspace for `capacity` rows ----
    index capacity = 0;
    DeviceArray<T> xb, yb, wb;
    std::vector<DeviceArray<T>> out, z, xhat, rstd;
    std::vector<DeviceArray<std::uint8_t>> mask;
    DeviceArray<T> delta, delta_next, skip_delta;
    Graph full_graph, tail_graph;

    // ---- inference ----
    DeviceArray<T> eval_in, eval_buffers[3], eval_rstd;
    std::vector<T> eval_out;  // evaluate's outputs, on the host

    Impl(Network<T>& host, std::uint64_t seed) : mask_seed(seed) {
        try {
            construct(host);
        } catch (...) {
            destroy();
            throw;
        }
    }

    void construct(Network<T>& host) {
        require_device();
        check(cudaSetDevice(0), "cudaSetDevice");
        layers = host.layers();
        stages = host.stages();
        inputs = host.inputs();
        outputs = host.outputs();
        n_params = host.parameter_count();
        n_state = host.state_count();
        for (const Layer& layer : layers) {
            max_width = std::max({max_width, layer.inputs, layer.outputs});
            if (layer.kind == LayerKind::dropout) has_dropout = true;
            if (layer.kind == LayerKind::batch_norm) has_batch_norm = true;
            if (layer.kind == LayerKind::dense) {
                host_segments.push_back(Segment{layer.weight_offset, layer.inputs * layer.outputs});
                host_segments.push_back(Segment{layer.bias_offset, layer.outputs});
            } else if (layer.kind == LayerKind::layer_norm || layer.kind == LayerKind::batch_norm) {
                host_segments.push_back(Segment{layer.weight_offset, layer.inputs});
                host_segments.push_back(Segment{layer.bias_offset, layer.inputs});
            }
        }
        for (const Stage& s : stages) plain = plain && s.kind == LayerKind::dense;
        plain = plain && index(stages.size()) <= fused_max_layers;
        if (plain) {
            fused.layers = int(stages.size());
            fused.sizes[0] = inputs;
            for (std::size_t i = 0; i < stages.size(); ++i) {
                const Layer& layer = layers[stages[i].layer];
                fused.sizes[i + 1] = stages[i].width;
                fused.activation[i] = stages[i].activation;
                fused.weight_offset[i] = layer.weight_offset;
                fused.bias_offset[i] = layer.bias_offset;
            }
        }
        int device = 0, shared = 0;
        check(cudaGetDevice(&device), "cudaGetDevice");
        check(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
              "cudaDeviceGetAttribute");
        max_shared = std::size_t(shared);
        check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        for (cudaEvent_t& e : done) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
        check(cudaEventCreateWithFlags(&polled, cudaEventDisableTiming), "cudaEventCreate");
        poll_state.reserve(1);
        params.resize(n_params);
        grads.resize(n_params);
        state.resize(n_state);
        step_state.resize(1);
        segments.resize(index(host_segments.size()));
        to_device(segments.data(), host_segments.data(), index(host_segments.size()));
        sync();
        scratch.resize(std::max<index>(1, optimizer_scratch(n_params, index(host_segments.size()))));
        upload(host);
    }

    ~Impl() { destroy(); }

    void destroy() noexcept {
        full_graph.reset();
        tail_graph.reset();
        if (stream != nullptr) {
            cudaStreamSynchronize(stream);
            try {
                cublas_release(stream);  // after the graphs that used its workspace
            } catch (...) {
            }
            cudaStreamDestroy(stream);
            stream = nullptr;
        }
        for (cudaEvent_t& e : done) {
            if (e != nullptr) cudaEventDestroy(e);
            e = nullptr;
        }
        if (polled != nullptr) cudaEventDestroy(polled);
        polled = nullptr;
    }

    void sync() { check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }

    template <typename U>
    void to_device(U* dst, const U* src, index n) {
        if (n > 0)
            check(cudaMemcpyAsync(dst, src, sizeof(U) * std::size_t(n), cudaMemcpyHostToDevice, stream),
                  "cudaMemcpy to the device");
    }
    template <typename U>
    void to_host(U* dst, const U* src, index n) {
        if (n > 0)
            check(cudaMemcpyAsync(dst, src, sizeof(U) * std::size_t(n), cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpy to the host");
    }

    StepState read_state() {
        StepState s;
        to_host(&s, step_state.data(), 1);
        sync();
        return s;
    }
    void write_state(const StepState& s) {
        StepState copy = s;
        to_device(step_state.data(), &copy, 1);
        sync();  // `copy` is on this stack
    }

    // The optimizer's state made fit for `config` (as Network::prepare_optimizer):
    // kept when the rule and its buffers are unchanged, else zeros and t = 0.
    void prepare_optimizer(const OptimizerConfig& config) {
        const int buffers = config.state_buffers();
        if (opt_buffers == buffers && opt_kind == config.kind) return;
        opt_kind = config.kind;
        opt_buffers = buffers;
        s1.resize(buffers >= 1 ? n_params : 0);
        s2.resize(buffers >= 2 ? n_params : 0);
        if (buffers >= 1) check(cudaMemsetAsync(s1.data(), 0, sizeof(T) * n_params, stream), "cudaMemset");
        if (buffers >= 2) check(cudaMemsetAsync(s2.data(), 0, sizeof(T) * n_params, stream), "cudaMemset");
        StepState s = read_state();
        s.t = 0;
        write_state(s);
    }

    void upload(Network<T>& host) {
        to_device(params.data(), host.params(), n_params);
        to_device(grads.data(), host.grads(), n_params);
        to_device(state.data(), host.state(), n_state);
        // The host's optimizer state (a prepared plain SGD with no update yet is no
        // state either way: the next fit's prepare_optimizer makes the same).
        opt_kind = host.optimizer_kind();
        opt_buffers = host.optimizer_buffers() > 0 || host.optimizer_steps() > 0 ? host.optimizer_buffers() : -1;
        s1.resize(host.optimizer_buffers() >= 1 ? n_params : 0);
        s2.resize(host.optimizer_buffers() >= 2 ? n_params : 0);
        if (host.optimizer_buffers() >= 1) to_device(s1.data(), host.optimizer_state(0), n_params);
        if (host.optimizer_buffers() >= 2) to_device(s2.data(), host.optimizer_state(1), n_params);
        StepState s;
        s.t = host.optimizer_steps();
        write_state(s);  // synchronizes: the host's buffers may change once this returns
    }

    void download(Network<T>& host) {
        to_host(host.params(), params.data(), n_params);
        to_host(host.grads(), grads.data(), n_params);
        to_host(host.state(), state.data(), n_state);
        const StepState s = read_state();
        if (opt_buffers < 0) {
            host.reset_optimizer();
            return;
        }
        OptimizerConfig config;  // only the rule and its buffer count matter to prepare_optimizer
        config.kind = opt_kind;
        config.momentum = opt_kind == OptimizerKind::sgd && opt_buffers == 1 ? 1.0 : 0.0;
        host.prepare_optimizer(config);
        if (opt_buffers >= 1) to_host(host.optimizer_state(0), s1.data(), n_params);
        if (opt_buffers >= 2) to_host(host.optimizer_state(1), s2.data(), n_params);
        sync();
        host.set_optimizer_steps(s.t);
    }

    // ---- the layer path -------------------------------------------------------------
    void reserve_workspace(index batch) {
        if (batch <= capacity) return;
        full_graph.reset();
        tail_graph.reset();
        xb.resize(batch * inputs);
        yb.resize(batch * outputs);
        wb.resize(batch);
        out.clear(), z.clear(), xhat.clear(), rstd.clear(), mask.clear();
        out.resize(stages.size()), z.resize(stages.size()), xhat.resize(stages.size());
        rstd.resize(stages.size()), mask.resize(stages.size());
        for (std::size_t s = 0; s < stages.size(); ++s) {
            const Stage& st = stages[s];
            out[s].resize(batch * st.width);
            if (st.keeps_z) z[s].resize(batch * st.width);
            if (st.kind == LayerKind::layer_norm || st.kind == LayerKind::batch_norm) {
                xhat[s].resize(batch * st.width);
                rstd[s].resize(st.kind == LayerKind::layer_norm ? batch : st.width);
            }
            if (st.kind == LayerKind::dropout) mask[s].resize(batch * st.width);
        }
        delta.resize(batch * max_width);
        delta_next.resize(batch * max_width);
        state_before.resize(n_state);
        failed_grads.resize(n_params);
        skip_delta.resize(batch * max_width);
        capacity = batch;
    }

    const T* stage_input(index s) const { return s == 0 ? xb.data() : out[s - 1].data(); }
    T* stage_z(index s) { return stages[s].keeps_z ? z[s].data() : out[s].data(); }

    // One training step of `rows` rows on the layer path, enqueued (or captured).
    void enqueue_step(const FitOptions& options, index rows, index n, index batch, index steps_per_epoch,
                      bool gather, bool weighted) {
        StepState* st = step_state.data();
        const std::int32_t* ord = gather ? order.data() : nullptr;
        if (has_batch_norm) {
            save_while_ok_kernel<T><<<blocks_for(n_state, 256), 256, 0, stream>>>(state_before.data(), state.data(),
                                                                                n_state, st);
            check_launch("save_while_ok");
        }
        gather_step_rows<T>(stream, xb.data(), x.data(), ord, st, n, batch, steps_per_epoch, rows, inputs);
        gather_step_rows<T>(stream, yb.data(), y.data(), ord, st, n, batch, steps_per_epoch, rows, outputs);
        if (weighted) gather_step_rows<T>(stream, wb.data(), w.data(), ord, st, n, batch, steps_per_epoch, rows, index(1));
        // forward
        for (index s = 0; s < index(stages.size()); ++s) {
            const Stage& stage = stages[s];
            const Layer& layer = layers[stage.layer];
            const T* in = stage_input(s);
            T* o = out[s].data();
            const index count = rows * stage.width;
            switch (stage.kind) {
                case LayerKind::dense: {
                    Epilogue<T> epilogue;
                    epilogue.bias = params.data() + layer.bias_offset;
                    epilogue.activation = stage.activation;
                    epilogue.z_out = stage.keeps_z ? z[s].data() : nullptr;
                    epilogue.ldz = stage.width;
                    gemm<T>(stream, Op::N, Op::T, rows, stage.width, stage.inputs, in, stage.inputs,
                            params.data() + layer.weight_offset, stage.inputs, T(0), o, stage.width,
                            epilogue);
                    break;
                }
                case LayerKind::layer_norm:
                    layer_norm_forward<T>(stream, in, params.data() + layer.weight_offset,
                                          params.data() + layer.bias_offset, xhat[s].data(), rstd[s].data(),
                                          stage_z(s), rows, stage.width, layer.eps);
                    if (stage.keeps_z) activation_forward<T>(stream, stage.activation, o, stage_z(s), count);
                    break;
                case LayerKind::batch_norm: {
                    T* running = state.data() + layer.state_offset;
                    batch_norm_forward_train<T>(stream, in, params.data() + layer.weight_offset,
                                                params.data() + layer.bias_offset, xhat[s].data(),
                                                rstd[s].data(), stage_z(s), running, running + stage.width,
                                                rows, stage.width, layer.eps, layer.momentum);
                    if (stage.keeps_z) activation_forward<T>(stream, stage.activation, o, stage_z(s), count);
                    break;
                }
                case LayerKind::activation:
                    activation_forward<T>(stream, stage.activation, o, in, count);
                    break;
                case LayerKind::dropout:
                    // Keyed by the network's seed, the stage and t (the updates so far): the
                    // same masks however the fit is cut into calls.
                    dropout_mask(stream, mask[s].data(), count, layer.p,
                                 mask_seed ^ (0x9E3779B97F4A7C15ULL * std::uint64_t(s + 1)), &st->t);
                    dropout_forward<T>(stream, in, mask[s].data(), o, count, layer.p);
                    break;
                case LayerKind::residual:
                    residual_add<T>(stream, in, stage_input(stage.skip), o, count);
                    break;
            }
        }
        // loss
        T* d = delta.data();
        T* d_next = delta_next.data();
        T* skip_d = skip_delta.data();
        loss_forward_backward<T>(stream, options.loss, out.back().data(), yb.data(),
                                 weighted ? wb.data() : nullptr, d, rows, outputs, options.huber_delta,
                                 options.count_correct, figures.data(), st);
        // backward
        T* g = grads.data();
        for (index s = index(stages.size()) - 1; s >= 0; --s) {
            const Stage& stage = stages[s];
            const Layer& layer = layers[stage.layer];
            const T* in = stage_input(s);
            const index count = rows * stage.width;
            const bool closes_block = stage.closes >= 0 && s > 0;
            switch (stage.kind) {
                case LayerKind::dense: {
                    activation_bias_backward<T>(stream, stage.activation, d, g + layer.bias_offset, d,
                                                stage_z(s), out[s].data(), rows, stage.width, false);
                    gemm<T>(stream, Op::T, Op::N, stage.width, stage.inputs, rows, d, stage.width, in,
                            stage.inputs, T(0), g + layer.weight_offset, stage.inputs);
                    if (s > 0) {
                        T* target = closes_block ? skip_d : d_next;
                        gemm<T>(stream, Op::N, Op::N, rows, stage.inputs, stage.width, d, stage.width,
                                params.data() + layer.weight_offset, stage.inputs,
                                closes_block ? T(1) : T(0), target, stage.inputs);
                        if (closes_block)
                            std::swap(skip_d, d);
                        else
                            std::swap(d, d_next);
                    }
                    continue;
                }
                case LayerKind::layer_norm:
                case LayerKind::batch_norm: {
                    if (stage.keeps_z)
                        activation_backward<T>(stream, stage.activation, d, d, stage_z(s), out[s].data(), count);
                    const T* gain = params.data() + layer.weight_offset;
                    if (stage.kind == LayerKind::layer_norm)
                        layer_norm_backward<T>(stream, d, xhat[s].data(), rstd[s].data(), gain, d,
                                               g + layer.weight_offset, g + layer.bias_offset, rows,
                                               stage.width, false);
                    else
                        batch_norm_backward<T>(stream, d, xhat[s].data(), rstd[s].data(), gain, d,
                                               g + layer.weight_offset, g + layer.bias_offset, rows,
                                               stage.width, false);
                    break;
                }
                case LayerKind::activation:
                    activation_backward<T>(stream, stage.activation, d, d, in, out[s].data(), count);
                    break;
                case LayerKind::dropout:
                    dropout_backward<T>(stream, d, mask[s].data(), d, count, layers[stage.layer].p);
                    break;
                case LayerKind::residual:
                    check(cudaMemcpyAsync(skip_d, d, sizeof(T) * std::size_t(count), cudaMemcpyDeviceToDevice,
                                          stream),
                          "cudaMemcpyAsync (residual)");
                    break;
            }
            if (closes_block) add_into<T>(stream, d, skip_d, rows * stage.inputs);
        }
        // update
        optimizer_update<T>(stream, options.optimizer, options.schedule, params.data(), grads.data(),
                            opt_buffers >= 1 ? s1.data() : nullptr, opt_buffers >= 2 ? s2.data() : nullptr,
                            n_params, segments.data(), index(host_segments.size()), scratch.data(), st,
                            figures.data());
        keep_failed_kernel<T><<<blocks_for(n_params, 256), 256, 0, stream>>>(failed_grads.data(), grads.data(),
                                                                           n_params, st);
        check_launch("keep_failed");
    }

    // Captures one step of `rows` rows into `graph` (or leaves it empty when capture
    // fails: the steps then run uncaptured, same kernels).
    void capture(Graph& graph, const FitOptions& options, index rows, index n, index batch,
                 index steps_per_epoch, bool gather, bool weighted) {
        graph.reset();
        if (!graphs_wanted()) return;
        cublas_prepare(stream);  // its handle and workspace exist before the capture
        check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        bool ok = true;
        try {
            enqueue_step(options, rows, n, batch, steps_per_epoch, gather, weighted);
        } catch (const std::exception&) {
            ok = false;
        }
        cudaGraph_t g = nullptr;
        const cudaError_t ended = cudaStreamEndCapture(stream, &g);
        if (ok && ended == cudaSuccess && g != nullptr) {
            if (cudaGraphInstantiate(&graph.exec, g, 0) != cudaSuccess) graph.exec = nullptr;
        }
        if (g != nullptr) cudaGraphDestroy(g);
        cudaGetLastError();  // a failed capture's error is not the fit's
    }

    void run_step(Graph& graph, const FitOptions& options, index rows, index n, index batch,
                  index steps_per_epoch, bool gather, bool weighted) {
        if (graph.exec != nullptr)
            check(cudaGraphLaunch(graph.exec, stream), "cudaGraphLaunch");
        else
            enqueue_step(options, rows, n, batch, steps_per_epoch, gather, weighted);
    }

    // ---- data ------------------------------------------------------------------------
    void load_data(const T* hx, const T* hy, const T* hw, index n, std::int64_t key) {
        if (key != 0 && key == data_key && n == data_n && (hw != nullptr) == data_weighted) return;
        data_key = 0;  // until the copies are made
        x.reserve(n * inputs);
        y.reserve(n * outputs);
        if (hw != nullptr) w.reserve(n);
        to_device(x.data(), hx, n * inputs);
        to_device(y.data(), hy, n * outputs);
        if (hw != nullptr) to_device(w.data(), hw, n);
        sync();
        full_graph.reset();  // the data may have moved
        tail_graph.reset();
        data_key = key;
        data_n = n;
        data_weighted = hw != nullptr;
    }

    void release_data() {
        sync();
        x.release(), y.release(), w.release(), order.release(), figures.release();
        for (auto& h : host_order) h.release();
        for (auto& h : host_figures) h.release();
        data_key = 0;
        data_n = -1;
        full_graph.reset();
        tail_graph.reset();
    }

    FusedArgs<T> fused_args(const FitOptions& options, index n, index batch, index steps_per_epoch,
                            bool gather, bool weighted) {
        FusedArgs<T> a = fused;
        a.params = params.data();
        a.grads = grads.data();
        a.s1 = opt_buffers >= 1 ? s1.data() : nullptr;
        a.s2 = opt_buffers >= 2 ? s2.data() : nullptr;
        a.n_params = n_params;
        a.x = x.data();
        a.y = y.data();
        a.weight = weighted ? w.data() : nullptr;
        a.order = gather ? order.data() : nullptr;
        a.n = n;
        a.batch = batch;
        a.steps_per_epoch = steps_per_epoch;
        a.loss = options.loss;
        a.huber_delta = options.huber_delta;
        a.count_correct = options.count_correct;
        a.config = options.optimizer;
        a.schedule = options.schedule;
        a.state = step_state.data();
        a.figures = figures.data();
        return a;
    }

    bool use_fused(index batch) const {
        if (!plain) return false;
        if (const char* v = std::getenv("FASTMLP_CUDA_FUSED"); v != nullptr && std::string(v) == "0") return false;
        return fused_fits(fused, batch, max_shared);
    }

    FitResult fit(Network<T>& host, const T* hx, const T* hy, const T* hw, index n,
                  const FitOptions& options, const FitRecord& record,
                  const std::function<bool()>& should_stop, std::int64_t key) {
        host.check_fit_options(n, options);  // the CPU fit's checks, then the device's own
        require(options.ranks == 1 && options.shard_rows.empty(),
                "fit: training across ranks is not supported on device='cuda' yet");
        require(n <= index(std::numeric_limits<std::int32_t>::max()),
                "fit: more than 2**31 - 1 samples are not supported on device='cuda'");
        require(record.layer_grad_norm == nullptr,
                "fit: per-layer gradient norms are not recorded on device='cuda' yet");
        const index batch = options.batch_size <= 0 || options.batch_size >= n ? n : options.batch_size;
        const bool gather = options.shuffle && batch < n;
        const index steps_per_epoch = (n + batch - 1) / batch;
        const index tail = n - (steps_per_epoch - 1) * batch;
        const bool weighted = hw != nullptr;
        const double total_weight = weight_sum(hw, n);  // also checks the weights
        const double normalizer = loss_normalizer(options.loss, total_weight, outputs);
        const double accuracy_units =
            options.loss == Loss::cross_entropy ? total_weight : total_weight * double(outputs);

        load_data(hx, hy, hw, n, key);
        prepare_optimizer(options.optimizer);
        // No failure carried over from a fit that ended in an exception.
        check(cudaMemsetAsync(&step_state.data()->status, 0, sizeof(int), stream), "cudaMemsetAsync");
        poll_pending = false;
        // A group: as many epochs as fit the order budget (any number without shuffling).
        const index group_epochs =
            gather ? std::max<index>(1, std::min<index>(options.epochs, order_budget / n)) : options.epochs;
        // ... and whose per-step figures stay within 2^18 steps (10 MiB), at least one epoch.
        const index group = std::max<index>(1, std::min<index>(group_epochs, (index(1) << 18) / steps_per_epoch));
        if (gather) {
            order.reserve(group * n);
            for (auto& h : host_order) h.reserve(group * n);
        }
        figures.reserve(group * steps_per_epoch);
        for (auto& h : host_figures) h.reserve(group * steps_per_epoch);
        for (auto& h : host_state) h.reserve(1);

        const bool fused_path = use_fused(batch);
        if (!fused_path) {
            reserve_workspace(batch);
            capture(full_graph, options, batch, n, batch, steps_per_epoch, gather, weighted);
            if (tail != batch) capture(tail_graph, options, tail, n, batch, steps_per_epoch, gather, weighted);
        }
        FusedArgs<T> args;
        if (fused_path) args = fused_args(options, n, batch, steps_per_epoch, gather, weighted);

        FitResult result;
        // A group of steps in flight: its first epoch, the steps enqueued, the order of
        // submission; its figures and end state come back through slot `slot`'s pinned buffers.
        struct Pending {
            index first_epoch = 0;
            std::int64_t steps = 0;
            std::int64_t seq = 0;
            bool active = false;
        } pending[2];
        bool failed = false;
        // The figures of a finished group into the record; false when one of its steps failed.
        // Groups are finished in the order they were enqueued: the first with a failure has it.
        auto finish = [&](int slot) -> bool {
            Pending& p = pending[slot];
            if (!p.active) return true;
            p.active = false;
            check(cudaEventSynchronize(done[slot]), "cudaEventSynchronize");
            const StepFigures* f = host_figures[slot].data();
            const StepState& end = *host_state[slot].data();  // the state when the group ended
            index good_epochs = index(p.steps / steps_per_epoch);
            index failed_step = -1;
            if (end.status != step_ok) {
                failed_step = index(std::max<std::int64_t>(0, std::min<std::int64_t>(end.failed_step, p.steps - 1)));
                good_epochs = std::min(good_epochs, failed_step / steps_per_epoch);
            }
            for (index e = 0; e < good_epochs; ++e) {
                double loss = 0, grad_norm = 0, lr = 0, correct = 0;
                for (index k = 0; k < steps_per_epoch; ++k) {
                    const StepFigures& sf = f[e * steps_per_epoch + k];
                    const double mean = sf.normalizer > 0 ? sf.loss_sum / sf.normalizer : 0.0;
                    loss += mean * sf.normalizer;
                    grad_norm += sf.grad_norm;
                    lr = sf.lr;
                    correct += sf.correct;
                }
                const index epoch = p.first_epoch + e;
                if (record.loss) record.loss[epoch] = normalizer > 0 ? loss / normalizer : 0.0;
                if (record.grad_norm) record.grad_norm[epoch] = grad_norm / double(steps_per_epoch);
                if (record.lr) record.lr[epoch] = lr;
                if (record.accuracy) record.accuracy[epoch] = accuracy_units > 0 ? correct / accuracy_units : 0.0;
                result.epochs_completed = epoch + 1;
            }
            if (failed_step >= 0) {
                result.status = FitStatus::non_finite;
                result.failed_epoch = p.first_epoch + failed_step / steps_per_epoch;
                result.failed_batch = failed_step % steps_per_epoch;
                result.reason = end.status == step_bad_loss       ? "the loss"
                                : end.status == step_bad_gradient ? "the gradient"
                                                                  : "an update";
                return false;
            }
            return true;
        };

        int slot = 0;
        std::int64_t seq = 0;
        bool stopped = false;
        // The host generator's state after each epoch's order was drawn (gathering), so that
        // a fit that ends early leaves it where the CPU's fit would: after the order of the
        // epoch it ended in.
        std::vector<Rng::State> rng_after;
        index last_epoch = -1;  // the last epoch some of whose steps were enqueued
        // Whether a step has failed, as far as the last finished poll shows; the next
        // poll is enqueued.
        auto failure_seen = [&]() -> bool {
            bool seen = false;
            if (poll_pending && cudaEventQuery(polled) == cudaSuccess) {
                seen = poll_state.data()->status != step_ok;
                poll_pending = false;
            }
            cudaGetLastError();  // cudaErrorNotReady is no error here
            if (!poll_pending) {
                to_host(poll_state.data(), step_state.data(), 1);
                check(cudaEventRecord(polled, stream), "cudaEventRecord");
                poll_pending = true;
            }
            return seen;
        };
        for (index first_epoch = 0; first_epoch < options.epochs && !stopped && !failed; first_epoch += group) {
            const index epochs = std::min(group, options.epochs - first_epoch);
            // This slot's pinned buffers are free once the group before last is done
            // (the oldest in flight: finished first).
            if (!finish(slot)) {
                failed = true;
                break;
            }
            // The orders of this group's epochs, from the host's generator (Network::shuffle's draws).
            if (gather) {
                std::int32_t* h = host_order[slot].data();
                for (index e = 0; e < epochs; ++e) {
                    std::int32_t* o = h + e * n;
                    for (index i = 0; i < n; ++i) o[i] = std::int32_t(i);
                    for (index i = n - 1; i > 0; --i)
                        std::swap(o[i], o[host.rng().below(std::uint64_t(i) + 1)]);
                    rng_after.push_back(host.rng().state());
                }
                to_device(order.data(), h, epochs * n);
            }
            // step = 0: this group's figures and batches are counted from its start; failed_step
            // = -1, so that a failure of an earlier group (whose end state was copied already)
            // matches none of this group's steps (keep_failed keeps the failed step's gradient).
            check(cudaMemsetAsync(&step_state.data()->step, 0, sizeof(std::int64_t), stream), "cudaMemsetAsync");
            check(cudaMemsetAsync(&step_state.data()->failed_step, 0xFF, sizeof(std::int64_t), stream),
                  "cudaMemsetAsync");
            const std::int64_t steps = std::int64_t(epochs) * steps_per_epoch;
            std::int64_t enqueued = 0;
            while (enqueued < steps && !stopped) {
                if (fused_path) {
                    args.steps = std::min<std::int64_t>(fused_steps_per_launch, steps - enqueued);
                    fused_steps<T>(stream, args);
                    enqueued += args.steps;
                } else {
                    const bool last_of_epoch = (enqueued + 1) % steps_per_epoch == 0;
                    run_step(last_of_epoch && tail != batch ? tail_graph : full_graph, options,
                             last_of_epoch ? tail : batch, n, batch, steps_per_epoch, gather, weighted);
                    enqueued += 1;
                }
                last_epoch = first_epoch + index((enqueued - 1) / steps_per_epoch);
                // Between two steps (the CPU's fit asks before every batch): a stop asked, or
                // a failure already seen, ends the enqueueing.
                const bool poll = fused_path || enqueued % steps_per_epoch == 0;  // per launch, per epoch
                if ((should_stop && should_stop()) || (poll && failure_seen())) stopped = true;
            }
            // The steps enqueued run (the device has them); the whole epochs among them are
            // recorded, and the fit reports an interruption, or the failure found below.
            to_host(host_figures[slot].data(), figures.data(), enqueued);
            to_host(host_state[slot].data(), step_state.data(), 1);
            check(cudaEventRecord(done[slot], stream), "cudaEventRecord");
            pending[slot] = Pending{first_epoch, enqueued, seq++, true};
            slot ^= 1;
        }
        // The groups still in flight, oldest first, up to the first failure.
        if (!failed) {
            const int older = pending[0].active && pending[1].active ? (pending[0].seq < pending[1].seq ? 0 : 1)
                                                                     : (pending[0].active ? 0 : 1);
            failed = !finish(older) || !finish(older ^ 1);
        }
        sync();
        poll_pending = false;
        for (Pending& p : pending) p.active = false;
        if (!failed && stopped) result.status = FitStatus::interrupted;
        if (failed) {
            // The network as the failed step found it, as on the CPU: batch norm's running
            // statistics put back (the layer path's later steps moved them), the failed
            // step's gradient in grads.
            if (!fused_path && has_batch_norm)
                check(cudaMemcpyAsync(state.data(), state_before.data(), sizeof(T) * n_state,
                                      cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
            if (!fused_path)
                check(cudaMemcpyAsync(grads.data(), failed_grads.data(), sizeof(T) * n_params,
                                      cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
            last_epoch = result.failed_epoch;
        }
        // The generator after the order of the epoch the fit ended in.
        if (gather && last_epoch >= 0 && last_epoch < index(rng_after.size()))
            host.rng().set_state(rng_after[last_epoch]);
        // A failed step leaves state->status set: cleared for the next fit.
        StepState s = read_state();
        if (s.status != step_ok) {
            s.status = step_ok;
            s.failed_step = -1;
            write_state(s);
        }
        return result;
    }

    // ---- inference ----------------------------------------------------------------------
    // Eval mode on `rows` rows of eval_in into eval buffer; returns where the output is.
    const T* forward_eval(index rows) {
        T* buffers[3] = {eval_buffers[0].data(), eval_buffers[1].data(), eval_buffers[2].data()};
        const T* in = eval_in.data();
        const T* skip = nullptr;
        for (index s = 0; s < index(stages.size()); ++s) {
            const Stage& stage = stages[s];
            const Layer& layer = layers[stage.layer];
            if (stage.closes >= 0) skip = in;
            if (stage.kind == LayerKind::dropout) continue;
            T* o = nullptr;
            for (T* b : buffers)
                if (b != in && b != skip) {
                    o = b;
                    break;
                }
            const index count = rows * stage.width;
            const T* gain = params.data() + layer.weight_offset;
            const T* bias = params.data() + layer.bias_offset;
            switch (stage.kind) {
                case LayerKind::dense: {
                    Epilogue<T> epilogue;
                    epilogue.bias = bias;
                    epilogue.activation = stage.activation;
                    gemm<T>(stream, Op::N, Op::T, rows, stage.width, stage.inputs, in, stage.inputs,
                            params.data() + layer.weight_offset, stage.inputs, T(0), o, stage.width, epilogue);
                    break;
                }
                case LayerKind::layer_norm:
                    layer_norm_forward<T>(stream, in, gain, bias, o, eval_rstd.data(), o, rows, stage.width,
                                          layer.eps);
                    if (stage.activation != Activation::linear)
                        activation_forward<T>(stream, stage.activation, o, o, count);
                    break;
                case LayerKind::batch_norm: {
                    const T* running = state.data() + layer.state_offset;
                    batch_norm_forward_eval<T>(stream, in, gain, bias, running, running + stage.width, o, rows,
                                               stage.width, layer.eps);
                    if (stage.activation != Activation::linear)
                        activation_forward<T>(stream, stage.activation, o, o, count);
                    break;
                }
                case LayerKind::activation:
                    activation_forward<T>(stream, stage.activation, o, in, count);
                    break;
                case LayerKind::residual:
                    residual_add<T>(stream, in, skip, o, count);
                    skip = nullptr;
                    break;
                case LayerKind::dropout:
                    break;
            }
            in = o;
        }
        return in;
    }

    void predict(const T* hx, index n, T* hout) {
        if (n <= 0) return;
        const index chunk = std::min(n, predict_rows);
        eval_in.reserve(chunk * inputs);
        for (auto& b : eval_buffers) b.reserve(chunk * max_width);
        eval_rstd.reserve(chunk);
        for (index start = 0; start < n; start += chunk) {
            const index rows = std::min(chunk, n - start);
            to_device(eval_in.data(), hx + start * inputs, rows * inputs);
            const T* result = forward_eval(rows);
            to_host(hout + start * outputs, result, rows * outputs);
            sync();  // the pageable copy is done; eval_in is free again
        }
    }

    double evaluate(const T* hx, const T* hy, const T* hw, index n, Loss loss, double delta, double* correct) {
        require(n >= 1, "evaluate: needs at least one sample");
        eval_out.resize(std::size_t(n * outputs));  // kept: a validation set is evaluated every epoch
        T* out_data = eval_out.data();
        predict(hx, n, out_data);
        // The loss on the host, in the CPU engine's chunks (Network::evaluate): the same sums.
        constexpr index chunk = 256;
        double total = 0, right = 0;
        for (index start = 0; start < n; start += chunk) {
            const index rows = std::min(chunk, n - start);
            const T* o = out_data + start * outputs;
            const T* target = hy + start * outputs;
            const T* wr = hw == nullptr ? nullptr : hw + start;
            total += loss_rows(loss, o, target, static_cast<T*>(nullptr), rows, outputs, delta,
                               weight_sum(wr, rows), wr);
            if (correct != nullptr) right += count_correct(loss, o, target, rows, outputs, wr);
        }
        if (correct != nullptr) *correct = right;
        const double normalizer = loss_normalizer(loss, weight_sum(hw, n), outputs);
        return normalizer > 0 ? total / normalizer : 0.0;
    }
};

template <typename T>
DeviceNetwork<T>::DeviceNetwork(Network<T>& host, std::uint64_t mask_seed)
    : impl_(std::make_unique<Impl>(host, mask_seed)) {}
template <typename T>
DeviceNetwork<T>::~DeviceNetwork() = default;
template <typename T>
void DeviceNetwork<T>::upload(Network<T>& host) {
    impl_->upload(host);
}
template <typename T>
void DeviceNetwork<T>::download(Network<T>& host) {
    impl_->download(host);
}
template <typename T>
FitResult DeviceNetwork<T>::fit(Network<T>& host, const T* x, const T* y, const T* weight, index n,
                                const FitOptions& options, const FitRecord& record,
                                const std::function<bool()>& should_stop, std::int64_t data_key) {
    return impl_->fit(host, x, y, weight, n, options, record, should_stop, data_key);
}
template <typename T>
void DeviceNetwork<T>::release_data() {
    impl_->release_data();
}
template <typename T>
void DeviceNetwork<T>::predict(const T* x, index n, T* out) {
    impl_->predict(x, n, out);
}
template <typename T>
double DeviceNetwork<T>::evaluate(const T* x, const T* y, const T* weight, index n, Loss loss,
                                  double huber_delta, double* correct) {
    return impl_->evaluate(x, y, weight, n, loss, huber_delta, correct);
}
template <typename T>
std::string DeviceNetwork<T>::fit_path(index batch, Loss) const {
    return impl_->use_fused(batch) ? "fused" : "layers";
}

template class DeviceNetwork<float>;
template class DeviceNetwork<double>;

}  // namespace fastmlp::cuda
