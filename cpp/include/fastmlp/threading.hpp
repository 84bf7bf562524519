// fastmlp/threading.hpp — fastmlp's threads: a small work-claiming pool.
//
// parallel_for(n_threads, count, body) runs body(i) for every i in [0, count).
// The calling thread takes part: it and up to n_threads - 1 helper threads
// claim indices one at a time from a shared counter, and the caller returns as
// soon as every index is finished. It never waits at a barrier for a helper
// that has not started: on a busy machine, where a helper may get no core for
// milliseconds, the caller simply does the work itself. (A fork/join runtime
// such as OpenMP waits at every join for all its threads, so one descheduled
// thread stalls the whole team; PERFORMANCE.md and the speed issue measured
// that collapse.) If a helper that was running still took milliseconds to
// finish its piece (it had no CPU), the caller works alone for the next 100 ms.
//
// Results never depend on the thread count: callers split work into fixed
// pieces whose arithmetic does not depend on who runs them, and nothing sums
// floats across pieces in a thread-dependent order.
//
// Fork: helper threads do not exist in a forked child. The pool is rebuilt
// there on first use (pthread_atfork), so a child of a process that trained
// with threads trains with threads too, and never hangs.
#pragma once

#include <type_traits>

#include "fastmlp/common.hpp"

namespace fastmlp {

// Threads the kernels may use; at least 1. The default follows
// OMP_NUM_THREADS, else the CPUs this process may run on.
int get_num_threads();
// Sets the thread count (n >= 1) for the whole process.
void set_num_threads(int n);

// The thread count for work of `work` units (FLOPs or elements): 1 below
// `threshold`, so small kernels never pay for waking a thread.
int threads_for(double work, double threshold);

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
