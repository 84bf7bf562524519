// fastmlp/probe.hpp — two probes of the machine the kernels run on, for benchmarks
// (fastmlp bench): the FMA throughput peak that a GEMM's GFLOP/s is measured against,
// and how much time other processes or the hypervisor take from spinning threads.
//
// Both start their own std::threads (not the pool's: they measure the machine, not
// fastmlp's scheduling), all released together once every one has started. Nothing
// here prints; the arguments are checked first and a bad one throws
// std::invalid_argument naming it. A thread that the system refuses to start throws
// std::system_error after the started ones have been joined.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastmlp {

struct FmaPeak {
    std::string dtype;   // "float32" or "float64"
    int threads = 0;
    std::string isa;     // "avx512", "avx2" or "portable": the chains that ran
    int lanes = 0;       // elements of `dtype` in one vector register
    int chains = 0;      // independent FMA chains per thread
    double gflops = 0;   // the best trial
    double median_gflops = 0;
    std::vector<double> trials;  // GFLOP/s of each trial, in the order run
};

// The FMA peak in GFLOP/s of `threads` threads together: each runs `chains` independent
// chains acc = acc · x + y on vector registers (nothing loaded or stored in the loop;
// 2 FLOP per lane per FMA) for about `seconds`, the iteration count calibrated once on
// short runs. A trial's GFLOP/s is all threads' FLOP over the slowest thread's time,
// counted from their common release (so threads beyond the cores do not inflate it).
// The chains are those of the ISA the GEMM runs now (gemm_kernel_name(): its automatic
// choice, or the kernel forced by FASTMLP_GEMM_KERNEL / set_gemm_kernel): AVX-512F (16 zmm
// chains), AVX2 + FMA (12 ymm chains), or portable 16-byte vectors (12 chains on x86-64,
// 24 on arm64; a multiply and an add on SSE2, an FMA where the compiler contracts it).
// dtype: "float32" or "float64" (double lanes, measured); threads in [1, 1024];
// seconds in (0, 10]; trials in [1, 100].
FmaPeak fma_peak(const std::string& dtype = "float32", int threads = 1, double seconds = 0.2, int trials = 3);

struct SpinProbe {
    int threads = 0;
    double seconds = 0;  // measured wall time: from the release to the last thread's last read
    double stolen = 0;   // stolen time of all threads / (threads · seconds), in [0, 1]
    std::vector<double> per_thread;  // each thread's stolen time / its own span
    std::int64_t gaps = 0;           // gaps counted, all threads together
    double longest_gap_us = 0;
};

// Time stolen from spinning threads: `threads` threads each read steady_clock in a tight
// loop for `seconds`; an interval between two consecutive reads longer than `gap_us`
// microseconds counts as stolen (the thread did not run), and so does the wait from the
// common release to a thread's first read when it exceeds gap_us. threads in [1, 1024];
// seconds in (0, 10]; gap_us finite and > 0.
SpinProbe spin_probe(int threads = 1, double seconds = 0.2, double gap_us = 20.0);

}  // namespace fastmlp
