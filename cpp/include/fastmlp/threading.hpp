// fastmlp/threading.hpp — the thread count every kernel uses, and fork safety.
//
// The count is a process-wide setting (set_num_threads), passed to each
// parallel region through a num_threads clause: omp_set_num_threads would only
// change the calling thread's value, and Python may call us from any thread.
//
// Results never depend on the count: kernels split work into fixed blocks,
// never one block per thread, and never use an OpenMP reduction on floats.
//
// GNU OpenMP is not fork-safe: a child forked after the parent started its
// thread pool hangs in its first parallel region. A pthread_atfork handler
// keeps such a child to one thread (as PyTorch does), so it trains and
// predicts correctly, serially.
#pragma once

#include "fastmlp/common.hpp"

namespace fastmlp {

// Number of threads the kernels use; at least 1.
int get_num_threads();
// Sets the number of threads (n >= 1). In a forked child of a process that
// used several threads, the count stays 1 and this returns false.
bool set_num_threads(int n);
// True when this process is a forked child of a process whose OpenMP pool had started.
bool in_forked_child();
// True when the library was compiled with OpenMP.
bool have_openmp();

// The thread count for a parallel region doing `work` units (roughly FLOPs or
// bytes); 1 below `threshold`, so small kernels never pay a fork/join.
int threads_for(double work, double threshold);

// Call before a parallel region that will use n_threads > 1 (records that the pool started).
void note_parallel_region(int n_threads);

// body(i) for i in [0, count), on n_threads threads in a static split, or as a
// plain loop when one thread does: a serial call never enters the OpenMP
// runtime (which would allocate a team and take locks even for one thread).
template <typename Body>
void parallel_for(int n_threads, index count, Body&& body) {
    if (n_threads <= 1 || count <= 1) {
        for (index i = 0; i < count; ++i) body(i);
        return;
    }
    note_parallel_region(n_threads);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (index i = 0; i < count; ++i) body(i);
}

}  // namespace fastmlp
