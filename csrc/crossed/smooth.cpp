// Kernels for the standard errors' smoother and the clubbed loop's Cholesky
// inputs: per-level work over the Q x p tables, threaded over blocks of levels.
#include "common/common.hpp"
#include "crossed/kernels.hpp"

namespace pyglmm {

SmoothResult smooth_step(const Rows& r, const int64_t* offsets, int64_t factor,
                         const double* w, const double* s, const double* D,
                         const double* counts, bool centre, double* A, double* work,
                         int nthreads) {
  const int64_t p = r.p, lo = offsets[factor], q = offsets[factor + 1] - lo;
  group_cross_sums(r, factor, lo, q, w, 1.0, A, p, work, nthreads);
  // Levels in contiguous blocks; per-block sums are reduced in block order.
  const int64_t nb = n_blocks(q, nthreads), width = p + 1;
  // Phase 1: work_g = (s_g - work_g) / D_g; per block, its column sums and sum 1/D_g.
  std::vector<double> part(static_cast<size_t>(nb * width), 0.0);
  run_blocks(q, nb, [&](int64_t t, int64_t begin, int64_t end) {
    double* __restrict sum = part.data() + t * width;
    for (int64_t g = begin; g < end; ++g) {
      const double inv = 1.0 / D[lo + g];
      const double* __restrict sg = s + (lo + g) * p;
      double* __restrict ng = work + g * p;
      for (int64_t l = 0; l < p; ++l) {
        ng[l] = (sg[l] - ng[l]) * inv;
        sum[l] += ng[l];
      }
      sum[p] += inv;
    }
  });
  // The constrained block minimum (sum_g A_g = 0): shift_g = c / D_g.
  std::vector<double> c(static_cast<size_t>(p), 0.0);
  if (centre) {
    for (int64_t t = 1; t < nb; ++t)
      for (int64_t l = 0; l <= p; ++l) part[l] += part[t * width + l];
    for (int64_t l = 0; l < p; ++l) c[l] = part[l] / part[p];
  }
  // Phase 2: centre, the change's norms, and A_g = new_g.
  std::vector<double> norms(static_cast<size_t>(2 * nb), 0.0);
  run_blocks(q, nb, [&](int64_t t, int64_t begin, int64_t end) {
    double num = 0.0, den = 0.0;
    for (int64_t g = begin; g < end; ++g) {
      const double inv = 1.0 / D[lo + g];
      const double* __restrict ng = work + g * p;
      double* __restrict ag = A + (lo + g) * p;
      double dn = 0.0, dd = 0.0;
      for (int64_t l = 0; l < p; ++l) {
        const double v = ng[l] - c[l] * inv, old = ag[l], e = old - v;
        dn += e * e;
        dd += old * old;
        ag[l] = v;
      }
      num += counts[lo + g] * dn;
      den += counts[lo + g] * dd;
    }
    norms[2 * t] = num;
    norms[2 * t + 1] = den;
  });
  SmoothResult res{0.0, 0.0};
  for (int64_t t = 0; t < nb; ++t) {
    res.num += norms[2 * t];
    res.den += norms[2 * t + 1];
  }
  return res;
}

}  // namespace pyglmm
