// cuda/device.cuh — what every .cu file of the backend shares: device memory
// that frees itself, launch sizes, and the scalar helpers kernels use.
#pragma once

#include <cstdint>
#include <utility>

#include <cuda_runtime.h>

#include "kernels.cuh"

namespace fastmlp::cuda {

// n values of T in device memory (cudaMalloc; never managed memory). Moves, never copies.
template <typename T>
class DeviceArray {
public:
    DeviceArray() = default;
    explicit DeviceArray(index n) { resize(n); }
    ~DeviceArray() { release(); }
    DeviceArray(DeviceArray&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    DeviceArray& operator=(DeviceArray&& other) noexcept {
        if (this != &other) {
            release();
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;

    // Exactly n values (contents lost when the size changes).
    void resize(index n) {
        if (n == size_) return;
        release();
        if (n > 0) {
            check(cudaMalloc(reinterpret_cast<void**>(&data_), sizeof(T) * std::size_t(n)),
                  "cudaMalloc");
            size_ = n;
        }
    }
    // At least n values (kept when already that large).
    void reserve(index n) {
        if (n > size_) resize(n);
    }
    void release() noexcept {
        if (data_ != nullptr) cudaFree(data_);
        data_ = nullptr;
        size_ = 0;
    }
    T* data() const { return data_; }
    index size() const { return size_; }

private:
    T* data_ = nullptr;
    index size_ = 0;
};

// Blocks of `threads` for n elements, capped (kernels loop with a grid stride).
inline unsigned blocks_for(index n, int threads, index cap = 4096) {
    index blocks = (n + threads - 1) / threads;
    if (blocks < 1) blocks = 1;
    if (blocks > cap) blocks = cap;
    return unsigned(blocks);
}

}  // namespace fastmlp::cuda
