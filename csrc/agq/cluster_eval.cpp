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

constexpr double kLog2Pi = 1.8378770664093453;
constexpr int64_t kNodeStore = int64_t{1} << 18;  // l'' kept per cluster (rows x nodes); beyond: recomputed

inline double log_gamma(double x) {  // lgamma without the global signgam (thread safe)
#if defined(__GLIBC__) || defined(__APPLE__)
  int sign;
  return ::lgamma_r(x, &sign);
#else
  return std::lgamma(x);
#endif
}

struct RowD {
  double l0 = 0, l1 = 0, l2 = 0, l3 = 0, l4 = 0;
};

// log(1 + e) for e in [0, 1], to a few ulps: the classic log(u) e / (u - 1),
// u = 1 + e (glibc's log1p costs three logs' time; this is one log and a division).
inline double log1p_unit(double e) {
  const double u = 1.0 + e;
  return u == 1.0 ? e : std::log(u) * (e / (u - 1.0));
}

// l_j without its constant (0 unless value) and its derivatives in eta up to
// order (at least 2 when any): kernels_numpy.row_terms, stable forms.
inline RowD row(int family, double disp, double y, double a, double eta, bool value, int order) {
  RowD r;
  if (family == BINOMIAL) {
    const double e = std::exp(-std::fabs(eta));
    if (value) r.l0 = a * (y * eta - std::max(eta, 0.0) - log1p_unit(e));
    if (order >= 1) {
      const double inv = 1.0 / (1.0 + e);
      const double mu = eta >= 0 ? inv : e * inv;
      r.l1 = a * (y - mu);
      const double v = e * inv * inv;
      r.l2 = -a * v;
      r.l3 = -a * v * (1.0 - 2.0 * mu);
      r.l4 = -a * v * (1.0 - 6.0 * v);
    }
  } else if (family == POISSON) {
    const double mu = std::exp(eta);
    r.l0 = a * (y * eta - mu);
    r.l1 = a * (y - mu);
    r.l2 = r.l3 = r.l4 = -a * mu;
  } else {
    const double res = y - eta;
    r.l0 = -0.5 * a * res * res / disp;
    r.l1 = a * res / disp;
    r.l2 = -a / disp;
  }
  return r;
}

inline double row_const(int family, double disp, double y, double a) {
  if (family == BINOMIAL) {
    const double k = a * y;
    return log_gamma(a + 1.0) - log_gamma(k + 1.0) - log_gamma(a - k + 1.0);
  }
  if (family == POISSON) return -a * log_gamma(y + 1.0);
  return -0.5 * (kLog2Pi + std::log(disp / a));
}

// --- small dense algebra (q <= 3, row-major q x q) -------------------------------

void cholesky(const double* H, double* L, int q) {
  for (int i = 0; i < q; ++i) {
    for (int j = 0; j <= i; ++j) {
      double s = H[i * q + j];
      for (int k = 0; k < j; ++k) s -= L[i * q + k] * L[j * q + k];
      if (i == j)
        L[i * q + i] = s > 0 ? std::sqrt(s) : std::numeric_limits<double>::quiet_NaN();
      else
        L[i * q + j] = s / L[j * q + j];
    }
    for (int j = i + 1; j < q; ++j) L[i * q + j] = 0.0;
  }
}

void lower_inverse(const double* L, double* Li, int q) {
  for (int j = 0; j < q; ++j)
    for (int i = 0; i < q; ++i) {
      if (i < j) {
        Li[i * q + j] = 0.0;
      } else if (i == j) {
        Li[i * q + i] = 1.0 / L[i * q + i];
      } else {
        double s = 0.0;
        for (int k = j; k < i; ++k) s += L[i * q + k] * Li[k * q + j];
        Li[i * q + j] = -s / L[i * q + i];
      }
    }
}

// B (q x ncol) <- (L L')^-1 B.
void solve_cols(const double* L, double* B, int q, int64_t ncol) {
  for (int64_t c = 0; c < ncol; ++c) {
    for (int i = 0; i < q; ++i) {
      double s = B[i * ncol + c];
      for (int k = 0; k < i; ++k) s -= L[i * q + k] * B[k * ncol + c];
      B[i * ncol + c] = s / L[i * q + i];
    }
    for (int i = q - 1; i >= 0; --i) {
      double s = B[i * ncol + c];
      for (int k = i + 1; k < q; ++k) s -= L[k * q + i] * B[k * ncol + c];
      B[i * ncol + c] = s / L[i * q + i];
    }
  }
}

// out = L Phi(Li A Li'): the Cholesky factor's derivative along dH = A.
void chol_derivative(const double* L, const double* Li, const double* A, double* out, int q) {
  double t[kMaxQ * kMaxQ];
  for (int i = 0; i < q; ++i)
    for (int j = 0; j < q; ++j) {
      double s = 0.0;
      for (int k = 0; k < q; ++k)
        for (int m = 0; m < q; ++m) s += Li[i * q + k] * A[k * q + m] * Li[j * q + m];
      t[i * q + j] = j < i ? s : (j == i ? 0.5 * s : 0.0);
    }
  for (int i = 0; i < q; ++i)
    for (int j = 0; j < q; ++j) {
      double s = 0.0;
      for (int k = 0; k < q; ++k) s += L[i * q + k] * t[k * q + j];
      out[i * q + j] = s;
    }
}

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
    for (int c = 0; c < q; ++c) {
      smax = std::max(smax, std::fabs(w.step[c]));
      vmax = std::max(vmax, std::fabs(v[c]));
    }
    const bool small = smax < kModeTol * (1.0 + vmax);
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

// M = dv/dpsi, Hd = dH/dpsi, Ld (Cholesky factor's), Sd (S's); with deriv 2 mode_second.
template <int Q>
void Cluster<Q>::mode_derivatives() {
  const Problem& pr = pr_;
  Work& w = w_;
  const int q = q_, t = su_.t;
  const int64_t p = p_, d = d_, qq = q * q;
  const bool second = su_.deriv == 2;
  const double* v = v_;
  std::fill(w.M.begin(), w.M.end(), 0.0);
  std::fill(w.SZ1, w.SZ1 + q, 0.0);
  std::fill(w.SZR2, w.SZR2 + qq, 0.0);
  std::fill(w.SZZ2, w.SZZ2 + qq, 0.0);
  double* s = w.s.data();
  for (int64_t j = 0; j < n_; ++j) {
    const int64_t r = r0_ + j;
    const double* Rj = &w.R[j * q];
    const double* zr = pr.Z + r * q;
    double eta = w.off[j];
    for (int c = 0; c < q; ++c) eta += Rj[c] * v[c];
    const RowD l = row(pr.family, pr.dispersion, pr.y[r], pr.weights[r], eta, false, 2 + su_.deriv);
    double* lm = &w.LM[j * 4];
    lm[0] = l.l1, lm[1] = l.l2, lm[2] = l.l3, lm[3] = l.l4;
    row_s(j, false, s);
    for (int c = 0; c < q; ++c) {
      const double wc = l.l2 * Rj[c];
      for (int64_t i = 0; i < d; ++i) w.M[c * d + i] += wc * s[i];
    }
    for (int e = 0; e < q; ++e) {
      w.SZ1[e] += l.l1 * zr[e];
      const double we = l.l2 * zr[e];
      for (int c = 0; c < q; ++c) {
        w.SZR2[e * q + c] += we * Rj[c];
        w.SZZ2[e * q + c] += we * zr[c];
      }
    }
  }
  for (int u = 0; u < t; ++u) w.M[su_.tb[u] * d + p + u] += w.SZ1[su_.ta[u]];
  solve_cols(w.L, w.M.data(), q, d);
  std::fill(w.D3.begin(), w.D3.end(), 0.0);
  if (second) {
    std::fill(w.E3.begin(), w.E3.end(), 0.0);
    std::fill(w.SZs2.begin(), w.SZs2.end(), 0.0);
    std::fill(w.F3.begin(), w.F3.end(), 0.0);
    std::fill(w.G3.begin(), w.G3.end(), 0.0);
    std::fill(w.F4.begin(), w.F4.end(), 0.0);
  }
  for (int64_t j = 0; j < n_; ++j) {
    const int64_t r = r0_ + j;
    const double* Rj = &w.R[j * q];
    const double* zr = pr.Z + r * q;
    const double l2 = w.LM[j * 4 + 1], l3 = w.LM[j * 4 + 2], l4 = w.LM[j * 4 + 3];
    row_s(j, true, s);
    for (int b1 = 0; b1 < q; ++b1)
      for (int b2 = 0; b2 <= b1; ++b2) {
        const double wb = l3 * Rj[b1] * Rj[b2];
        double* D = &w.D3[(b1 * q + b2) * d];
        for (int64_t i = 0; i < d; ++i) D[i] += wb * s[i];
      }
    if (!second) continue;
    for (int b1 = 0; b1 < q; ++b1) {
      const double w3 = l3 * Rj[b1];
      double* E = &w.E3[b1 * d * d];
      for (int64_t i = 0; i < d; ++i) {
        const double wi = w3 * s[i];
        for (int64_t k = i; k < d; ++k) E[i * d + k] += wi * s[k];
      }
      for (int b2 = 0; b2 <= b1; ++b2) {
        const double w4 = l4 * Rj[b1] * Rj[b2];
        double* F4 = &w.F4[(b1 * q + b2) * d * d];
        for (int64_t i = 0; i < d; ++i) {
          const double wi = w4 * s[i];
          for (int64_t k = i; k < d; ++k) F4[i * d + k] += wi * s[k];
        }
      }
    }
    for (int e = 0; e < q; ++e) {
      const double w2 = l2 * zr[e], w3 = l3 * zr[e];
      for (int64_t i = 0; i < d; ++i) w.SZs2[e * d + i] += w2 * s[i];
      for (int b1 = 0; b1 < q; ++b1) {
        const double wb = w3 * Rj[b1];
        double* F3 = &w.F3[(e * q + b1) * d];
        for (int64_t i = 0; i < d; ++i) F3[i] += wb * s[i];
        for (int b2 = 0; b2 <= b1; ++b2) w.G3[(e * q + b1) * q + b2] += wb * Rj[b2];
      }
    }
  }
  for (int64_t i = 0; i < d; ++i) {
    double* Hd = &w.Hd[i * qq];
    for (int b1 = 0; b1 < q; ++b1)
      for (int b2 = 0; b2 < q; ++b2) {
        double h = w.D3[(std::max(b1, b2) * q + std::min(b1, b2)) * d + i];
        if (i >= p) {
          const int u = static_cast<int>(i - p);
          if (b2 == su_.tb[u]) h += w.SZR2[su_.ta[u] * q + b1];
          if (b1 == su_.tb[u]) h += w.SZR2[su_.ta[u] * q + b2];
        }
        Hd[b1 * q + b2] = -h;
      }
    double* Ld = &w.Ld[i * qq];
    chol_derivative(w.L, w.Li, Hd, Ld, q);
    for (int b1 = 0; b1 < q; ++b1)  // Sd_i = -S Ld_i' S
      for (int b2 = 0; b2 < q; ++b2) {
        double acc = 0.0;
        for (int c = 0; c < q; ++c)
          for (int e = 0; e < q; ++e) acc += w.S[b1 * q + c] * Ld[e * q + c] * w.S[e * q + b2];
        w.Sd[i * qq + b1 * q + b2] = -acc;
      }
  }
  if (second) mode_second();
}

// Second derivatives: of the mode (MM, q x d x d), of L (Ldd) and of S (Sdd).
template <int Q>
void Cluster<Q>::mode_second() {
  Work& w = w_;
  const int q = q_;
  const int64_t p = p_, d = d_, qq = q * q;
  const int* ta = su_.ta.data();
  const int* tb = su_.tb.data();
  const double* lam = su_.lam.data();
  double* MM = w.MM.data();
  for (int b1 = 0; b1 < q; ++b1)  // T3v into MM, then H^-1 T3v
    for (int64_t i = 0; i < d; ++i)
      for (int64_t k = i; k < d; ++k) {
        double h = w.E3[(b1 * d + i) * d + k];
        for (int side = 0; side < 2; ++side) {
          const int64_t x = side ? k : i, o = side ? i : k;
          if (x < p) continue;
          const int u = static_cast<int>(x - p);
          if (b1 == tb[u]) h += w.SZs2[ta[u] * d + o];
          h += w.M[tb[u] * d + o] * w.SZR2[ta[u] * q + b1];
        }
        MM[(b1 * d + i) * d + k] = h;
        MM[(b1 * d + k) * d + i] = h;
      }
  solve_cols(w.L, MM, q, d * d);
  double* G = w.G3.data();  // G[e, a, b] = sum l3 Z_e R_a R_b; W3[a, b, c] = sum l3 R_a R_b R_c
  for (int e = 0; e < q; ++e)
    for (int b1 = 0; b1 < q; ++b1)
      for (int b2 = b1 + 1; b2 < q; ++b2) G[(e * q + b1) * q + b2] = G[(e * q + b2) * q + b1];
  for (int b1 = 0; b1 < q; ++b1)
    for (int b2 = 0; b2 < q; ++b2)
      for (int c = 0; c < q; ++c) {
        double acc = 0.0;
        for (int e = c; e < q; ++e) acc += lam[e * q + c] * G[(e * q + b1) * q + b2];
        w.W3[(b1 * q + b2) * q + c] = acc;
      }
  const double* Ld = w.Ld.data();
  const double* Sd = w.Sd.data();
  for (int64_t i = 0; i < d; ++i)
    for (int64_t k = i; k < d; ++k) {
      for (int b1 = 0; b1 < q; ++b1)
        for (int b2 = 0; b2 < q; ++b2) {
          double h = w.F4[((std::max(b1, b2) * q + std::min(b1, b2)) * d + i) * d + k];
          for (int side = 0; side < 2; ++side) {
            const int64_t x = side ? k : i, o = side ? i : k;
            if (x < p) continue;
            const int u = static_cast<int>(x - p);
            if (b1 == tb[u]) h += w.F3[(ta[u] * q + b2) * d + o];
            if (b2 == tb[u]) h += w.F3[(ta[u] * q + b1) * d + o];
            h += w.M[tb[u] * d + o] * G[(ta[u] * q + b1) * q + b2];
          }
          if (i >= p && k >= p) {
            const int u = static_cast<int>(i - p), uu = static_cast<int>(k - p);
            if (b1 == tb[u] && b2 == tb[uu]) h += w.SZZ2[ta[u] * q + ta[uu]];
            if (b1 == tb[uu] && b2 == tb[u]) h += w.SZZ2[ta[uu] * q + ta[u]];
          }
          for (int e = 0; e < q; ++e) h += w.W3[(b1 * q + b2) * q + e] * MM[(e * d + i) * d + k];
          for (int c = 0; c < q; ++c)
            h += Ld[i * qq + b1 * q + c] * Ld[k * qq + b2 * q + c] +
                 Ld[k * qq + b1 * q + c] * Ld[i * qq + b2 * q + c];
          w.inner[b1 * q + b2] = -h;
        }
      double* Ldd = &w.Ldd[(i * d + k) * qq];
      chol_derivative(w.L, w.Li, w.inner, Ldd, q);
      for (int b1 = 0; b1 < q; ++b1)  // Sdd = -(Sd_i Ld_k' + Sd_k Ld_i' + S Ldd') S
        for (int b2 = 0; b2 < q; ++b2) {
          double acc = 0.0;
          for (int c = 0; c < q; ++c)
            acc += Sd[i * qq + b1 * q + c] * Ld[k * qq + b2 * q + c] +
                   Sd[k * qq + b1 * q + c] * Ld[i * qq + b2 * q + c] + w.S[b1 * q + c] * Ldd[b2 * q + c];
          w.tmp[b1 * q + b2] = acc;
        }
      double* Sdd = &w.Sdd[(i * d + k) * qq];
      for (int b1 = 0; b1 < q; ++b1)
        for (int b2 = 0; b2 < q; ++b2) {
          double acc = 0.0;
          for (int c = 0; c < q; ++c) acc += w.tmp[b1 * q + c] * w.S[c * q + b2];
          Sdd[b1 * q + b2] = -acc;
        }
      std::copy(Ldd, Ldd + qq, &w.Ldd[(k * d + i) * qq]);
      std::copy(Sdd, Sdd + qq, &w.Sdd[(k * d + i) * qq]);
    }
}

// The cluster's Hessian; node sums by moments in z.
template <int Q>
void Cluster<Q>::hessian(const double* pik) {
  const Problem& pr = pr_;
  Work& w = w_;
  const int q = q_, Q1 = q_ + 1;
  const int64_t p = p_, d = d_, G = su_.G, F = su_.F, qq = q * q;
  const int* ta = su_.ta.data();
  const int* tb = su_.tb.data();
  const double* z = su_.z.data();
  const double* Sd = w.Sd.data();
  const double* Ld = w.Ld.data();
  // sum_k pi_k sum_j l2_jk s_jk s_jk', s_jk = s_j0 + sum_c z_kc s_jc
  std::fill(w.hl2.begin(), w.hl2.end(), 0.0);
  const int64_t stored = std::min<int64_t>(n_, static_cast<int64_t>(w.L2N.size()) / G);
  double* sv = w.sv.data();
  double* yv = w.yv.data();
  double* W = w.W.data();
  for (int64_t j = 0; j < n_; ++j) {
    const int64_t r = r0_ + j;
    const double* Rj = &w.R[j * q];
    const double* zr = pr.Z + r * q;
    std::fill(W, W + Q1 * Q1, 0.0);
    for (int64_t k = 0; k < G; ++k) {
      double l2;
      if (j < stored) {
        l2 = w.L2N[j * G + k];
      } else {
        double eta = w.off[j];
        for (int c = 0; c < q; ++c) eta += Rj[c] * w.V[k * q + c];
        l2 = row(pr.family, pr.dispersion, pr.y[r], pr.weights[r], eta, false, 2).l2;
      }
      const double wk = pik[k] * l2;
      W[0] += wk;
      for (int c = 0; c < q; ++c) {
        const double wc = wk * z[k * q + c];
        W[c + 1] += wc;
        for (int c2 = c; c2 < q; ++c2) W[(c + 1) * Q1 + c2 + 1] += wc * z[k * q + c2];
      }
    }
    for (int c = 0; c < Q1; ++c)
      for (int c2 = 0; c2 < c; ++c2) W[c * Q1 + c2] = W[c2 * Q1 + c];
    row_s(j, true, sv);
    for (int c = 0; c < q; ++c)
      for (int64_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (int e = 0; e < q; ++e) acc += Rj[e] * Sd[i * qq + e * q + c];
        if (i >= p) acc += zr[ta[i - p]] * w.S[tb[i - p] * q + c];
        sv[(c + 1) * d + i] = acc;
      }
    for (int c = 0; c < Q1; ++c)
      for (int64_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (int c2 = 0; c2 < Q1; ++c2) acc += W[c * Q1 + c2] * sv[c2 * d + i];
        yv[c * d + i] = acc;
      }
    for (int64_t i = 0; i < d; ++i)
      for (int64_t k = i; k < d; ++k) {
        double acc = 0.0;
        for (int c = 0; c < Q1; ++c) acc += sv[c * d + i] * yv[c * d + k];
        w.hl2[i * d + k] += acc;
      }
  }
  // node moments
  std::fill(w.zbar, w.zbar + q, 0.0);
  std::fill(w.gbar, w.gbar + q, 0.0);
  std::fill(w.P1Zbar, w.P1Zbar + q, 0.0);
  std::fill(w.Zmom, w.Zmom + qq, 0.0);
  std::fill(w.GZ, w.GZ + qq, 0.0);
  std::fill(w.PZ, w.PZ + qq, 0.0);
  std::fill(w.Abar.begin(), w.Abar.end(), 0.0);
  for (int64_t k = 0; k < G; ++k) {
    const double wk = pik[k];
    const double* P = &w.P1[k * F];
    const double* zk = z + k * q;
    const double* gk = &w.GK[k * q];
    for (int b = 0; b < q; ++b) {
      w.zbar[b] += wk * zk[b];
      w.gbar[b] += wk * gk[b];
      w.P1Zbar[b] += wk * P[p + b];
      for (int c = 0; c < q; ++c) {
        w.Zmom[b * q + c] += wk * zk[b] * zk[c];
        w.GZ[b * q + c] += wk * gk[b] * zk[c];
        w.PZ[b * q + c] += wk * P[p + b] * zk[c];
      }
    }
    for (int64_t i = 0; i < d; ++i) w.Abar[i] += wk * w.A[k * d + i];
  }
  const double* L = w.L;
  for (int64_t i = 0; i < d; ++i)
    for (int64_t k = i; k < d; ++k) {
      double h = w.hl2[i * d + k];
      const double* Ldd = &w.Ldd[(i * d + k) * qq];
      const double* Sdd = &w.Sdd[(i * d + k) * qq];
      for (int b = 0; b < q; ++b) {
        const double Lb = L[b * q + b];
        h += -Ldd[b * q + b] / Lb + Ld[i * qq + b * q + b] * Ld[k * qq + b * q + b] / (Lb * Lb);
        h += w.gbar[b] * w.MM[(b * d + i) * d + k];
        double zi = 0.0, zk = 0.0;
        for (int c = 0; c < q; ++c) {
          h += w.GZ[b * q + c] * Sdd[b * q + c];
          zi += Sd[i * qq + b * q + c] * w.zbar[c];
          zk += Sd[k * qq + b * q + c] * w.zbar[c];
          for (int e = 0; e < q; ++e) h -= Sd[i * qq + b * q + c] * Sd[k * qq + b * q + e] * w.Zmom[c * q + e];
        }
        h -= w.M[b * d + i] * w.M[b * d + k] + w.M[b * d + i] * zk + w.M[b * d + k] * zi;
      }
      for (int side = 0; side < 2; ++side) {
        const int64_t x = side ? k : i, o = side ? i : k;
        if (x < p) continue;
        const int u = static_cast<int>(x - p);
        h += w.P1Zbar[ta[u]] * w.M[tb[u] * d + o];
        for (int c = 0; c < q; ++c) h += Sd[o * qq + tb[u] * q + c] * w.PZ[ta[u] * q + c];
      }
      for (int64_t g = 0; g < G; ++g)
        h += pik[g] * (w.A[g * d + i] - w.Abar[i]) * (w.A[g * d + k] - w.Abar[k]);
      w.hess[i * d + k] = h;
      w.hess[k * d + i] = h;
    }
}

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
