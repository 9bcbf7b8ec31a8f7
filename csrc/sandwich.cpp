// One pass over X for the sandwich covariances of beta (eq. 24 and the naive
// logistic regression comparison of Section 6).
#include "common.hpp"

namespace pyglmm {

void sandwich_pass(const Rows& r, int64_t Q, const double* A, const double* wu,
                   double scale, const double* wm, double* H, double* ZU,
                   double* M0, int nthreads) {
  const int64_t p = r.p, k = r.k;
  // Accumulator layout: [H (p*p) | M0 (p*p) | ZU (Q*p)].
  const size_t oM = p * p, oZ = 2 * p * p;
  std::vector<double> acc = reduce_blocks(r.n, nthreads, oZ + Q * p, [&](int64_t begin, int64_t end, double* a) {
    std::vector<double> rt(static_cast<size_t>(p)), u(static_cast<size_t>(p));
    for (int64_t i = begin; i < end; ++i) {
      const double wui = scale * wu[i];
      const double wmi = wm ? wm[i] : wui;
      if (wui == 0.0 && wmi == 0.0) continue;
      const double* x = r.X + i * p;
      const int32_t* c = r.codes + i * k;
      for (int64_t l = 0; l < p; ++l) rt[l] = x[l];
      if (A)
        for (int64_t j = 0; j < k; ++j) {
          const double* ag = A + static_cast<int64_t>(c[j]) * p;
          for (int64_t l = 0; l < p; ++l) rt[l] -= ag[l];
        }
      for (int64_t l = 0; l < p; ++l) u[l] = wui * rt[l];
      for (int64_t j = 0; j < p; ++j) {
        double* Hj = a + j * p;
        for (int64_t l = 0; l < p; ++l) Hj[l] += x[j] * u[l];
        const double v = wmi * rt[j];
        double* Mj = a + oM + j * p;
        for (int64_t l = j; l < p; ++l) Mj[l] += v * rt[l];
      }
      for (int64_t j = 0; j < k; ++j) {
        double* zg = a + oZ + static_cast<int64_t>(c[j]) * p;
        for (int64_t l = 0; l < p; ++l) zg[l] += u[l];
      }
    }
  });
  std::copy(acc.begin(), acc.begin() + oM, H);
  std::copy(acc.begin() + oM, acc.begin() + oZ, M0);
  mirror_upper(p, M0);
  std::copy(acc.begin() + oZ, acc.end(), ZU);
}

}  // namespace pyglmm
