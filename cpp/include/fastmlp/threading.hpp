// fastmlp/threading.hpp — fastmlp's threads: a small work-claiming pool.
//
// parallel_for(n_threads, count, body) runs body(i) for every i in [0, count).
// The calling thread takes part: it and up to n_threads - 1 helper threads
// claim indices one at a time from a shared counter, and the caller returns as
// soon as every index is finished. It never waits at a barrier for a helper
// that has not started: on a busy machine, where a helper may get no core for
// milliseconds, the caller simply does the work itself. (A fork/join runtime
// such as OpenMP waits at every join for all its threads, so one descheduled
// thread stalls the whole team.) If a helper that was running still took
// milliseconds to finish its piece (it had no CPU), the caller works alone for
// the next 100 ms.
//
// Results never depend on the thread count: callers split work into fixed
// pieces whose arithmetic does not depend on who runs them, and nothing sums
// floats across pieces in a thread-dependent order.
//
// Fork: helper threads do not exist in a forked child. The pool is rebuilt
// there on first use (pthread_atfork), so a child of a process that trained
// with threads trains with threads too, and never hangs.
#pragma once

#include <cstdint>
#include <type_traits>

#include "fastmlp/common.hpp"

namespace fastmlp {

// The most threads set_num_threads accepts (the default is capped there too).
constexpr int max_threads = 1024;

// Threads the kernels may use; at least 1. The default follows
// OMP_NUM_THREADS, else the CPUs this process may run on. Inside a ThreadLimit,
// no more than its limit. A job runs on fewer when the system refuses to start
// threads; results are the same.
int get_num_threads();
// Sets the thread count (1 <= n <= max_threads) for the whole process; lowering
// it ends the surplus helper threads (waiting for a running job to finish).
void set_num_threads(int n);

// The thread count for work of `work` units (FLOPs or elements): 1 below
// `threshold`, so small kernels never pay for waking a thread.
int threads_for(double work, double threshold);

// While it lives, the kernels called on this thread use at most `limit` threads.
class ThreadLimit {
public:
    explicit ThreadLimit(int limit);
    ~ThreadLimit();
    ThreadLimit(const ThreadLimit&) = delete;
    ThreadLimit& operator=(const ThreadLimit&) = delete;

private:
    int previous_;
};

// Chooses, for work repeated many times (a training step), between running it
// on one thread and on all of them, by timing both: the bits are the same
// either way, so the choice is only about time. All threads win on a quiet
// machine; on a virtual machine whose cores are far apart (reading what the
// other core wrote costs several times more there, in spells) one thread can
// win for small steps. The faster way, by the best of
// the last four timings of each, is used; now and then 4 runs go the other
// way, the first two untimed (they wake a sleeping helper or refill a cache):
// see next().
class ThreadChoice {
public:
    // The thread count for the next run: 1 or get_num_threads().
    int next();
    // Reports how long that run took.
    void record(int threads, double seconds);

private:
    double seconds_[2][4] = {};
    std::uint32_t samples_[2] = {0, 0};
    std::uint32_t since_tried_ = 0;
    int trying_ = 0;  // runs left to go the other way
    bool timed_ = false;
};

// Runs fn(context, i) for i in [0, count) on up to n_threads threads (see above).
void run_parallel(int n_threads, index count, void (*fn)(void*, index), void* context);

template <typename Body>
void parallel_for(int n_threads, index count, Body&& body) {
    if (n_threads <= 1 || count <= 1) {
        for (index i = 0; i < count; ++i) body(i);
        return;
    }
    using B = std::remove_reference_t<Body>;
    run_parallel(
        n_threads, count, [](void* context, index i) { (*static_cast<B*>(context))(i); },
        const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace fastmlp
