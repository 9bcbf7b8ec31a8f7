// Row-wise passes: the fused scorer (linear_predictor), the IRLS quantities, a row gather
// and a row order.
#include <cstring>
#include <vector>

#include "common/common.hpp"
#include "crossed/kernels.hpp"

namespace pyglmm {

void take_rows(const void* X, size_t row_bytes, const int64_t* order, int64_t n, void* out,
               int nthreads) {
  const char* x = static_cast<const char*>(X);
  char* o = static_cast<char*>(out);
  // Each thread writes (and so first touches) its own block of out.
  run_blocks(n, n_blocks(n, nthreads), [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::memcpy(o + i * row_bytes, x + order[i] * row_bytes, row_bytes);
  });
}

void order_rows(const int32_t* codes, int64_t n, int64_t k, int64_t factor, int64_t lo, int64_t q,
                int64_t* order) {
  std::vector<int64_t> next(static_cast<size_t>(q) + 1, 0);  // rows before each level's
  for (int64_t i = 0; i < n; ++i) ++next[codes[i * k + factor] - lo + 1];
  for (int64_t g = 0; g < q; ++g) next[g + 1] += next[g];
  for (int64_t i = 0; i < n; ++i) order[next[codes[i * k + factor] - lo]++] = i;
}

void linear_predictor(const Rows& r, const double* beta, const double* b,
                      const double* offset, double* eta, int nthreads) {
  const int64_t p = r.p, k = r.k;
  run_blocks(r.n, n_blocks(r.n, nthreads), [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double* x = r.X + i * p;
      const int32_t* c = r.codes + i * k;
      double e = offset ? offset[i] : 0.0;
      for (int64_t j = 0; j < p; ++j) e += x[j] * beta[j];
      for (int64_t j = 0; j < r.m; ++j)  // categorical fixed effects (types.hpp)
        if (r.xcat[i * r.m + j] >= 0) e += beta[r.xcat[i * r.m + j]];
      for (int64_t j = 0; j < k; ++j)
        if (c[j] >= 0) e += b[c[j]];
      eta[i] = e;
    }
  });
}

double irls_quantities(int family, int64_t n, const double* eta, const double* y,
                       const double* prior, const double* offset, double* mu,
                       double* w, double* z, int nthreads) {
  const int64_t nb = n_blocks(n, nthreads);
  std::vector<double> deviance(static_cast<size_t>(nb), 0.0);
  run_blocks(n, nb, [&](int64_t t, int64_t begin, int64_t end) {
    double dev = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      const double pw = prior ? prior[i] : 1.0;
      const Irls q = irls_point(family, eta[i]);
      mu[i] = q.mu;
      w[i] = pw * q.var;
      z[i] = eta[i] - (offset ? offset[i] : 0.0) + (y[i] - q.mu) / q.var;
      dev += pw * unit_deviance(family, y[i], q.mu);
    }
    deviance[t] = dev;
  });
  double total = 0.0;
  for (double d : deviance) total += d;  // in block order
  return total;
}

}  // namespace pyglmm
