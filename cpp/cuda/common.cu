// common.cu — errors of the CUDA runtime as C++ exceptions.
#include <stdexcept>
#include <string>

#include "device.cuh"

namespace fastmlp::cuda {

void check(cudaError_t status, const char* what) {
    if (status == cudaSuccess) return;
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

void check_launch(const char* what) { check(cudaGetLastError(), what); }

}  // namespace fastmlp::cuda
