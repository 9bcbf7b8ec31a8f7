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

void club_prepare(int64_t k, int64_t Q, int64_t p, const int64_t* offsets, const double* S,
                  const double* lam, double* s, double* Wq, double* tq, double* D, double* R,
                  int nthreads) {
  const int64_t P = padded(p), width = p + 2;
  for (int64_t f = 0; f < k; ++f) {
    const int64_t lo = offsets[f], q = offsets[f + 1] - lo, nb = n_blocks(q, nthreads);
    // Per block of levels, the upper blocks of sum_g (s_g / D_g) s_g' (P x P).
    std::vector<double> acc(static_cast<size_t>(nb * P * P), 0.0);
    run_blocks(q, nb, [&](int64_t t, int64_t begin, int64_t end) {
      std::vector<double> at(kTile * P, 0.0), bt(kTile * P, 0.0);  // s_g / D_g and s_g, padded
      for (int64_t t0 = lo + begin; t0 < lo + end; t0 += kTile) {
        const int64_t nr = std::min(kTile, lo + end - t0);
        for (int64_t u = 0; u < nr; ++u) {
          const int64_t g = t0 + u;
          const double* __restrict src = S + g * width;
          double* __restrict sg = s + g * p;
          double* __restrict a = at.data() + u * P;
          double* __restrict b = bt.data() + u * P;
          Wq[g] = src[p];
          tq[g] = src[p + 1];
          D[g] = src[p] + lam[f];
          const double inv = 1.0 / D[g];
          for (int64_t l = 0; l < p; ++l) {
            sg[l] = b[l] = src[l];
            a[l] = src[l] * inv;
          }
        }
        gram_tile(nr, P, at.data(), bt.data(), acc.data() + t * P * P, true);
      }
    });
    for (int64_t t = 1; t < nb; ++t)
      for (int64_t i = 0; i < P * P; ++i) acc[i] += acc[t * P * P + i];
    unpad(p, P, acc.data(), R + f * p * p);
    mirror_upper(p, R + f * p * p);
  }
}

}  // namespace pyglmm
