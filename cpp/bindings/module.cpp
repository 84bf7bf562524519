// bindings/module.cpp — fastmlp._core: pybind11 glue only, one file per thing bound.
//
//   arrays.hpp    checked views of NumPy arrays; the dtype dispatch and GIL release
//   configs.cpp   the name tuples (ACTIVATIONS, ...), OptimizerConfig, ScheduleConfig
//   cpu.cpp       cpu_info (vendor, model, caches, features) and the GEMM configuration
//                 chosen for it; CPUID / sysfs / choice test hooks
//   kernels.cpp   the kernels; threads, GEMM kernel choice, build info
//   network.cpp   the engine: Network32, Network64 and their lock
//   probe.cpp     the machine probes: fma_peak (FMA peak GFLOP/s), spin_probe (stolen time)
//   cuda_kernels.cpp  _core.cuda: the CUDA kernels one by one, for the tests (CUDA builds only)
//
// C++ exceptions become Python ones (std::invalid_argument -> ValueError,
// std::out_of_range -> IndexError, std::bad_alloc -> MemoryError).
#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastmlp's C++ kernels and engine (private: use the fastmlp package)";
#ifdef FASTMLP_VERSION
    m.attr("__version__") = FASTMLP_VERSION;
#endif
    fastmlp::bindings::bind_configs(m);
    fastmlp::bindings::bind_cpu(m);
    fastmlp::bindings::bind_kernels(m);
    fastmlp::bindings::bind_network(m);
    fastmlp::bindings::bind_probe(m);
    fastmlp::bindings::bind_runtime(m);
#ifdef FASTMLP_CUDA
    fastmlp::bindings::bind_cuda_kernels(m);
#endif
}
