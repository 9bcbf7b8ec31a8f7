// The AGQ kernel (kernels.hpp): per-cluster adaptive Gauss-Hermite
// log-likelihood with its exact gradient and Hessian.  Line for line the
// numba twin pyglmm/engines/agq/kernels_numba.py; names follow it (and the
// numpy reference's notation: R = Z Lambda, B, s, M, Hd, Ld, Sd, MM, ...).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "agq/kernels.hpp"
#include "common/common.hpp"

namespace pyglmm {
namespace agq {
namespace {

#include "agq/rows.hpp"

// --- the evaluation --------------------------------------------------------------

struct Setup {  // shared by the threads, read-only
  const Problem& pr;
  int deriv;
  int q, t;
  int64_t p, d, G, F;
  std::vector<int> ta, tb;     // theta's (row, column) in Lambda
  std::vector<double> lam;     // q x q
  std::vector<double> z, logw; // the tensor grid: G x q, G
};

struct Work {  // one thread's scratch, sized once
  std::vector<double> off, R, LM, L2N;
  std::vector<double> B, s, M, Hd, Ld, Sd, D3, E3, SZs2, F3, G3, W3, F4, MM, Ldd, Sdd;
  std::vector<double> V, GK, S0, P1, A, hl2, sv, yv, Abar, W, grad, hess;
  double g[kMaxQ], gn[kMaxQ], vn[kMaxQ], step[kMaxQ], SZ1[kMaxQ], zbar[kMaxQ], gbar[kMaxQ],
      P1Zbar[kMaxQ];
  double H[9], Hn[9], L[9], Li[9], S[9], SZR2[9], SZZ2[9], Zmom[9], GZ[9], PZ[9], inner[9], tmp[9];

  Work(const Setup& su, int64_t nmax) {
    const int64_t q = su.q, d = su.d, G = su.G, e = su.deriv == 2 ? d : 0;
    off.resize(nmax);
    R.resize(nmax * q);
    LM.resize(nmax * 4);
    L2N.resize(su.deriv == 2 ? std::min(nmax * G, kNodeStore) : 0);
    B.resize(d);
    s.resize(d);
    M.resize(q * d);
    Hd.resize(d * q * q);
    Ld.resize(d * q * q);
    Sd.resize(d * q * q);
    D3.resize(q * q * d);
    E3.resize(q * e * e);
    SZs2.resize(q * e);
    F3.resize(q * q * e);
    G3.resize(q * q * q);
    W3.resize(q * q * q);
    F4.resize(q * q * e * e);
    MM.resize(q * e * e);
    Ldd.resize(e * e * q * q);
    Sdd.resize(e * e * q * q);
    V.resize(G * q);
    GK.resize(G * q);
    S0.resize(G);
    P1.resize(G * su.F);
    A.resize(G * d);
    hl2.resize(e * e);
    sv.resize((q + 1) * d);
    yv.resize((q + 1) * d);
    Abar.resize(d);
    W.resize((q + 1) * (q + 1));
    grad.resize(d);
    hess.resize(d * d);
  }
};

// One cluster's evaluation; Q = q, a constant so that the loops over the
// random effects unroll.
template <int Q>
class Cluster {
 public:
  Cluster(const Setup& su, Work& w, int64_t r0, int64_t n, double* v)
      : su_(su), pr_(su.pr), w_(w), r0_(r0), n_(n), v_(v), p_(su.p), d_(su.d) {}

  // Returns (loglik, converged); the gradient and Hessian go to w.grad, w.hess.
  std::pair<double, bool> eval(double* condvar);

 private:
  double sweep_h(const double* v, double* g, double* H) const;
  bool find_mode();
  void row_s(int64_t j, bool total, double* out) const;
  void mode_derivatives();
  void mode_second();
  void hessian(const double* pik);

  const Setup& su_;
  const Problem& pr_;
  Work& w_;
  int64_t r0_, n_;
  double* v_;
  static constexpr int q_ = Q;
  int64_t p_, d_;
};

// sum_j l_j (without constants) - v'v/2 at v; g = R'l1 - v, H = I - R' diag(l2) R.
template <int Q>
double Cluster<Q>::sweep_h(const double* v, double* g, double* H) const {
  const int q = q_;
  double f = 0.0;
  std::fill(g, g + q, 0.0);
  std::fill(H, H + q * q, 0.0);
  for (int64_t j = 0; j < n_; ++j) {
    const double* Rj = &w_.R[j * q];
    double eta = w_.off[j];
    for (int c = 0; c < q; ++c) eta += Rj[c] * v[c];
    const RowD l = row(pr_.family, pr_.dispersion, pr_.y[r0_ + j], pr_.weights[r0_ + j], eta, true, 2);
    f += l.l0;
    for (int c = 0; c < q; ++c) {
      g[c] += l.l1 * Rj[c];
      for (int e = 0; e <= c; ++e) H[c * q + e] -= l.l2 * Rj[c] * Rj[e];
    }
  }
  for (int c = 0; c < q; ++c) {
    f -= 0.5 * v[c] * v[c];
    g[c] -= v[c];
    H[c * q + c] += 1.0;
    for (int e = 0; e < c; ++e) H[e * q + c] = H[c * q + e];
  }
  return f;
}

// Newton with step halving (kernels_numpy.find_mode, on h~ without the rows'
// constants); the mode in v, H(v) in w.H.
template <int Q>
bool Cluster<Q>::find_mode() {
  const int q = q_;
  double* v = v_;
  Work& w = w_;
  for (int c = 0; c < q; ++c)
    if (!std::isfinite(v[c])) v[c] = 0.0;
  double f = sweep_h(v, w.g, w.H);
  for (int it = 0; it < kModeMaxIter; ++it) {
    cholesky(w.H, w.L, q);
    std::copy(w.g, w.g + q, w.step);
    solve_cols(w.L, w.step, q, 1);
    double smax = 0.0, vmax = 0.0;
    bool finite = true;  // a NaN step (H not positive definite to rounding) is no convergence
    for (int c = 0; c < q; ++c) {
      finite = finite && std::isfinite(w.step[c]);
      smax = std::max(smax, std::fabs(w.step[c]));
      vmax = std::max(vmax, std::fabs(v[c]));
    }
    const bool small = finite && smax < kModeTol * (1.0 + vmax);
    const double slack = 1e-12 * std::max(1.0, std::fabs(f));
    bool accepted = false;
    double fn = 0.0;
    for (int h = 0; h < 50; ++h) {
      for (int c = 0; c < q; ++c) w.vn[c] = v[c] + w.step[c];
      fn = sweep_h(w.vn, w.gn, w.Hn);
      if (fn >= f - slack || (small && std::isfinite(fn))) {
        accepted = true;
        break;
      }
      for (int c = 0; c < q; ++c) w.step[c] /= 2;
    }
    if (!accepted) return small;
    std::copy(w.vn, w.vn + q, v);
    std::copy(w.gn, w.gn + q, w.g);
    std::copy(w.Hn, w.Hn + q * q, w.H);
    f = fn;
    if (small) return true;
  }
  return false;
}

// The row's derivatives of eta at the mode: B = d eta / d psi at fixed v, and
// if total the total ones s = B + M'R_j.
template <int Q>
void Cluster<Q>::row_s(int64_t j, bool total, double* out) const {
  const int64_t r = r0_ + j, p = p_;
  const double* x = pr_.X + r * p;
  const double* z = pr_.Z + r * q_;
  const double* Rj = &w_.R[j * q_];
  for (int64_t i = 0; i < p; ++i) out[i] = x[i];
  for (int u = 0; u < su_.t; ++u) out[p + u] = z[su_.ta[u]] * v_[su_.tb[u]];
  if (total)
    for (int c = 0; c < q_; ++c) {
      const double* Mc = &w_.M[c * d_];
      for (int64_t i = 0; i < d_; ++i) out[i] += Mc[i] * Rj[c];
    }
}

template <int Q>
std::pair<double, bool> Cluster<Q>::eval(double* condvar) {
  const Problem& pr = pr_;
  Work& w = w_;
  const int q = q_;
  const int64_t p = p_, d = d_, G = su_.G, F = su_.F;
  const int deriv = su_.deriv;
  const double* lam = su_.lam.data();
  double c0 = 0.0;
  for (int64_t j = 0; j < n_; ++j) {
    const int64_t r = r0_ + j;
    double eta = pr.offset[r];
    for (int64_t i = 0; i < p; ++i) eta += pr.X[r * p + i] * pr.beta[i];
    w.off[j] = eta;
    for (int c = 0; c < q; ++c) {
      double acc = 0.0;
      for (int e = c; e < q; ++e) acc += pr.Z[r * q + e] * lam[e * q + c];
      w.R[j * q + c] = acc;
    }
    c0 += row_const(pr.family, pr.dispersion, pr.y[r], pr.weights[r]);
  }
  const bool converged = find_mode();
  const double* v = v_;
  cholesky(w.H, w.L, q);
  lower_inverse(w.L, w.Li, q);
  for (int i = 0; i < q; ++i)
    for (int j = 0; j < q; ++j) {
      w.S[i * q + j] = w.Li[j * q + i];
      double acc = 0.0;
      for (int c = 0; c < q; ++c) acc += w.Li[c * q + i] * w.Li[c * q + j];
      condvar[i * q + j] = acc;
    }
  if (deriv >= 1) mode_derivatives();
  // nodes v_k = v + S z_k: sums over rows per node
  const double* z = su_.z.data();
  for (int64_t k = 0; k < G; ++k) {
    w.S0[k] = 0.0;
    for (int c = 0; c < q; ++c) {
      double acc = v[c];
      for (int e = 0; e < q; ++e) acc += w.S[c * q + e] * z[k * q + e];
      w.V[k * q + c] = acc;
    }
  }
  std::fill(w.P1.begin(), w.P1.end(), 0.0);
  const int64_t stored = std::min<int64_t>(n_, static_cast<int64_t>(w.L2N.size()) / G);
  for (int64_t j = 0; j < n_; ++j) {
    const int64_t r = r0_ + j;
    const double* Rj = &w.R[j * q];
    const double* x = pr.X + r * p;
    const double* zr = pr.Z + r * q;
    const double yr = pr.y[r], ar = pr.weights[r];
    for (int64_t k = 0; k < G; ++k) {
      double eta = w.off[j];
      for (int c = 0; c < q; ++c) eta += Rj[c] * w.V[k * q + c];
      const RowD l = row(pr.family, pr.dispersion, yr, ar, eta, true, 2 * deriv);
      w.S0[k] += l.l0;
      if (deriv >= 1) {
        double* P = &w.P1[k * F];
        for (int64_t i = 0; i < p; ++i) P[i] += l.l1 * x[i];
        for (int e = 0; e < q; ++e) P[p + e] += l.l1 * zr[e];
        if (j < stored) w.L2N[j * G + k] = l.l2;
      }
    }
  }
  double amax = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < G; ++k) {
    double zz = 0.0, vv = 0.0;
    for (int c = 0; c < q; ++c) {
      zz += z[k * q + c] * z[k * q + c];
      vv += w.V[k * q + c] * w.V[k * q + c];
    }
    w.S0[k] = su_.logw[k] + 0.5 * zz + w.S0[k] - 0.5 * vv;
    amax = std::max(amax, w.S0[k]);
  }
  double total = 0.0;
  for (int64_t k = 0; k < G; ++k) {
    w.S0[k] = std::exp(w.S0[k] - amax);
    total += w.S0[k];
  }
  double loglik = c0 + amax + std::log(total);
  for (int c = 0; c < q; ++c) loglik -= std::log(w.L[c * q + c]);
  if (deriv == 0) return {loglik, converged};
  double* pik = w.S0.data();
  for (int64_t k = 0; k < G; ++k) pik[k] /= total;
  // gradient: d log|S| + sum_k pi_k A_k, A_k = base_k + g_k . delta_k
  const int64_t qq = q * q;
  for (int64_t i = 0; i < d; ++i) {
    double acc = 0.0;
    for (int c = 0; c < q; ++c) acc -= w.Ld[i * qq + c * q + c] / w.L[c * q + c];
    w.grad[i] = acc;
  }
  for (int64_t k = 0; k < G; ++k) {
    const double* P = &w.P1[k * F];
    const double* Vk = &w.V[k * q];
    double* gk = &w.GK[k * q];
    for (int c = 0; c < q; ++c) {  // g_k = R'l1 - v_k, the gradient of h~ at the node
      double acc = -Vk[c];
      for (int e = c; e < q; ++e) acc += lam[e * q + c] * P[p + e];
      gk[c] = acc;
    }
    for (int64_t i = 0; i < d; ++i) {
      double acc = i < p ? P[i] : P[p + su_.ta[i - p]] * Vk[su_.tb[i - p]];
      for (int c = 0; c < q; ++c) {
        double delta = w.M[c * d + i];  // delta[c, i] = M[c, i] + (Sd_i z_k)[c]
        for (int b = 0; b < q; ++b) delta += w.Sd[i * qq + c * q + b] * z[k * q + b];
        acc += gk[c] * delta;
      }
      w.A[k * d + i] = acc;
      w.grad[i] += pik[k] * acc;
    }
  }
  if (deriv == 2) hessian(pik);
  return {loglik, converged};
}

#include "agq/derivatives.hpp"

}  // namespace

std::vector<int64_t> chunk_bounds(const int64_t* starts, int64_t m) {
  std::vector<int64_t> out{0};
  int64_t work = 0;
  for (int64_t c = 0; c < m; ++c) {
    work += starts[c + 1] - starts[c] + kClusterWork;
    if (work >= kChunkWork || c == m - 1) {
      out.push_back(c + 1);
      work = 0;
    }
  }
  return out;
}

int64_t cluster_eval(const Problem& pr, int deriv, const Outputs& out, int nthreads) {
  Setup su{pr, deriv, static_cast<int>(pr.q), static_cast<int>(pr.q * (pr.q + 1) / 2), pr.p, 0, 1, pr.p + pr.q,
           {}, {}, {}, {}, {}};
  const int q = su.q;
  su.d = su.p + su.t;
  for (int a = 0; a < q; ++a)
    for (int b = 0; b <= a; ++b) {
      su.ta.push_back(a);
      su.tb.push_back(b);
    }
  su.lam.assign(static_cast<size_t>(q * q), 0.0);
  for (int u = 0; u < su.t; ++u) su.lam[su.ta[u] * q + su.tb[u]] = pr.theta[u];
  for (int c = 0; c < q; ++c) su.G *= pr.K;
  su.z.resize(static_cast<size_t>(su.G * q));
  su.logw.assign(static_cast<size_t>(su.G), 0.0);
  for (int64_t k = 0; k < su.G; ++k) {  // node k: digit c (base K, first one most significant)
    int64_t rest = k;
    for (int c = q - 1; c >= 0; --c) {
      const int64_t i = rest % pr.K;
      rest /= pr.K;
      su.z[k * q + c] = pr.nodes[i];
      su.logw[k] += std::log(pr.gh_weights[i]);
    }
  }
  const std::vector<int64_t> bounds = chunk_bounds(pr.starts, pr.m);
  const int64_t nch = static_cast<int64_t>(bounds.size()) - 1, d = su.d;
  int64_t nmax = 0;
  for (int64_t c = 0; c < pr.m; ++c) nmax = std::max(nmax, pr.starts[c + 1] - pr.starts[c]);
  std::vector<double> gpart(static_cast<size_t>(deriv >= 1 ? nch * d : 0));
  std::vector<double> hpart(static_cast<size_t>(deriv == 2 ? nch * d * d : 0));
  std::atomic<int64_t> next{0}, failed{0};
  const int64_t nb = std::max<int64_t>(1, std::min<int64_t>(nthreads, nch));
  run_blocks(nb, nb, [&](int64_t, int64_t, int64_t) {
    std::vector<Work> work;  // made when this thread gets its first chunk
    int64_t nf = 0;
    for (int64_t ch; (ch = next.fetch_add(1)) < nch;) {
      if (work.empty()) work.emplace_back(su, nmax);
      Work& w = work.front();
      for (int64_t c = bounds[ch]; c < bounds[ch + 1]; ++c) {
        const int64_t r0 = pr.starts[c], n = pr.starts[c + 1] - r0;
        double* v = out.modes + c * q;
        double* cv = out.condvar + c * q * q;
        const auto res = q == 1   ? Cluster<1>(su, w, r0, n, v).eval(cv)
                         : q == 2 ? Cluster<2>(su, w, r0, n, v).eval(cv)
                                  : Cluster<3>(su, w, r0, n, v).eval(cv);
        out.loglik[c] = res.first;
        nf += !res.second;
        if (deriv >= 1)
          for (int64_t i = 0; i < d; ++i) gpart[ch * d + i] += w.grad[i];
        if (deriv == 2)
          for (int64_t i = 0; i < d * d; ++i) hpart[ch * d * d + i] += w.hess[i];
      }
    }
    failed += nf;
  });
  if (deriv >= 1) {
    std::fill(out.grad, out.grad + d, 0.0);
    for (int64_t ch = 0; ch < nch; ++ch)
      for (int64_t i = 0; i < d; ++i) out.grad[i] += gpart[ch * d + i];
  }
  if (deriv == 2) {
    std::fill(out.hess, out.hess + d * d, 0.0);
    for (int64_t ch = 0; ch < nch; ++ch)
      for (int64_t i = 0; i < d * d; ++i) out.hess[i] += hpart[ch * d * d + i];
  }
  return failed.load();
}

}  // namespace agq
}  // namespace pyglmm
