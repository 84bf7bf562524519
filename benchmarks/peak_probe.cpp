// peak_probe: the machine's float32 FMA peak, in GFLOP/s, on 1..T threads.
//
// Each thread runs independent chains of fused multiply-adds, acc = acc·x + y, on
// vector registers: 16 zmm chains with AVX-512, 12 ymm chains with AVX2+FMA (enough
// to hide a 4-cycle FMA latency on two pipes), or 8 four-wide chains of GCC vector
// extensions elsewhere. Nothing is loaded or stored inside the loop, so the time is
// the FMA throughput alone. One FMA is 2 FLOP per lane.
//
// Built at benchmark time by bench_gemm.py (never committed as a binary):
//     g++ -O2 -fopenmp -mavx512f peak_probe.cpp -o peak_probe     (or -mavx2 -mfma)
// Usage: peak_probe [max_threads] [seconds_per_trial] [trials]
// Prints one line per thread count:
//     threads=T isa=NAME lanes=L chains=C median_gflops=G best_gflops=B trials=N
// The median of the trials is the figure to quote; the best shows the noise.

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define ISA_NAME "avx512"
typedef __m512 vec;
static const int lanes = 16;
#define CHAINS 16
static inline vec vec_set(float v) { return _mm512_set1_ps(v); }
static inline vec vec_fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline vec vec_add(vec a, vec b) { return _mm512_add_ps(a, b); }
static inline float vec_sum(vec a) { return _mm512_reduce_add_ps(a); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ISA_NAME "avx2"
typedef __m256 vec;
static const int lanes = 8;
#define CHAINS 12
static inline vec vec_set(float v) { return _mm256_set1_ps(v); }
static inline vec vec_fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline vec vec_add(vec a, vec b) { return _mm256_add_ps(a, b); }
static inline float vec_sum(vec a) {
    alignas(32) float v[8];
    _mm256_store_ps(v, a);
    float s = 0;
    for (float x : v) s += x;
    return s;
}
#else
#define ISA_NAME "generic"
typedef float vec __attribute__((vector_size(16)));
static const int lanes = 4;
#define CHAINS 8
static inline vec vec_set(float v) { return vec{v, v, v, v}; }
static inline vec vec_fma(vec a, vec b, vec c) { return a * b + c; }  // contracted to an FMA where the ISA has one
static inline vec vec_add(vec a, vec b) { return a + b; }
static inline float vec_sum(vec a) { return a[0] + a[1] + a[2] + a[3]; }
#endif

// CHAINS independent accumulators, written out so that each one stays in a register.
static float fma_chains(long iterations, float seed) {
    const vec x = vec_set(0.999999f), y = vec_set(1e-6f);
    vec a0 = vec_set(seed), a1 = vec_set(seed + 1), a2 = vec_set(seed + 2), a3 = vec_set(seed + 3);
    vec a4 = vec_set(seed + 4), a5 = vec_set(seed + 5), a6 = vec_set(seed + 6), a7 = vec_set(seed + 7);
#if CHAINS >= 12
    vec a8 = vec_set(seed + 8), a9 = vec_set(seed + 9), a10 = vec_set(seed + 10), a11 = vec_set(seed + 11);
#endif
#if CHAINS >= 16
    vec a12 = vec_set(seed + 12), a13 = vec_set(seed + 13), a14 = vec_set(seed + 14), a15 = vec_set(seed + 15);
#endif
    for (long i = 0; i < iterations; ++i) {
        a0 = vec_fma(a0, x, y); a1 = vec_fma(a1, x, y); a2 = vec_fma(a2, x, y); a3 = vec_fma(a3, x, y);
        a4 = vec_fma(a4, x, y); a5 = vec_fma(a5, x, y); a6 = vec_fma(a6, x, y); a7 = vec_fma(a7, x, y);
#if CHAINS >= 12
        a8 = vec_fma(a8, x, y); a9 = vec_fma(a9, x, y); a10 = vec_fma(a10, x, y); a11 = vec_fma(a11, x, y);
#endif
#if CHAINS >= 16
        a12 = vec_fma(a12, x, y); a13 = vec_fma(a13, x, y); a14 = vec_fma(a14, x, y); a15 = vec_fma(a15, x, y);
#endif
    }
    vec s = vec_add(vec_add(vec_add(a0, a1), vec_add(a2, a3)), vec_add(vec_add(a4, a5), vec_add(a6, a7)));
#if CHAINS >= 12
    s = vec_add(s, vec_add(vec_add(a8, a9), vec_add(a10, a11)));
#endif
#if CHAINS >= 16
    s = vec_add(s, vec_add(vec_add(a12, a13), vec_add(a14, a15)));
#endif
    return vec_sum(s);
}

// Seconds for `iterations` on each of `threads` threads, all started together.
static double time_trial(int threads, long iterations, float* sink) {
    double start = 0, stop = 0;
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
#pragma omp barrier
#pragma omp master
        start = omp_get_wtime();
        total += fma_chains(iterations, 1.0f + omp_get_thread_num());
#pragma omp barrier
#pragma omp master
        stop = omp_get_wtime();
    }
    *sink += total;
    return stop - start;
}

int main(int argc, char** argv) {
    const int max_threads = argc > 1 ? std::atoi(argv[1]) : omp_get_num_procs();
    const double seconds = argc > 2 ? std::atof(argv[2]) : 0.3;
    const int trials = argc > 3 ? std::atoi(argv[3]) : 5;
    if (max_threads < 1 || seconds <= 0 || trials < 1) {
        std::fprintf(stderr, "usage: peak_probe [max_threads >= 1] [seconds_per_trial > 0] [trials >= 1]\n");
        return 2;
    }
    const double flop_per_iteration = 2.0 * lanes * CHAINS;
    float sink = 0;
    for (int threads = 1; threads <= max_threads; ++threads) {
        // Calibrate: grow the count until a trial takes a tenth of the target.
        long iterations = 1 << 16;
        double t = time_trial(threads, iterations, &sink);
        while (t < seconds / 10) {
            iterations *= 4;
            t = time_trial(threads, iterations, &sink);
        }
        iterations = std::max(1L, static_cast<long>(iterations * seconds / t));
        std::vector<double> gflops;
        for (int trial = 0; trial < trials; ++trial) {
            const double elapsed = time_trial(threads, iterations, &sink);
            gflops.push_back(flop_per_iteration * iterations * threads / elapsed / 1e9);
        }
        std::sort(gflops.begin(), gflops.end());
        const double median = trials % 2 ? gflops[trials / 2] : 0.5 * (gflops[trials / 2 - 1] + gflops[trials / 2]);
        std::printf("threads=%d isa=%s lanes=%d chains=%d median_gflops=%.1f best_gflops=%.1f trials=%d\n", threads,
                    ISA_NAME, lanes, CHAINS, median, gflops.back(), trials);
    }
    std::fprintf(stderr, "checksum %g\n", static_cast<double>(sink));  // keeps the chains alive
    return 0;
}
