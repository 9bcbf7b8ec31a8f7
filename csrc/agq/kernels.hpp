// The AGQ engine's kernel: plain C++17, no Python types.
//
// cluster_eval is pyglmm.engines.agq.kernels_numpy.cluster_eval, argument for
// argument (that docstring is the contract: the model, the per-cluster
// adaptive Gauss-Hermite log-likelihood, its exact gradient and Hessian in
// (beta, theta), the modes warm-started and overwritten, the conditional
// variances).  The numba twin (pyglmm/engines/agq/kernels_numba.py) is this
// file's algorithm line for line; its docstring explains the organisation of
// the sums.  The binding (csrc/bindings.cpp) checks every argument; the
// kernel trusts them.
//
// Threads: clusters are grouped into chunks fixed by the data
// (chunk_bounds); a thread takes whole chunks, each chunk sums its clusters'
// gradient and Hessian in cluster order, and the chunks' sums are added in
// chunk order, so results do not depend on the thread count.  Each thread
// sizes one workspace for the largest cluster; nothing is allocated per
// cluster or per row.
#pragma once

#include <cstdint>
#include <vector>

namespace pyglmm {
namespace agq {

constexpr double kModeTol = 1e-10;  // MODE_TOL of kernels_numpy
constexpr int kModeMaxIter = 100;   // MODE_MAX_ITER
constexpr int kMaxQ = 3;            // random effects per cluster

struct Problem {
  int family = 0;
  double dispersion = 1.0;
  int64_t n = 0, p = 0, q = 0, m = 0, K = 0;
  const double* X = nullptr;        // n x p
  const double* Z = nullptr;        // n x q
  const double* y = nullptr;        // n
  const double* weights = nullptr;  // n
  const double* offset = nullptr;   // n
  const int64_t* starts = nullptr;  // m + 1
  const double* beta = nullptr;     // p
  const double* theta = nullptr;    // q (q + 1) / 2
  const double* nodes = nullptr;    // K
  const double* gh_weights = nullptr;  // K
};

struct Outputs {
  double* modes = nullptr;    // m x q, in/out
  double* loglik = nullptr;   // m
  double* grad = nullptr;     // d (deriv >= 1)
  double* hess = nullptr;     // d x d (deriv == 2)
  double* condvar = nullptr;  // m x q x q
};

// Chunk c holds clusters [b[c], b[c+1]): consecutive clusters until their
// rows + kClusterWork per cluster reach kChunkWork (as in the numba twin).
constexpr int64_t kChunkWork = 8192;
constexpr int64_t kClusterWork = 16;
std::vector<int64_t> chunk_bounds(const int64_t* starts, int64_t m);

// Returns the number of clusters whose mode search did not converge.
int64_t cluster_eval(const Problem& pr, int deriv, const Outputs& out, int nthreads);

}  // namespace agq
}  // namespace pyglmm
