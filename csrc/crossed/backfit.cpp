// Backfitting kernels: cross group sums, the clubbed inner loop and Schall's
// variance update.
//
// Clubbed step for factor k with the others' effects b_j (j != k) held fixed
// (eqs. 35/37 of Ghosh, Hastie & Owen 2022) in the X-free form: with
//   u_k = Z_k'W(z - sum_{j!=k} Z_j b_j) = tq_k - group_cross_sums(b),
//   D_k = Z_k'w + 1/sigma_k^2,
//   A_k = X'WX - s_k' D_k^{-1} s_k          (Cholesky factor given),
// the joint minimiser over (beta, b_k) of the penalised weighted least
// squares objective is
//   beta = A_k^{-1} (h - sum_{j!=k} s_j' b_j - s_k' D_k^{-1} u_k),
//   b_k  = D_k^{-1} (u_k - s_k beta).
// A sweep runs the step for every factor in turn; it stops when
//   (dbeta' X'X dbeta + sum_g n_g db_g^2) / (beta' X'X beta + sum_g n_g b_g^2)
// (the change of the linear predictor's components, old values in the
// denominator) is at most tol.
#include "common/common.hpp"
#include "crossed/kernels.hpp"

namespace pyglmm {

void group_cross_sums(const Rows& r, int64_t factor, int64_t lo, int64_t q,
                      const double* w, double scale, const double* table,
                      int64_t m, double* out, int nthreads) {
  const int64_t k = r.k;
  reduce_blocks(r, nthreads, 0, m, out, q, lo, factor,
                [&](int64_t begin, int64_t end, double*, LevelSlab& slab) {
    // One column (the inner loop's case): a run of rows with the same level
    // (rows sorted by this factor) is summed in a register and added to the
    // slab once.
    if (m == 1) {
      int64_t current = -1;
      double run = 0.0;
      for (int64_t i = begin; i < end; ++i) {
        const double wi = w[i];
        if (wi == 0.0) continue;
        const int32_t* c = r.codes + i * k;
        double v = 0.0;
        for (int64_t j = 0; j < k; ++j)
          if (j != factor) v += table[c[j]];
        if (c[factor] != current) {
          if (current >= 0) *slab.at(factor, current) += run;
          run = 0.0;
          current = c[factor];
        }
        run += wi * v;
      }
      if (current >= 0) *slab.at(factor, current) += run;
      return;
    }
    // Several columns: straight into the level's accumulator (it stays in L1
    // for a run of rows with the same level).
    for (int64_t i = begin; i < end; ++i) {
      const double wi = w[i];
      if (wi == 0.0) continue;
      const int32_t* c = r.codes + i * k;
      double* __restrict o = slab.at(factor, c[factor]);
      for (int64_t j = 0; j < k; ++j) {
        if (j == factor) continue;
        const double* __restrict t = table + static_cast<int64_t>(c[j]) * m;
        for (int64_t l = 0; l < m; ++l) o[l] += wi * t[l];
      }
    }
  });
  if (scale != 1.0)
    for (int64_t i = 0; i < q * m; ++i) out[i] *= scale;
}

namespace {

// Solves L L' x = rhs in place for a row-major lower-triangular L.
void chol_solve(int64_t p, const double* L, double* x) {
  for (int64_t i = 0; i < p; ++i) {
    double v = x[i];
    for (int64_t j = 0; j < i; ++j) v -= L[i * p + j] * x[j];
    x[i] = v / L[i * p + i];
  }
  for (int64_t i = p - 1; i >= 0; --i) {
    double v = x[i];
    for (int64_t j = i + 1; j < p; ++j) v -= L[j * p + i] * x[j];
    x[i] = v / L[i * p + i];
  }
}

// x'y in four partial sums added in a fixed order: four independent chains
// instead of one (the per-level fits s_g'beta are otherwise latency bound).
double dot(int64_t p, const double* __restrict x, const double* __restrict y) {
  double a[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t l = 0;
  for (; l + 4 <= p; l += 4)
    for (int u = 0; u < 4; ++u) a[u] += x[l + u] * y[l + u];
  for (int u = 0; l < p; ++l, ++u) a[u] += x[l] * y[l];
  return (a[0] + a[1]) + (a[2] + a[3]);
}

double quad_form(int64_t p, const double* M, const double* v) {
  double out = 0.0;
  for (int64_t i = 0; i < p; ++i) {
    double row = 0.0;
    for (int64_t j = 0; j < p; ++j) row += M[i * p + j] * v[j];
    out += v[i] * row;
  }
  return out;
}

// Sums over the levels [lo, hi) in blocks of levels (threads): fn(begin, end,
// part) adds levels [begin, end)'s terms to `part` (width doubles, zeroed), and
// out = the blocks' parts summed in block order.
template <class F>
void level_sums(int64_t lo, int64_t hi, int64_t width, int nthreads, std::vector<double>& parts,
                double* out, F&& fn) {
  const int64_t nb = n_blocks(hi - lo, nthreads);
  parts.assign(static_cast<size_t>(nb * width), 0.0);
  run_blocks(hi - lo, nb, [&](int64_t t, int64_t begin, int64_t end) {
    fn(lo + begin, lo + end, parts.data() + t * width);
  });
  std::fill(out, out + width, 0.0);
  for (int64_t t = 0; t < nb; ++t)
    for (int64_t l = 0; l < width; ++l) out[l] += parts[t * width + l];
}

}  // namespace

ClubResult club_backfit(const Rows& r, const int64_t* offsets, const double* w,
                        double scale, const double* h, const double* s,
                        const double* D, const double* tq, const double* chol,
                        const double* XtX, const double* counts, double* beta,
                        double* b, double tol, int64_t max_iter, int nthreads) {
  const int64_t p = r.p, k = r.k;
  int64_t qmax = 0;
  for (int64_t j = 0; j < k; ++j) qmax = std::max(qmax, offsets[j + 1] - offsets[j]);
  std::vector<double> u(static_cast<size_t>(qmax)), v(static_cast<size_t>(k * p), 0.0);
  std::vector<double> rhs(static_cast<size_t>(p)), beta0(static_cast<size_t>(p));
  std::vector<double> parts, sums(static_cast<size_t>(p + 2));
  // v_j = s_j' b_j, kept current as b_j changes.
  for (int64_t j = 0; j < k; ++j)
    level_sums(offsets[j], offsets[j + 1], p, nthreads, parts, v.data() + j * p,
               [&](int64_t begin, int64_t end, double* vj) {
      for (int64_t g = begin; g < end; ++g)
        for (int64_t l = 0; l < p; ++l) vj[l] += s[g * p + l] * b[g];
    });
  ClubResult res{0, 0.0};
  while (res.sweeps < max_iter) {
    ++res.sweeps;
    std::copy(beta, beta + p, beta0.begin());
    double num_b = 0.0, den_b = 0.0;
    for (int64_t f = 0; f < k; ++f) {
      const int64_t lo = offsets[f], hi = offsets[f + 1], q = hi - lo;
      group_cross_sums(r, f, lo, q, w, scale, b, 1, u.data(), nthreads);
      // u_g = tq_g - (cross sums); sums = s_f' D_f^-1 u
      level_sums(lo, hi, p, nthreads, parts, sums.data(), [&](int64_t begin, int64_t end, double* su) {
        for (int64_t g = begin; g < end; ++g) {
          double& ug = u[g - lo];
          ug = tq[g] - ug;
          const double ratio = ug / D[g];
          for (int64_t l = 0; l < p; ++l) su[l] += s[g * p + l] * ratio;
        }
      });
      for (int64_t l = 0; l < p; ++l) {
        double val = h[l];
        for (int64_t j = 0; j < k; ++j)
          if (j != f) val -= v[j * p + l];
        rhs[l] = val - sums[l];
      }
      chol_solve(p, chol + f * p * p, rhs.data());
      std::copy(rhs.begin(), rhs.end(), beta);
      // b_g = D_g^-1 (u_g - s_g'beta); sums = [v_f = s_f' b_f, change and size norms]
      level_sums(lo, hi, p + 2, nthreads, parts, sums.data(), [&](int64_t begin, int64_t end, double* sv) {
        for (int64_t g = begin; g < end; ++g) {
          const double* sg = s + g * p;
          const double bn = (u[g - lo] - dot(p, sg, beta)) / D[g];
          const double d = bn - b[g];
          sv[p] += counts[g] * d * d;
          sv[p + 1] += counts[g] * b[g] * b[g];
          b[g] = bn;
          for (int64_t l = 0; l < p; ++l) sv[l] += sg[l] * bn;
        }
      });
      std::copy(sums.begin(), sums.begin() + p, v.begin() + f * p);
      num_b += sums[p];
      den_b += sums[p + 1];
    }
    for (int64_t l = 0; l < p; ++l) rhs[l] = beta[l] - beta0[l];
    const double num = quad_form(p, XtX, rhs.data()) + num_b;
    const double den = quad_form(p, XtX, beta0.data()) + den_b;
    res.rel = den > 0.0 ? num / den : (num > 0.0 ? INFINITY : 0.0);
    if (res.rel <= tol) break;
  }
  return res;
}

void schall_update(int64_t k, const int64_t* offsets, const double* Wq,
                   const double* b, const double* lam, double* nu,
                   double* sigma2) {
  for (int64_t j = 0; j < k; ++j) {
    // q_j - nu_j = sum_g Wq_g / (Wq_g + lam_j), summed directly: no cancellation
    // when sigma2_j -> 0 (lam_j -> infinity).
    double df = 0.0, ss = 0.0;
    for (int64_t g = offsets[j]; g < offsets[j + 1]; ++g) {
      df += Wq[g] / (Wq[g] + lam[j]);
      ss += b[g] * b[g];
    }
    nu[j] = static_cast<double>(offsets[j + 1] - offsets[j]) - df;
    sigma2[j] = df > 0.0 ? ss / df : 0.0;
  }
}

}  // namespace pyglmm
