// The fused once-per-outer-iteration pass: everything the clubbed inner loop
// needs from X, read in a single sweep over the rows.
#include "common.hpp"

namespace pyglmm {

void stats_pass(int family, const Rows& r, int64_t Q, const double* y,
                const double* prior, const double* offset, const double* beta,
                const double* b, const double* dbeta, const double* db,
                bool design, double* w, double* G, double* h, double* s,
                double* Wq, double* tq, double* scalars, int nthreads) {
  const int64_t p = r.p, k = r.k;
  // Accumulator layout: [scalars(4) | G (p*p) | h (p) | s (Q*p) | Wq (Q) | tq (Q)].
  const size_t oG = 4, oh = oG + p * p, os = oh + p, oW = os + Q * p, ot = oW + Q;
  const size_t size = design ? ot + Q : oG;
  std::vector<double> acc = reduce_blocks(r.n, nthreads, size, [&](int64_t begin, int64_t end, double* a) {
    std::vector<double> wx(static_cast<size_t>(p));
    for (int64_t i = begin; i < end; ++i) {
      const double* x = r.X + i * p;
      const int32_t* c = r.codes + i * k;
      double zeta = 0.0, dz = 0.0;
      for (int64_t j = 0; j < p; ++j) {
        zeta += x[j] * beta[j];
        dz += x[j] * dbeta[j];
      }
      for (int64_t j = 0; j < k; ++j) {
        zeta += b[c[j]];
        dz += db[c[j]];
      }
      const double old = zeta - dz;
      a[1] += zeta * zeta;
      a[2] += dz * dz;
      a[3] += old * old;
      const double pw = prior ? prior[i] : 1.0;
      const Irls q = irls_point(family, zeta + (offset ? offset[i] : 0.0));
      const double res = y[i] - q.mu;
      a[0] += pw * res * res / q.var;
      if (!design) continue;
      const double wi = pw * q.var;
      w[i] = wi;
      if (wi == 0.0) continue;
      const double zi = zeta + res / q.var;
      for (int64_t j = 0; j < p; ++j) {
        const double v = wi * x[j];
        wx[j] = v;
        double* Gj = a + oG + j * p;
        for (int64_t l = j; l < p; ++l) Gj[l] += v * x[l];
        a[oh + j] += v * zi;
      }
      for (int64_t j = 0; j < k; ++j) {
        const int64_t g = c[j];
        double* sg = a + os + g * p;
        for (int64_t l = 0; l < p; ++l) sg[l] += wx[l];
        a[oW + g] += wi;
        a[ot + g] += wi * zi;
      }
    }
  });
  std::copy(acc.begin(), acc.begin() + 4, scalars);
  if (!design) return;
  std::copy(acc.begin() + oG, acc.begin() + oh, G);
  mirror_upper(p, G);
  std::copy(acc.begin() + oh, acc.begin() + os, h);
  std::copy(acc.begin() + os, acc.begin() + oW, s);
  std::copy(acc.begin() + oW, acc.begin() + ot, Wq);
  std::copy(acc.begin() + ot, acc.end(), tq);
}

}  // namespace pyglmm
