// The AGQ kernel's derivatives of the mode and of the Cholesky factor, and the
// Hessian: Cluster<Q> members, included by cluster_eval.cpp inside its anonymous
// namespace (not a public header).
#pragma once

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
