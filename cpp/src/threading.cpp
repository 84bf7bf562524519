// threading.cpp — the work-claiming pool behind parallel_for (see threading.hpp).
//
// One job at a time. A job is published by closing the last job's ticket, writing
// its fields, then a ticket (generation << 32 | next index), then the generation.
// Workers claim an index by compare-and-swap on the ticket, which fails once the
// generation moved on, so a worker that wakes late can never run a piece of a
// finished job, nor a piece of the new one with the old one's fields (the fences
// in run() and work() make that hold on weakly-ordered CPUs too). An exception
// thrown by a piece is kept and rethrown on the caller once every piece has
// stopped.
// Helpers spin briefly after a job (consecutive kernels of a training step
// follow within microseconds), then sleep on a condition variable. They are
// started when a job first asks for them; a thread the system refuses to start
// (a process or memory limit) leaves the jobs to the helpers that did start.
// Lowering the thread count ends the surplus helpers.
#include "fastmlp/threading.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#define FASTMLP_POSIX 1
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fastmlp {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

int usable_cpus() {
#if defined(FASTMLP_POSIX) && defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
    return std::max(1u, std::thread::hardware_concurrency());
}

int default_threads() {
    if (const char* text = std::getenv("OMP_NUM_THREADS")) {
        const long n = std::atol(text);  // "4" or "4,2": the first level
        if (n >= 1) return int(std::min<long>(n, max_threads));
    }
    return std::min(usable_cpus(), max_threads);
}

std::atomic<int> g_threads{0};  // 0: not read yet

using Clock = std::chrono::steady_clock;
// How long a thread spins before it sleeps: a helper between jobs (the kernels
// of a training step follow each other within microseconds), and the caller
// waiting for a helper's last piece (waking from a sleep costs tens of µs).
constexpr auto helper_spin = std::chrono::microseconds(200);
constexpr auto caller_spin = std::chrono::microseconds(100);
// A wait for a helper longer than this (and than four times the caller's own
// share) means the helper had no CPU (a scheduler time slice is a few ms); the
// caller then works alone for a while.
constexpr auto backoff_after = std::chrono::microseconds(2000);
constexpr auto backoff = std::chrono::milliseconds(100);

// True on a thread while it runs a piece of a job: a parallel_for inside a
// piece runs on that thread alone (the pool runs one job at a time).
thread_local bool t_in_job = false;
struct InJob {
    InJob() { t_in_job = true; }
    ~InJob() { t_in_job = false; }
};

class Pool {
public:
    void run(int n_threads, index count, void (*fn)(void*, index), void* context) {
        if (t_in_job) {
            for (index i = 0; i < count; ++i) fn(context, i);
            return;
        }
        std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
        const auto start = Clock::now();
        if (!submit.owns_lock() || start < backoff_until_) {
            // Another thread's job is running, or helpers were recently too slow
            // to get a CPU: work alone.
            for (index i = 0; i < count; ++i) fn(context, i);
            return;
        }
        const bool new_helpers = start_helpers(n_threads - 1);
        const std::uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
        // Close the last job before touching its fields: a helper that comes late
        // to it may already have read some of the new ones, and its claim on the
        // old ticket must fail (no index is below the closed ticket's).
        ticket_.store(std::uint64_t(generation) << 32 | 0xffffffffu, std::memory_order_seq_cst);
        // The store above is a release: it keeps earlier writes before it, but not
        // the relaxed field stores below, which a weakly-ordered CPU (aarch64) may
        // make visible first; a late helper would then read a new field and still
        // see the old ticket open. This fence pairs with the acquire fence in
        // work(): a helper that reads any field written below sees the closed
        // ticket (or a newer one) when it loads the ticket after its fence.
        std::atomic_thread_fence(std::memory_order_release);
        fn_.store(fn, std::memory_order_relaxed);
        context_.store(context, std::memory_order_relaxed);
        count_.store(count, std::memory_order_relaxed);
        active_helpers_.store(std::min(n_threads - 1, int(helpers_.size())),
                              std::memory_order_relaxed);
        unfinished_.store(count, std::memory_order_relaxed);
        ticket_.store(std::uint64_t(generation) << 32, std::memory_order_release);
        generation_.store(generation, std::memory_order_seq_cst);
        const bool woke_helpers = sleepers_.load(std::memory_order_seq_cst) > 0 || new_helpers;
        if (sleepers_.load(std::memory_order_seq_cst) > 0) {
            std::lock_guard<std::mutex> lock(sleep_mutex_);
            wake_.notify_all();
        }
        work(generation);
        const auto worked = Clock::now();
        wait_for_helpers();
        if (error_) {  // a piece threw: every piece has stopped; rethrow on the caller
            std::exception_ptr error = std::exchange(error_, nullptr);
            std::rethrow_exception(error);
        }
        // A helper that was awake when the job began, yet finished its last
        // piece long after the caller ran out of pieces, had no CPU (another
        // process holds the other core): run the next jobs alone for a while
        // rather than wait for it again. (A helper just started or woken from
        // sleep may simply be slow to get going, as an idle virtual CPU is;
        // that is no evidence.)
        const auto waited = Clock::now() - worked;
        if (!woke_helpers && waited > backoff_after && waited > 4 * (worked - start))
            backoff_until_ = Clock::now() + backoff;
    }

private:
    // Waits only for pieces that helpers claimed and are still running: spins
    // briefly, then sleeps, which frees this core for a helper that was
    // preempted in the middle of its piece.
    void wait_for_helpers() {
        const auto spin_until = Clock::now() + caller_spin;
        do {
            for (int i = 0; i < 64; ++i) {
                if (unfinished_.load(std::memory_order_acquire) == 0) return;
                cpu_relax();
            }
        } while (Clock::now() < spin_until);
        std::unique_lock<std::mutex> lock(done_mutex_);
        caller_waiting_.store(true, std::memory_order_seq_cst);
        done_.wait(lock, [&] { return unfinished_.load(std::memory_order_seq_cst) == 0; });
        caller_waiting_.store(false, std::memory_order_relaxed);
    }

public:
    // Ends the helpers beyond the first `keep` (set_num_threads lowered the
    // count) once no job runs, and starts afresh: the pool tries again to start
    // the threads the system once refused, and ends a spell of working alone.
    void release_helpers(int keep) {
        std::lock_guard<std::mutex> submit(submit_mutex_);
        start_refused_ = false;
        backoff_until_ = {};
        if (int(helpers_.size()) <= keep) return;
        {
            std::lock_guard<std::mutex> lock(sleep_mutex_);
            keep_.store(keep, std::memory_order_seq_cst);
            wake_.notify_all();
        }
        for (std::size_t id = std::size_t(keep); id < helpers_.size(); ++id) helpers_[id].join();
        helpers_.resize(std::size_t(keep));
        keep_.store(std::numeric_limits<int>::max(), std::memory_order_seq_cst);
    }

private:
    // Starts helpers up to `wanted`; true when it started any. A thread the
    // system refuses to start (std::system_error: a limit on processes or
    // memory) is not asked for again until the next set_num_threads: the jobs
    // run on the helpers there are, with the same results.
    bool start_helpers(int wanted) {
        const std::size_t before = helpers_.size();
        while (int(helpers_.size()) < wanted && !start_refused_) {
            const int id = int(helpers_.size());
            try {
                helpers_.emplace_back([this, id] { helper_loop(id); });
            } catch (const std::exception&) {
                start_refused_ = true;
            }
        }
        return helpers_.size() > before;
    }

    void work(std::uint32_t generation) {
        void (*fn)(void*, index) = fn_.load(std::memory_order_relaxed);
        void* context = context_.load(std::memory_order_relaxed);
        const index count = count_.load(std::memory_order_relaxed);
        // Pairs with the release fence in run(): if a field read above came from
        // a newer job, the ticket read below is that job's closed ticket or newer,
        // so the claim fails rather than run the new fields under the old ticket.
        std::atomic_thread_fence(std::memory_order_acquire);
        std::uint64_t ticket = ticket_.load(std::memory_order_acquire);
        for (;;) {
            if (std::uint32_t(ticket >> 32) != generation) return;
            const index i = index(ticket & 0xffffffffu);
            if (i >= count) return;
            if (!ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel))
                continue;  // ticket now holds the current value
            try {
                InJob in_job;
                fn(context, i);
            } catch (...) {  // kept for the caller; the other pieces still run
                std::lock_guard<std::mutex> lock(error_mutex_);
                if (!error_) error_ = std::current_exception();
            }
            if (unfinished_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
                caller_waiting_.load(std::memory_order_seq_cst)) {
                std::lock_guard<std::mutex> lock(done_mutex_);
                done_.notify_all();
            }
            ticket = ticket_.load(std::memory_order_acquire);
        }
    }

    void helper_loop(int id) {
        std::uint32_t seen = generation_.load(std::memory_order_acquire);
        auto released = [&] { return id >= keep_.load(std::memory_order_seq_cst); };
        for (;;) {
            std::uint32_t generation = seen;
            const auto spin_until = Clock::now() + helper_spin;
            do {
                for (int i = 0; i < 64 && generation == seen; ++i) {
                    cpu_relax();
                    generation = generation_.load(std::memory_order_acquire);
                }
            } while (generation == seen && Clock::now() < spin_until);
            if (generation == seen) {
                std::unique_lock<std::mutex> lock(sleep_mutex_);
                sleepers_.fetch_add(1, std::memory_order_seq_cst);
                wake_.wait(lock, [&] {
                    return generation_.load(std::memory_order_seq_cst) != seen || released();
                });
                sleepers_.fetch_sub(1, std::memory_order_seq_cst);
                generation = generation_.load(std::memory_order_acquire);
            }
            if (released()) return;
            seen = generation;
            if (id < active_helpers_.load(std::memory_order_relaxed)) work(generation);
        }
    }

    std::mutex submit_mutex_;
    std::vector<std::thread> helpers_;  // helper `id` is helpers_[id] (guarded by submit_mutex_)
    bool start_refused_ = false;        // the system refused a thread (guarded by submit_mutex_)
    std::atomic<int> keep_{std::numeric_limits<int>::max()};  // helpers from this id on end
    Clock::time_point backoff_until_{};  // work alone until then (guarded by submit_mutex_)
    std::atomic<void (*)(void*, index)> fn_{nullptr};
    std::atomic<void*> context_{nullptr};
    std::atomic<index> count_{0};
    std::atomic<int> active_helpers_{0};
    std::atomic<index> unfinished_{0};
    std::atomic<std::uint64_t> ticket_{0};
    std::atomic<std::uint32_t> generation_{0};
    std::mutex sleep_mutex_;  // helpers without work sleep here
    std::condition_variable wake_;
    std::atomic<int> sleepers_{0};
    std::mutex done_mutex_;  // the caller waiting for helpers' last pieces sleeps here
    std::condition_variable done_;
    std::atomic<bool> caller_waiting_{false};
    std::mutex error_mutex_;
    std::exception_ptr error_;  // the first exception a piece threw (guarded by error_mutex_)
};

// Never destroyed: its helpers may still be asleep in it at exit, and destroying a
// joinable std::thread would call std::terminate.
std::atomic<Pool*> g_pool{nullptr};

Pool& pool() {
    Pool* current = g_pool.load(std::memory_order_acquire);
    if (current == nullptr) {
        Pool* fresh = new Pool;
        if (g_pool.compare_exchange_strong(current, fresh)) return *fresh;
        delete fresh;  // another thread won the race; `current` holds its pool
    }
    return *current;
}

#ifdef FASTMLP_POSIX
// The child of a fork has none of the parent's helper threads, and the pool's
// locks may have been held by them: start over with a new pool (the old one is
// left as it is, unreachable).
void on_fork_child() { g_pool.store(nullptr); }
struct ForkHandlerRegistration {
    ForkHandlerRegistration() { pthread_atfork(nullptr, nullptr, on_fork_child); }
};
const ForkHandlerRegistration fork_handler_registration;
#endif

thread_local int t_limit = 0;  // 0: no ThreadLimit on this thread

}  // namespace

int get_num_threads() {
    int n = g_threads.load();
    if (n == 0) {
        int expected = 0;
        g_threads.compare_exchange_strong(expected, default_threads());
        n = g_threads.load();
    }
    return t_limit > 0 ? std::min(n, t_limit) : n;
}

ThreadLimit::ThreadLimit(int limit) : previous_(t_limit) {
    require(limit >= 1, "ThreadLimit: the limit must be at least 1");
    t_limit = previous_ > 0 ? std::min(previous_, limit) : limit;
}

ThreadLimit::~ThreadLimit() { t_limit = previous_; }

int ThreadChoice::next() {
    const int all = get_num_threads();
    if (all < 2) {
        timed_ = false;
        return 1;
    }
    auto best = [&](int mode) {  // the fastest of the last few (preemption only adds time)
        const double* t = seconds_[mode];
        const std::uint32_t n = std::min<std::uint32_t>(samples_[mode], 4);
        return n == 0 ? HUGE_VAL : *std::min_element(t, t + n);
    };
    const bool all_faster = best(1) <= best(0);  // all, until one thread has been timed
    // The other way is tried (4 runs): one thread first after 16 runs, then
    // every 4096 while all threads are faster (one thread's time hardly changes
    // with the spells, so its old timings stay good to compare with), all
    // threads every 64 while one is faster (the spell may be over at any time).
    // A run that takes over 20 ms on all threads (a few large products, which
    // two threads share well even in the slow spells) is not tried on one.
    const std::uint32_t period = !all_faster ? 64u : samples_[0] == 0 ? 16u : 4096u;
    if (trying_ == 0 && ++since_tried_ >= period && !(all_faster && best(1) > 0.02)) {
        trying_ = 4;
        since_tried_ = 0;
    }
    bool use_all = all_faster;
    timed_ = true;
    if (trying_ > 0) {
        use_all = !use_all;
        timed_ = trying_ <= 2;  // the first two wake a helper or refill a cache
        --trying_;
    }
    return use_all ? all : 1;
}

void ThreadChoice::record(int threads, double seconds) {
    if (!timed_) return;
    const int mode = threads > 1 ? 1 : 0;
    seconds_[mode][samples_[mode]++ % 4] = seconds;
}

void set_num_threads(int n) {
    require(n >= 1 && n <= max_threads,
            "set_num_threads: n must be between 1 and " + std::to_string(max_threads) + ", got " +
                std::to_string(n));
    g_threads.store(n);
    // Helpers beyond the new count end (a ThreadLimit only idles them).
    if (Pool* current = g_pool.load(std::memory_order_acquire); current != nullptr && !t_in_job)
        current->release_helpers(n - 1);
}

int threads_for(double work, double threshold) {
    const int n = get_num_threads();
    if (n <= 1 || work < threshold) return 1;
    return n;
}

void run_parallel(int n_threads, index count, void (*fn)(void*, index), void* context) {
    if (n_threads <= 1 || count <= 1) {
        for (index i = 0; i < count; ++i) fn(context, i);
        return;
    }
    require(count <= index(0xffffffff), "run_parallel: too many pieces");
    pool().run(n_threads, count, fn, context);
}

}  // namespace fastmlp
