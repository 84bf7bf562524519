// bindings/bindings.hpp — what each file of the bindings adds to fastmlp._core.
#pragma once

#include <pybind11/pybind11.h>

namespace fastmlp::bindings {

void bind_configs(pybind11::module_& m);  // configs.cpp: name tuples, OptimizerConfig, ScheduleConfig
void bind_cpu(pybind11::module_& m);      // cpu.cpp: cpu_info and its test hooks
void bind_cuda_kernels(pybind11::module_& m);  // cuda_kernels.cpp: _core.cuda (CUDA builds only)
void bind_kernels(pybind11::module_& m);  // kernels.cpp: the kernels, one function each
void bind_network(pybind11::module_& m);  // network.cpp: Network32, Network64
void bind_probe(pybind11::module_& m);    // probe.cpp: fma_peak, spin_probe
void bind_runtime(pybind11::module_& m);  // kernels.cpp: threads, GEMM kernel choice, build info

}  // namespace fastmlp::bindings
