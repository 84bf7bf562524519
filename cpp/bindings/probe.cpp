// bindings/probe.cpp — the machine probes (fastmlp/probe.hpp) as plain dicts, run with
// the GIL released; their argument errors (std::invalid_argument) become ValueError.
#include <pybind11/stl.h>

#include <string>

#include "bindings.hpp"
#include "fastmlp/probe.hpp"

namespace fastmlp::bindings {
namespace py = pybind11;

void bind_probe(py::module_& m) {
    m.def(
        "fma_peak",
        [](const std::string& dtype, int threads, double seconds, int trials) {
            FmaPeak peak;
            {
                py::gil_scoped_release release;
                peak = fma_peak(dtype, threads, seconds, trials);
            }
            py::dict d;
            d["dtype"] = peak.dtype;
            d["threads"] = peak.threads;
            d["isa"] = peak.isa;
            d["lanes"] = peak.lanes;
            d["chains"] = peak.chains;
            d["gflops"] = peak.gflops;
            d["median_gflops"] = peak.median_gflops;
            d["trials"] = peak.trials;
            return d;
        },
        py::arg("dtype") = "float32", py::arg("threads") = 1, py::arg("seconds") = 0.2, py::arg("trials") = 3,
        "The FMA throughput peak in GFLOP/s of `threads` threads running independent FMA chains on vector "
        "registers for about `seconds` each, `trials` times: {dtype, threads, isa, lanes, chains, gflops "
        "(best trial), median_gflops, trials}.");
    m.def(
        "spin_probe",
        [](int threads, double seconds, double gap_us) {
            SpinProbe probe;
            {
                py::gil_scoped_release release;
                probe = spin_probe(threads, seconds, gap_us);
            }
            py::dict d;
            d["threads"] = probe.threads;
            d["seconds"] = probe.seconds;
            d["stolen"] = probe.stolen;
            d["per_thread"] = probe.per_thread;
            d["gaps"] = probe.gaps;
            d["longest_gap_us"] = probe.longest_gap_us;
            return d;
        },
        py::arg("threads") = 1, py::arg("seconds") = 0.2, py::arg("gap_us") = 20.0,
        "Time stolen from `threads` threads spinning on steady_clock for `seconds`: every interval between "
        "two reads longer than `gap_us` microseconds. {threads, seconds, stolen (0..1), per_thread, gaps, "
        "longest_gap_us}.");
}

}  // namespace fastmlp::bindings
