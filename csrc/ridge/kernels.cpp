// See kernels.hpp.
#include "ridge/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/common.hpp"

namespace pyglmm {
namespace ridge {

namespace {

// Groups [0, m) in nb contiguous blocks, one thread each.
template <class F>
void over_groups(int64_t m, int nthreads, F&& fn) {
  const int64_t nb = std::max<int64_t>(1, std::min<int64_t>(nthreads, m / 64));
  run_blocks(m, nb, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(i);
  });
}

}  // namespace

void group_reductions(int64_t m, const int64_t* offsets, int64_t q, int64_t p, const double* Z,
                      const double* D, const double* y, double* ZtZ, double* ZtD, double* Zty,
                      int nthreads) {
  over_groups(m, nthreads, [&](int64_t i) {
    double* zz = ZtZ + i * q * q;
    double* zd = ZtD + i * q * p;
    double* zy = Zty + i * q;
    std::fill(zz, zz + q * q, 0.0);
    std::fill(zd, zd + q * p, 0.0);
    std::fill(zy, zy + q, 0.0);
    for (int64_t r = offsets[i]; r < offsets[i + 1]; ++r) {
      const double* z = Z + r * q;
      const double* d = D + r * p;
      for (int64_t a = 0; a < q; ++a) {
        const double za = z[a];
        zy[a] += za * y[r];
        for (int64_t b = 0; b < q; ++b) zz[a * q + b] += za * z[b];
        double* row = zd + a * p;
        for (int64_t c = 0; c < p; ++c) row[c] += za * d[c];
      }
    }
  });
}

void batched_spd_solve(int64_t m, int64_t q, int64_t k, const double* M, const double* R,
                       double* X, double* logdet, int nthreads) {
  over_groups(m, nthreads, [&](int64_t i) {
    thread_local std::vector<double> L;
    L.assign(static_cast<size_t>(q * q), 0.0);
    const double* Mi = M + i * q * q;
    double* Xi = X + i * q * k;
    const double* Ri = R + i * q * k;
    double ld = 0.0;
    for (int64_t j = 0; j < q; ++j) {
      double s = Mi[j * q + j];
      for (int64_t c = 0; c < j; ++c) s -= L[j * q + c] * L[j * q + c];
      if (!(s > 0.0)) {
        logdet[i] = std::numeric_limits<double>::quiet_NaN();
        std::fill(Xi, Xi + q * k, 0.0);
        return;
      }
      L[j * q + j] = std::sqrt(s);
      ld += std::log(s);
      for (int64_t r = j + 1; r < q; ++r) {
        double t = Mi[r * q + j];
        for (int64_t c = 0; c < j; ++c) t -= L[r * q + c] * L[j * q + c];
        L[r * q + j] = t / L[j * q + j];
      }
    }
    logdet[i] = ld;
    for (int64_t col = 0; col < k; ++col) {
      for (int64_t j = 0; j < q; ++j) {  // L w = r
        double t = Ri[j * k + col];
        for (int64_t c = 0; c < j; ++c) t -= L[j * q + c] * Xi[c * k + col];
        Xi[j * k + col] = t / L[j * q + j];
      }
      for (int64_t j = q - 1; j >= 0; --j) {  // L' x = w
        double t = Xi[j * k + col];
        for (int64_t c = j + 1; c < q; ++c) t -= L[c * q + j] * Xi[c * k + col];
        Xi[j * k + col] = t / L[j * q + j];
      }
    }
  });
}

}  // namespace ridge
}  // namespace pyglmm
