// fastmlp/cuda.hpp — the CUDA backend as the host sees it: no CUDA type in here,
// so the bindings (plain C++) include it whether or not CUDA is built. Built with
// FASTMLP_CUDA=ON, cpp/cuda/ implements it; otherwise cpp/src/cuda_stub.cpp does,
// and everything but built() and device_info() throws std::runtime_error saying
// how to build it.
//
// A DeviceNetwork<T> is the device side of one Network<T>: the same layer list,
// and on the GPU the same flat buffers (parameters, gradients, batch norm's state,
// the optimizer's state) in the same layout. The host network stays the mirror:
// upload() copies its buffers (and optimizer state) to the device, download()
// copies the device's back. fit, predict and evaluate run on the device.
//
// fit keeps the whole loop on the device. X, Y (and the weights) are copied once
// and kept under `data_key` until release_data() or another key. Each epoch's order
// is drawn on the host from the host network's generator (the same draws as the
// CPU fit's Fisher–Yates, so the two follow the same batches) and copied over
// asynchronously; the device gathers the batches. Each step (gather, forward,
// loss, backward, update) is a handful of kernels captured once in a CUDA graph
// and replayed, or, for a small plain MLP whose batch fits one multiprocessor's
// shared memory, one persistent kernel that runs many steps per launch (the
// "fused" path). The per-step figures stay on the device until the fit call ends.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fastmlp/network.hpp"

namespace fastmlp::cuda {

// Whether this build has the CUDA backend.
bool built();

struct DeviceInfo {
    bool built = false;
    int devices = 0;             // GPUs the runtime sees
    std::string name;            // device 0's
    int major = 0, minor = 0;    // compute capability
    std::int64_t memory = 0;     // bytes
    int multiprocessors = 0;
    int runtime_version = 0, driver_version = 0;  // e.g. 13000
    std::string cublas;          // the libcublas loaded, or "" (own GEMM kernels)
    std::string error;           // why there is no usable device, or ""
};
// Never throws.
DeviceInfo device_info();

// Throws std::runtime_error naming what is missing (no CUDA in this build, no
// driver, no GPU) unless a GPU can be used.
void require_device();

template <typename T>
class DeviceNetwork {
public:
    // Device buffers for `host`'s layers, filled from host (upload()). mask_seed keys
    // dropout's masks on the device (with the layer and the update count t): the
    // network's seed, so that the same fit gives the same masks however it is cut
    // into calls, resumed or moved.
    DeviceNetwork(Network<T>& host, std::uint64_t mask_seed);
    ~DeviceNetwork();
    DeviceNetwork(const DeviceNetwork&) = delete;
    DeviceNetwork& operator=(const DeviceNetwork&) = delete;

    // Host → device: parameters, state, optimizer kind, buffers and update count.
    void upload(Network<T>& host);
    // Device → host: the same, and the gradient.
    void download(Network<T>& host);

    // Network<T>::fit's contract (single process: options.ranks == 1), run on the
    // device; x, y, weight are host arrays. The host's generator draws the
    // shuffles (it moves as in a CPU fit); the host's optimizer state is not
    // touched (download() brings the device's).
    FitResult fit(Network<T>& host, const T* x, const T* y, const T* weight, index n,
                  const FitOptions& options, const FitRecord& record,
                  const std::function<bool()>& should_stop, std::int64_t data_key);
    void release_data();

    // Network<T>::predict / evaluate on the device; host arrays in and out.
    void predict(const T* x, index n, T* out);
    double evaluate(const T* x, const T* y, const T* weight, index n, Loss loss, double huber_delta,
                    double* correct);

    // Which path fit takes for this batch size: "fused" or "layers".
    std::string fit_path(index batch, Loss loss) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fastmlp::cuda
