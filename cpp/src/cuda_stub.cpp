// cuda_stub.cpp — fastmlp/cuda.hpp in a build without CUDA: it says so, and how
// to build with it.
#include "fastmlp/cuda.hpp"

#include <stdexcept>

namespace fastmlp::cuda {

namespace {
constexpr const char* not_built =
    "device='cuda': this fastmlp was built without CUDA; reinstall it with "
    "pip install . -Ccmake.define.FASTMLP_CUDA=ON (needs nvcc, the CUDA toolkit)";
}

bool built() { return false; }

DeviceInfo device_info() {
    DeviceInfo info;
    info.error = "built without CUDA";
    return info;
}

void require_device() { throw std::runtime_error(not_built); }

template <typename T>
struct DeviceNetwork<T>::Impl {};

template <typename T>
DeviceNetwork<T>::DeviceNetwork(Network<T>&, std::uint64_t) {
    throw std::runtime_error(not_built);
}
template <typename T>
DeviceNetwork<T>::~DeviceNetwork() = default;
template <typename T>
void DeviceNetwork<T>::upload(Network<T>&) { throw std::runtime_error(not_built); }
template <typename T>
void DeviceNetwork<T>::download(Network<T>&) { throw std::runtime_error(not_built); }
template <typename T>
FitResult DeviceNetwork<T>::fit(Network<T>&, const T*, const T*, const T*, index, const FitOptions&,
                                const FitRecord&, const std::function<bool()>&, std::int64_t) {
    throw std::runtime_error(not_built);
}
template <typename T>
void DeviceNetwork<T>::release_data() {}
template <typename T>
void DeviceNetwork<T>::predict(const T*, index, T*) { throw std::runtime_error(not_built); }
template <typename T>
double DeviceNetwork<T>::evaluate(const T*, const T*, const T*, index, Loss, double, double*) {
    throw std::runtime_error(not_built);
}
template <typename T>
std::string DeviceNetwork<T>::fit_path(index, Loss) const { throw std::runtime_error(not_built); }

template class DeviceNetwork<float>;
template class DeviceNetwork<double>;

}  // namespace fastmlp::cuda
