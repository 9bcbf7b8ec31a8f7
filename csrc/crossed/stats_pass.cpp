// The fused once-per-outer-iteration pass: everything the clubbed inner loop
// needs from X, read in a single sweep over the rows.
#include "common/common.hpp"
#include "crossed/kernels.hpp"

namespace pyglmm {
namespace {

// The pass, compiled with and without the categoricals' loops (Cat = r.m > 0),
// so that a dense X pays nothing for them.
template <bool Cat>
void fused_pass(int family, const Rows& r, int64_t Q, const double* y,
                const double* prior, const double* offset, const double* beta,
                const double* b, const double* dbeta, const double* db,
                bool design, double* w, double* G, double* h, double* S,
                double* scalars, int nthreads) {
  // T columns in all: p dense, then pc dummies of m categoricals (types.hpp).
  const int64_t p = r.p, k = r.k, m = Cat ? r.m : 0, T = p + r.pc, P = padded(p), width = T + 2;
  // Block accumulator: [scalars(4) | dense G (P*P, padded) | h (T) | C (pc*T)]
  // where C's row c - p holds G[j][c] (j < p) and G[c][c'] (c' >= c) of dummy c.
  const size_t oG = 4, oh = oG + P * P, oC = oh + T;
  const size_t size = design ? oC + r.pc * T : oG;
  std::vector<double> unused;
  double* table = S;
  if (!design) {  // no per-level sums: an empty slab and a dummy table
    unused.assign(1, 0.0);
    table = unused.data();
  }
  std::vector<double> acc = reduce_blocks(
      r, nthreads, size, design ? width : 0, table, design ? Q : 0, 0, -1,
      [&](int64_t begin, int64_t end, double* a, LevelSlab& slab) {
    // Tile buffers: x and w x of kTile rows, zero-padded to P columns.
    std::vector<double> xt(design ? kTile * P : 0, 0.0), wxt(design ? kTile * P : 0, 0.0);
    double* __restrict hs = design ? a + oh : nullptr;
    double* __restrict C = design ? a + oC : nullptr;  // dummy c's row at C + (c - p) * T
    // A tile is processed in phases (linear predictors, IRLS quantities, then
    // the sums) so that the rows' long dependency chains (dot product, exp,
    // division) overlap instead of running one row after another.
    double zeta[kTile], wt[kTile], zt[kTile];
    for (int64_t t0 = begin; t0 < end; t0 += kTile) {
      const int64_t nr = std::min(kTile, end - t0);
      double sz = 0.0, sd = 0.0, so = 0.0, pearson = 0.0;
      for (int64_t t = 0; t < nr; ++t) {
        const double* __restrict x = r.X + (t0 + t) * p;
        const int32_t* c = r.codes + (t0 + t) * k;
        const int32_t* xc = r.xcat + (t0 + t) * m;
        double e = 0.0, dz = 0.0;
        for (int64_t j = 0; j < p; ++j) {
          e += x[j] * beta[j];
          dz += x[j] * dbeta[j];
        }
        for (int64_t j = 0; j < m; ++j)
          if (xc[j] >= 0) {
            e += beta[xc[j]];
            dz += dbeta[xc[j]];
          }
        for (int64_t j = 0; j < k; ++j) {
          e += b[c[j]];
          dz += db[c[j]];
        }
        const double old = e - dz;
        sz += e * e;
        sd += dz * dz;
        so += old * old;
        zeta[t] = e;
      }
      for (int64_t t = 0; t < nr; ++t) {
        const int64_t i = t0 + t;
        const double pw = prior ? prior[i] : 1.0;
        const Irls q = irls_point(family, zeta[t] + (offset ? offset[i] : 0.0));
        const double res = y[i] - q.mu;
        const double rv = res / q.var;
        pearson += pw * res * rv;
        wt[t] = pw * q.var;
        zt[t] = zeta[t] + rv;
      }
      a[0] += pearson;
      a[1] += sz;
      a[2] += sd;
      a[3] += so;
      if (!design) continue;
      std::copy(wt, wt + nr, w + t0);
      for (int64_t t = 0; t < nr; ++t) {
        const double* __restrict x = r.X + (t0 + t) * p;
        const int32_t* c = r.codes + (t0 + t) * k;
        const int32_t* xc = r.xcat + (t0 + t) * m;
        const double wi = wt[t], zi = zt[t];
        double* __restrict xr = xt.data() + t * P;
        double* __restrict wxr = wxt.data() + t * P;
        for (int64_t j = 0; j < p; ++j) {
          xr[j] = x[j];
          wxr[j] = wi * x[j];
          hs[j] += wxr[j] * zi;
        }
        for (int64_t u = 0; u < m; ++u) {  // the row's dummies: G's rows and columns c
          const int64_t cu = xc[u];
          if (cu < 0) continue;
          double* __restrict Cu = C + (cu - p) * T;
          for (int64_t j = 0; j < p; ++j) Cu[j] += wxr[j];
          for (int64_t v = 0; v < m; ++v)
            if (xc[v] >= cu) Cu[xc[v]] += wi;
          hs[cu] += wi * zi;
        }
        if (wi == 0.0) continue;
        for (int64_t j = 0; j < k; ++j) {
          double* __restrict sg = slab.at(j, c[j]);
          for (int64_t l = 0; l < p; ++l) sg[l] += wxr[l];
          for (int64_t u = 0; u < m; ++u)
            if (xc[u] >= 0) sg[xc[u]] += wi;
          sg[T] += wi;
          sg[T + 1] += wi * zi;
        }
      }
      gram_tile(nr, P, wxt.data(), xt.data(), a + oG, true);
    }
  });
  std::copy(acc.begin(), acc.begin() + 4, scalars);
  if (!design) return;
  for (int64_t j = 0; j < p; ++j)  // the dense block's upper triangle
    for (int64_t l = j; l < p; ++l) G[j * T + l] = acc[oG + j * P + l];
  for (int64_t c = p; c < T; ++c) {  // the dummies' rows of the upper triangle
    const double* Cc = acc.data() + oC + (c - p) * T;
    for (int64_t j = 0; j < p; ++j) G[j * T + c] = Cc[j];
    for (int64_t l = c; l < T; ++l) G[c * T + l] = Cc[l];
  }
  mirror_upper(T, G);
  std::copy(acc.begin() + oh, acc.begin() + oC, h);
}

}  // namespace

void stats_pass(int family, const Rows& r, int64_t Q, const double* y,
                const double* prior, const double* offset, const double* beta,
                const double* b, const double* dbeta, const double* db,
                bool design, double* w, double* G, double* h, double* S,
                double* scalars, int nthreads) {
  (r.m > 0 ? fused_pass<true> : fused_pass<false>)(family, r, Q, y, prior, offset, beta, b,
                                                    dbeta, db, design, w, G, h, S, scalars,
                                                    nthreads);
}

}  // namespace pyglmm
