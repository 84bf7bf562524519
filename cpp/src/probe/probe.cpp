// probe.cpp — the machine probes (fastmlp/probe.hpp): the FMA peak, on the chains of
// the best ISA that this build has and the CPU runs (fma_chains.hpp), and the time
// stolen from spinning threads. Portable code; the ISA files hold the loops.
#include "fastmlp/probe.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fastmlp/cpu.hpp"
#include "fastmlp/gemm.hpp"
#include "fma_chains.hpp"

namespace fastmlp {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point start, Clock::time_point stop) {
    return std::chrono::duration<double>(stop - start).count();
}

// The checks that both probes make; `probe` names the probe in the message.
void check_threads(const char* probe, int threads) {
    if (threads < 1 || threads > 1024)
        throw std::invalid_argument(std::string(probe) + ": threads must be in [1, 1024], got " +
                                    std::to_string(threads));
}

void check_seconds(const char* probe, double seconds) {
    if (!(seconds > 0 && seconds <= 10))  // NaN fails too
        throw std::invalid_argument(std::string(probe) + ": seconds must be in (0, 10], got " +
                                    std::to_string(seconds));
}

// Runs body(t, released) for t in [0, threads), each on its own new std::thread, all
// released together once every one has started (they wait yielding, so a core they
// share is not taken from those still starting). `released` is when they were: each
// thread measures from it, not from when it first ran, so that with more threads than
// cores the time before a thread's first slice counts too. body must not throw. If the
// system refuses a thread, the started ones are released without running body and
// joined, and the std::system_error propagates.
template <typename Body>
void run_together(int threads, const Body& body) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false}, abandon{false};
    Clock::time_point released;  // written before go is set, read after it is seen
    std::vector<std::thread> team;
    team.reserve(static_cast<std::size_t>(threads));
    try {
        for (int t = 0; t < threads; ++t)
            team.emplace_back([&, t] {
                ready.fetch_add(1, std::memory_order_relaxed);
                while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
                if (!abandon.load(std::memory_order_relaxed)) body(t, released);
            });
    } catch (...) {
        abandon.store(true, std::memory_order_relaxed);
        go.store(true, std::memory_order_release);
        for (std::thread& thread : team) thread.join();
        throw;
    }
    while (ready.load(std::memory_order_relaxed) < threads) std::this_thread::yield();
    released = Clock::now();
    go.store(true, std::memory_order_release);
    for (std::thread& thread : team) thread.join();
}

// The chains that fma_peak runs here: those of the ISA the GEMM runs now
// (gemm_kernel_name(): the automatic choice — AVX-512, then AVX2 + FMA, then portable, with
// AVX2 first on the Skylake-SP parts with one 512-bit FMA unit — or the kernel forced by
// FASTMLP_GEMM_KERNEL / set_gemm_kernel), so that the GEMM's share of the peak compares
// like with like.
const probe_detail::FmaChains& best_chains() {
#if defined(FASTMLP_X86_KERNELS)
    const std::string kernel = gemm_kernel_name();
    if (kernel == "avx512") return probe_detail::avx512_chains();
    if (kernel == "avx2") return probe_detail::avx2_chains();
#endif
    return probe_detail::portable_chains();
}

// Each thread runs `iterations` of the chains; returns the seconds from their release
// to the slowest one's end. The chains' results go into `sink` (volatile), so the loops
// cannot be dropped.
double time_chains(const probe_detail::FmaChains& chains, bool is_double, int threads,
                   std::int64_t iterations, volatile double& sink) {
    std::vector<double> elapsed(static_cast<std::size_t>(threads)), result(elapsed.size());
    run_together(threads, [&](int t, Clock::time_point released) {
        result[t] = is_double ? chains.run_f64(iterations, 1.0 + t) : chains.run_f32(iterations, 1.0f + float(t));
        elapsed[t] = seconds_between(released, Clock::now());
    });
    double total = 0;
    for (double r : result) total += r;
    sink = sink + total;
    return *std::max_element(elapsed.begin(), elapsed.end());
}

}  // namespace

FmaPeak fma_peak(const std::string& dtype, int threads, double seconds, int trials) {
    if (dtype != "float32" && dtype != "float64")
        throw std::invalid_argument("fma_peak: dtype must be 'float32' or 'float64', got '" + dtype + "'");
    check_threads("fma_peak", threads);
    check_seconds("fma_peak", seconds);
    if (trials < 1 || trials > 100)
        throw std::invalid_argument("fma_peak: trials must be in [1, 100], got " + std::to_string(trials));

    const probe_detail::FmaChains& chains = best_chains();
    const bool is_double = dtype == "float64";
    FmaPeak peak;
    peak.dtype = dtype;
    peak.threads = threads;
    peak.isa = chains.isa;
    peak.lanes = is_double ? chains.lanes_f64 : chains.lanes_f32;
    peak.chains = chains.chains;

    volatile double sink = 0;
    // Calibrate once. Releasing the threads costs a fixed time (much of it when they
    // outnumber the cores), measured on a run of one iteration; grow the count until a
    // run takes a tenth of `seconds` more than that (at most 64 times more per step, from
    // the time measured), then scale it so that the chains run for about `seconds`.
    // The overhead is the fastest of three runs: one preempted run would overstate it, and
    // the count scaled from an understated `work` would make the trials run far too long.
    double overhead = time_chains(chains, is_double, threads, 1, sink);
    for (int i = 0; i < 2; ++i) overhead = std::min(overhead, time_chains(chains, is_double, threads, 1, sink));
    constexpr std::int64_t most = std::int64_t(1) << 40;
    std::int64_t iterations = 1 << 10;
    double work = time_chains(chains, is_double, threads, iterations, sink) - overhead;
    while (work < seconds / 10 && iterations < most) {
        const double grow = work > 0 ? std::min(64.0, std::max(2.0, 1.5 * seconds / 10 / work)) : 64.0;
        iterations = std::min(most, std::int64_t(double(iterations) * grow));
        work = time_chains(chains, is_double, threads, iterations, sink) - overhead;
    }
    // Clamped in double before the conversion (an out-of-range conversion is undefined).
    const double scaled = double(iterations) * seconds / std::max(work, 1e-9);
    iterations = std::max<std::int64_t>(1, std::int64_t(std::min(scaled, double(most))));

    // 2 FLOP (a multiply and an add) per lane of each chain's FMA, on every thread.
    const double flop = 2.0 * peak.lanes * peak.chains * double(iterations) * threads;
    for (int trial = 0; trial < trials; ++trial)
        peak.trials.push_back(flop / time_chains(chains, is_double, threads, iterations, sink) / 1e9);
    std::vector<double> sorted = peak.trials;
    std::sort(sorted.begin(), sorted.end());
    peak.gflops = sorted.back();
    peak.median_gflops = trials % 2 ? sorted[trials / 2] : 0.5 * (sorted[trials / 2 - 1] + sorted[trials / 2]);
    return peak;
}

SpinProbe spin_probe(int threads, double seconds, double gap_us) {
    check_threads("spin_probe", threads);
    check_seconds("spin_probe", seconds);
    if (!(gap_us > 0) || !std::isfinite(gap_us))
        throw std::invalid_argument("spin_probe: gap_us must be a finite number > 0, got " + std::to_string(gap_us));

    // Compared in clock ticks as doubles: no overflow for any gap_us.
    const double ticks_per_second = double(Clock::period::den) / double(Clock::period::num);
    const double gap_ticks = gap_us * 1e-6 * ticks_per_second;
    const auto duration = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));

    struct Spin {
        double span = 0, stolen = 0, longest = 0;  // seconds
        std::int64_t gaps = 0;
    };
    std::vector<Spin> spins(static_cast<std::size_t>(threads));
    run_together(threads, [&](int t, Clock::time_point released) {
        // From the release: a thread that gets no core at first has that time stolen too.
        const Clock::time_point stop = released + duration;
        Clock::time_point last = released;
        Clock::duration stolen{0}, longest{0};
        std::int64_t gaps = 0;
        for (;;) {
            const Clock::time_point now = Clock::now();
            const Clock::duration interval = now - last;
            if (double(interval.count()) > gap_ticks) {
                stolen += interval;
                longest = std::max(longest, interval);
                ++gaps;
            }
            last = now;
            if (now >= stop) break;
        }
        Spin& spin = spins[t];
        spin.span = seconds_between(released, last);
        spin.stolen = std::chrono::duration<double>(stolen).count();
        spin.longest = std::chrono::duration<double>(longest).count();
        spin.gaps = gaps;
    });

    SpinProbe probe;
    probe.threads = threads;
    double stolen = 0, longest = 0;
    for (const Spin& spin : spins) {
        probe.seconds = std::max(probe.seconds, spin.span);
        probe.per_thread.push_back(spin.span > 0 ? spin.stolen / spin.span : 0.0);
        probe.gaps += spin.gaps;
        stolen += spin.stolen;
        longest = std::max(longest, spin.longest);
    }
    probe.stolen = probe.seconds > 0 ? std::min(1.0, stolen / (threads * probe.seconds)) : 0.0;
    probe.longest_gap_us = longest * 1e6;
    return probe;
}

}  // namespace fastmlp
