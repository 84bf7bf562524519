// threading.cpp — the process-wide thread count and the fork handler.
#include "fastmlp/threading.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FASTMLP_HAVE_PTHREAD_ATFORK 1
#endif

namespace fastmlp {
namespace {

int default_threads() {
#ifdef _OPENMP
    return std::max(1, omp_get_max_threads());  // OMP_NUM_THREADS, else the usable cores
#else
    return 1;
#endif
}

std::atomic<int> g_threads{0};           // 0: not read yet
std::atomic<bool> g_pool_started{false};  // a parallel region with > 1 thread has run
std::atomic<bool> g_forked_child{false};

#ifdef FASTMLP_HAVE_PTHREAD_ATFORK
void on_fork_child() {
    // The parent's OpenMP workers do not exist in the child: stay serial.
    if (g_pool_started.load()) {
        g_forked_child.store(true);
        g_threads.store(1);
    }
}
struct ForkHandlerRegistration {
    ForkHandlerRegistration() { pthread_atfork(nullptr, nullptr, on_fork_child); }
};
const ForkHandlerRegistration fork_handler_registration;
#endif

}  // namespace

int get_num_threads() {
    int n = g_threads.load();
    if (n == 0) {
        int expected = 0;
        g_threads.compare_exchange_strong(expected, default_threads());
        n = g_threads.load();
    }
    return n;
}

bool set_num_threads(int n) {
    require(n >= 1, "set_num_threads: the thread count must be at least 1");
    if (g_forked_child.load()) return n == 1;
#ifdef _OPENMP
    g_threads.store(n);
    return true;
#else
    return n == 1;
#endif
}

bool in_forked_child() { return g_forked_child.load(); }

bool have_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

int threads_for(double work, double threshold) {
    const int n = get_num_threads();
    if (n <= 1 || work < threshold) return 1;
    return n;
}

void note_parallel_region(int n_threads) {
    if (n_threads > 1 && !g_pool_started.load(std::memory_order_relaxed))
        g_pool_started.store(true);
}

}  // namespace fastmlp
