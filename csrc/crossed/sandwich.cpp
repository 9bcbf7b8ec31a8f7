// One pass over X for the sandwich covariances of beta (eq. 24 and the naive
// logistic regression comparison of Section 6).
#include "common/common.hpp"
#include "crossed/kernels.hpp"

namespace pyglmm {

void sandwich_pass(const Rows& r, int64_t Q, const double* A, const double* wu,
                   double scale, const double* wm, double* H, double* ZU,
                   double* M0, int nthreads) {
  // T columns in all: p dense, then pc dummies of m categoricals (types.hpp).
  const int64_t p = r.p, k = r.k, m = r.m, T = p + r.pc, P = padded(T);
  // Block accumulator: [H (P*P) | M0 (P*P)], padded; ZU in per-level slabs.
  const size_t oM = P * P;
  std::vector<double> acc = reduce_blocks(r, nthreads, 2 * P * P, T, ZU, Q, 0, -1,
                                          [&](int64_t begin, int64_t end, double* a, LevelSlab& slab) {
    // Tile buffers (zero-padded to P columns): x, u = wu r, r and wm r.
    std::vector<double> xt(kTile * P, 0.0), ut(kTile * P, 0.0), rt(kTile * P, 0.0), mt(kTile * P, 0.0);
    for (int64_t t0 = begin; t0 < end; t0 += kTile) {
      const int64_t nr = std::min(kTile, end - t0);
      for (int64_t t = 0; t < nr; ++t) {
        const int64_t i = t0 + t;
        const double wui = scale * wu[i];
        const double wmi = wm ? wm[i] : wui;
        const double* __restrict x = r.X + i * p;
        const int32_t* c = r.codes + i * k;
        const int32_t* xc = r.xcat + i * m;
        double* __restrict xr = xt.data() + t * P;
        double* __restrict rr = rt.data() + t * P;
        for (int64_t l = 0; l < p; ++l) xr[l] = x[l];
        std::fill(xr + p, xr + T, 0.0);  // the row's dummies
        for (int64_t u = 0; u < m; ++u)
          if (xc[u] >= 0) xr[xc[u]] = 1.0;
        for (int64_t l = 0; l < T; ++l) rr[l] = xr[l];
        if (A)
          for (int64_t j = 0; j < k; ++j) {
            const double* ag = A + static_cast<int64_t>(c[j]) * T;
            for (int64_t l = 0; l < T; ++l) rr[l] -= ag[l];
          }
        double* __restrict ur = ut.data() + t * P;
        double* __restrict mr = mt.data() + t * P;
        for (int64_t l = 0; l < T; ++l) {
          ur[l] = wui * rr[l];
          mr[l] = wmi * rr[l];
        }
        if (wui == 0.0) continue;
        for (int64_t j = 0; j < k; ++j) {
          double* __restrict zg = slab.at(j, c[j]);
          for (int64_t l = 0; l < T; ++l) zg[l] += ur[l];
        }
      }
      gram_tile(nr, P, xt.data(), ut.data(), a, false);
      gram_tile(nr, P, mt.data(), rt.data(), a + oM, true);
    }
  });
  unpad(T, P, acc.data(), H);
  unpad(T, P, acc.data() + oM, M0);
  mirror_upper(T, M0);
}

}  // namespace pyglmm
