// Row terms and small dense algebra of the AGQ kernel (cluster_eval.cpp includes
// this inside its anonymous namespace; not a public header).
#pragma once

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
