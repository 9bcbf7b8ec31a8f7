// A small pool of persistent worker threads.  Starting threads for every
// kernel call costs tens of microseconds per call, and a clubbed sweep makes
// two calls per factor: at 1e5 rows that was a quarter of a sweep.
//
// Protocol: the caller posts a job (task, ctx, n) under the mutex and bumps the
// generation; worker w runs task w + 1 if w + 1 < n and reports under the mutex.
// Job fields are read only under the mutex, so a worker that slept through
// several jobs sees the latest one consistently.  Waiting spins briefly (the
// next call usually follows within microseconds) before blocking.
#include "common/pool.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>

#ifndef _WIN32
#include <pthread.h>
#endif

namespace pyglmm {
namespace {

constexpr int kSpins = 4000;  // polls before blocking: some tens of microseconds

inline void relax() {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_ia32_pause();
#endif
}

class Pool {
 public:
  bool run(int64_t n, void (*task)(void*, int64_t), void* ctx) {
    bool idle = false;
    if (!busy_.compare_exchange_strong(idle, true, std::memory_order_acquire)) return false;
    {
      std::lock_guard<std::mutex> lock(m_);
      try {
        for (; started_ < n - 1; ++started_) std::thread(&Pool::worker, this, started_).detach();
      } catch (const std::system_error&) {  // no more threads: the caller starts its own
        busy_.store(false, std::memory_order_release);
        return false;
      }
      task_ = task;
      ctx_ = ctx;
      n_ = n;
      pending_.store(n - 1, std::memory_order_relaxed);
      generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    wake_.notify_all();
    task(ctx, 0);
    for (int i = 0; i < kSpins && pending_.load(std::memory_order_acquire) != 0; ++i) relax();
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(m_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    busy_.store(false, std::memory_order_release);
    return true;
  }

 private:
  void worker(int64_t w) {
    uint64_t seen = 0;
    for (;;) {
      for (int i = 0; i < kSpins && generation_.load(std::memory_order_acquire) == seen; ++i) relax();
      std::unique_lock<std::mutex> lock(m_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
      seen = generation_.load(std::memory_order_relaxed);
      if (w + 1 >= n_) continue;
      void (*task)(void*, int64_t) = task_;
      void* ctx = ctx_;
      lock.unlock();
      task(ctx, w + 1);
      lock.lock();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_.notify_one();
    }
  }

  std::atomic<bool> busy_{false};
  std::mutex m_;
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> pending_{0};
  void (*task_)(void*, int64_t) = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, started_ = 0;
};

// The pool of this process, made on first use and never destroyed (its
// detached workers may outlive static destructors at exit).  A child process
// after fork() has none of its parent's workers: the atfork handler makes it
// start a fresh pool (the parent's, possibly mid-job, is left alone).
std::atomic<Pool*> g_pool{nullptr};

Pool& this_process_pool() {
  Pool* pool = g_pool.load(std::memory_order_acquire);
  if (!pool) {
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(pool, fresh, std::memory_order_acq_rel)) {
      pool = fresh;
    } else {
      delete fresh;  // another thread made it first
    }
  }
  return *pool;
}

#ifndef _WIN32
void forget_pool_in_child() { g_pool.store(nullptr, std::memory_order_relaxed); }
const int g_atfork = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
#endif

}  // namespace

bool pool_run(int64_t n, void (*task)(void*, int64_t), void* ctx) {
  if (n <= 1) {
    if (n == 1) task(ctx, 0);
    return true;
  }
  return this_process_pool().run(n, task, ctx);
}

}  // namespace pyglmm
