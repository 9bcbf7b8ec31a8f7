// pyglmm kernels: plain C++17, no Python types.
//
// Conventions shared by every kernel (and by the numba and numpy twins):
//   * X is n x p, row-major float64; codes is n x k, row-major int32 holding
//     *global* level ids: factor j's levels occupy [offsets[j], offsets[j+1])
//     of one concatenated level space of size Q (at most 2^31: build_design in
//     pyglmm/data/design.py refuses more).  Only linear_predictor accepts a
//     negative code (-1, an unseen level), which contributes nothing.
//   * The kernels trust their arguments; the bindings (csrc/bindings.cpp)
//     check them all before a kernel runs, raising ValueError: dtypes, shapes,
//     C-contiguity and writeable outputs; every code within its factor's
//     levels (with offsets: [offsets[j], offsets[j+1]); without: within the
//     per-level arrays' Q rows, the columns' ranges in column order without
//     overlap); offsets from 0, non-decreasing, to Q; group_cross_sums'
//     factor and [lo, lo + q) within the table; family ids below kNumFamilies;
//     nthreads >= 1; finite scale, tol >= 0, max_iter >= 0; the divisors D,
//     lam and chol's diagonal positive.  Other values (NaN in X, say) are the
//     callers' to check.
//   * Per-level arrays (b, Wq, tq, D, counts) have length Q; per-level
//     matrices (s, A, ZU) are Q x p row-major.
//   * linear_predictor, stats_pass and sandwich_pass also take categorical
//     fixed effects as codes (Rows::xcat, types.hpp): their fixed-effect
//     columns are then T = p + pc (X's p dense ones, then the dummies), and
//     beta, G, h, A, H, ZU, M0 and the level table S have T (+ 2) columns.
//   * Optional row arrays (prior weights, offset, ...) are passed as nullptr.
//   * Outputs are preallocated by the caller; kernels allocate per call
//     (thread-private accumulators), never per row.
//   * Threads split rows into contiguous blocks fixed by (n, nthreads);
//     private accumulators are reduced in block order, so results are
//     identical for a given thread count.
#pragma once

#include <cstdint>

#include "common/types.hpp"

namespace pyglmm {

// eta_i = offset_i + x_i' beta + sum_j b[codes_ij]   (unseen level -> 0)
void linear_predictor(const Rows& r, const double* beta, const double* b,
                      const double* offset, double* eta, int nthreads);

// out[i, :] = X[order[i], :] (n rows of X, row_bytes bytes each, gathered into out).
void take_rows(const void* X, size_t row_bytes, const int64_t* order, int64_t n, void* out,
               int nthreads);

// order = the stable permutation that sorts the rows by their level of factor
// `factor` (codes[i, factor] in [lo, lo + q)): a counting sort, O(n + q).
void order_rows(const int32_t* codes, int64_t n, int64_t k, int64_t factor, int64_t lo, int64_t q,
                int64_t* order);

// mu = h(eta); w = prior * V(mu) (unscaled by the dispersion);
// z = (eta - offset) + (y - mu) / V(mu): the working response of the
// offset-free linear predictor zeta.  Returns the deviance sum_i prior_i d(y_i, mu_i)
// (unit_deviance in common.hpp).
double irls_quantities(int family, int64_t n, const double* eta, const double* y,
                       const double* prior, const double* offset, double* mu,
                       double* w, double* z, int nthreads);

// One fused pass over the rows at the current (beta, b):
//   zeta = X beta + Z b, eta = zeta + offset, IRLS quantities, and
//   scalars = [pearson, sum zeta^2, sum dzeta^2, sum (zeta - dzeta)^2]
//   with dzeta = X dbeta + Z db (the change since the previous pass).
// With design = true it also writes w and accumulates G = X'WX, h = X'Wz and
// the per-level sums S = Z'W [X, 1, z] (Q x (p + 2): Z'WX, Z'w, Z'Wz).
void stats_pass(int family, const Rows& r, int64_t Q, const double* y,
                const double* prior, const double* offset, const double* beta,
                const double* b, const double* dbeta, const double* db,
                bool design, double* w, double* G, double* h, double* S,
                double* scalars, int nthreads);

// Weighted group sums, over factor `factor`'s levels, of the implicit n x m
// block sum_{j != factor} Z_j T (T = table, Q x m):
//   out[g - lo, :] = scale * sum_{i: codes_i,factor = g} w_i sum_{j != factor} T[codes_ij, :]
void group_cross_sums(const Rows& r, int64_t factor, int64_t lo, int64_t q,
                      const double* w, double scale, const double* table,
                      int64_t m, double* out, int nthreads);

// Clubbed backfitting (Ghosh, Hastie & Owen 2022, eqs. 35 and 37) for fixed
// weights, run to tolerance.  See backfit.cpp for the algebra.
struct ClubResult {
  int64_t sweeps;
  double rel;
};
ClubResult club_backfit(const Rows& r, const int64_t* offsets, const double* w,
                        double scale, const double* h, const double* s,
                        const double* D, const double* tq, const double* chol,
                        const double* XtX, const double* counts, double* beta,
                        double* b, double tol, int64_t max_iter, int nthreads);

// One pass for sandwich covariances: with r_i = x_i - sum_j A[codes_ij]
// (r_i = x_i when A is null) and u_i = scale * wu_i * r_i,
//   H = sum x_i u_i',  ZU[g] = sum_{i in g} u_i,  M0 = sum wm_i r_i r_i'
// where wm defaults to scale * wu.
void sandwich_pass(const Rows& r, int64_t Q, const double* A, const double* wu,
                   double scale, const double* wm, double* H, double* ZU,
                   double* M0, int nthreads);

// Schall's update with the diagonal trace approximation (eqs. 14 and 25):
//   nu_j = lam_j sum_{g in j} 1 / (Wq_g + lam_j),
//   sigma2_j = sum_{g in j} b_g^2 / (q_j - nu_j),
// with q_j - nu_j = sum_g Wq_g / (Wq_g + lam_j) summed directly (sigma2_j = 0
// when it is 0: a factor whose rows all weigh nothing).
void schall_update(int64_t k, const int64_t* offsets, const double* Wq,
                   const double* b, const double* lam, double* nu,
                   double* sigma2);

// One block step of the smoother of X's columns on the random effects (the
// standard errors, eq. 24): for factor f's levels g in [lo, hi) = offsets[f..f+1],
//   new_g = (s_g - sum_{i: codes_if = g} w_i sum_{j != f} A[codes_ij]) / D_g,
// centred when `centre` (X holds an intercept) to sum_g new_g = 0 along 1/D:
//   new_g -= (1/D_g) (sum_h new_h) / (sum_h 1/D_h);
// then num = sum_g counts_g |A_g - new_g|^2, den = sum_g counts_g |A_g|^2, and
// A_g = new_g.  A, s are Q x p (p = r.p); work is scratch of at least hi - lo rows.
struct SmoothResult {
  double num, den;
};
SmoothResult smooth_step(const Rows& r, const int64_t* offsets, int64_t factor,
                         const double* w, const double* s, const double* D,
                         const double* counts, bool centre, double* A, double* work,
                         int nthreads);

// The clubbed inner loop's per-level inputs from the fused pass's level table
// S = Z'W [X, 1, z] (Q x (p + 2)) and lam_j per factor: s = S[:, :p], Wq = S[:, p],
// tq = S[:, p + 1] (contiguous copies), D_g = Wq_g + lam_j for g in factor j, and
//   R_j = sum_{g in factor j} s_g s_g' / D_g   (k x p x p),
// in one pass over S, threaded over blocks of each factor's levels.
void club_prepare(int64_t k, int64_t Q, int64_t p, const int64_t* offsets, const double* S,
                  const double* lam, double* s, double* Wq, double* tq, double* D, double* R,
                  int nthreads);

}  // namespace pyglmm
