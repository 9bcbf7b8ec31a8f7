// Persistent worker threads for run_blocks (common.hpp).
#pragma once

#include <cstdint>

namespace pyglmm {

// Runs task(ctx, t) for t in [0, n): t = 0 on the calling thread, each other t
// on worker thread t - 1, started on first use and kept.  Returns false,
// having run nothing, when the pool is already running a job (a kernel called
// from two Python threads at once): the caller then starts its own threads.
bool pool_run(int64_t n, void (*task)(void*, int64_t), void* ctx);

}  // namespace pyglmm
