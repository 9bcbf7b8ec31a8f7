// A small pool of persistent worker threads.  Starting threads for every
// kernel call costs tens of microseconds per call, and a clubbed sweep makes
// two calls per factor: at 1e5 rows that was a quarter of a sweep.
//
// Protocol: the caller posts a job (task, ctx, n) under the mutex and bumps the
// generation; worker w runs task w + 1 if w + 1 < n and reports under the mutex.
// Job fields are read only under the mutex, so a worker that slept through
// several jobs sees the latest one consistently.  Waiting spins briefly (the
// next call usually follows within microseconds) before blocking.
#include "pool.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#ifdef _WIN32
#include <process.h>
#define PYGLMM_GETPID _getpid
#else
#include <unistd.h>
#define PYGLMM_GETPID getpid
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
      while (static_cast<int64_t>(started_) < n - 1) {
        std::thread(&Pool::worker, this, started_++).detach();
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

// The pool of this process.  Never destroyed (its detached workers may outlive
// static destructors at exit); a child process after fork() has none of its
// parent's workers, so it gets a fresh pool (the parent's is left alone).
std::mutex g_pool_mutex;
Pool* g_pool = nullptr;
long g_pool_pid = 0;

Pool& this_process_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  const long pid = static_cast<long>(PYGLMM_GETPID());
  if (!g_pool || g_pool_pid != pid) {
    g_pool = new Pool();
    g_pool_pid = pid;
  }
  return *g_pool;
}

}  // namespace

bool pool_run(int64_t n, void (*task)(void*, int64_t), void* ctx) {
  if (n <= 1) {
    if (n == 1) task(ctx, 0);
    return true;
  }
  return this_process_pool().run(n, task, ctx);
}

}  // namespace pyglmm
