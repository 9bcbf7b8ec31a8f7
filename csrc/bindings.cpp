// pybind11 bindings for pyglmm's kernels: argument checks, GIL release, nothing else.
//
// The kernels (csrc/crossed/kernels.hpp) trust their arguments; every binding
// checks them on entry and raises ValueError naming the argument (and the row,
// column or position at fault): dtype, C-contiguity, shape, writeability of
// outputs; level codes within their factor's levels (kernels.hpp's global ids);
// offsets; factor and level ranges; family ids, thread counts, tolerances.
// Scans over the rows run without the GIL on the kernels' row blocks
// (csrc/common/checks.hpp); the checks are in csrc/binding_checks.hpp.  Empty optional
// arrays mean "absent".
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "binding_checks.hpp"
#include "agq/kernels.hpp"
#include "crossed/kernels.hpp"
#include "ridge/kernels.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyglmm C++ kernels (see csrc/crossed/kernels.hpp for their contracts).";
  m.def("gram_isa", &pyglmm::gram_isa, "The Gram kernel in use: 'avx2' or 'portable'.");

  py::module_ crossed = m.def_submodule("crossed", "Kernels of the crossed random-effects engine.");

  crossed.def("linear_predictor", [](py::array X, py::array codes, py::array beta, py::array b,
                                     py::array offset, py::array eta, int nthreads,
                                     py::object xcat) {
    threads(nthreads);
    auto r = rows(X, codes);
    const int64_t T = categoricals(r, xcat, beta.ndim() == 1 ? beta.shape(0) : -1);
    const double* pb = in<double>(beta, "beta", {T});
    const double* pv = in<double>(b, "b", {-1});
    const double* po = opt<double>(offset, "offset", {r.n});
    double* pe = out<double>(eta, "eta", {r.n});
    check_codes(r, same_bounds(r.k, b.shape(0), "the levels [0, len(b))"), true, nthreads);
    py::gil_scoped_release release;
    pyglmm::linear_predictor(r, pb, pv, po, pe, nthreads);
  }, "eta = offset + X beta + sum_j b[codes[:, j]] (code -1: an unseen level, 0).",
     py::arg("X"), py::arg("codes"), py::arg("beta"), py::arg("b"), py::arg("offset"),
     py::arg("eta"), py::arg("nthreads"), py::arg("xcat") = py::none());

  crossed.def("take_rows", [](py::array X, py::array order, py::array result, int nthreads) {
    threads(nthreads);
    // float64 rows (a design) or int32 rows (level codes); out has X's dtype
    const bool ints = X.dtype().is(py::dtype::of<int32_t>());
    const void* px = ints ? static_cast<const void*>(in<int32_t>(X, "X", {-1, -1}))
                          : static_cast<const void*>(in<double>(X, "X", {-1, -1}));
    const int64_t rows = X.shape(0), p = X.shape(1);
    const int64_t* po = in<int64_t>(order, "order", {-1});
    const int64_t n = order.shape(0);
    void* pr = ints ? static_cast<void*>(out<int32_t>(result, "out", {n, p}))
                    : static_cast<void*>(out<double>(result, "out", {n, p}));
    pyglmm::ColumnRange range;
    {
      py::gil_scoped_release release;
      if (n > 0) range = pyglmm::column_ranges(po, n, 1, nthreads)[0];
    }
    if (n > 0 && (range.min < 0 || range.hi >= rows))
      for (int64_t i = 0; i < n; ++i)
        if (po[i] < 0 || po[i] >= rows)
          fail("order", "index out of range: order[" + to_string(i) + "] = " + to_string(po[i]) +
                            ", X has " + to_string(rows) + " rows");
    py::gil_scoped_release release;
    pyglmm::take_rows(px, static_cast<size_t>(p) * X.itemsize(), po, n, pr, nthreads);
  }, "out[i] = X[order[i]] (rows of float64 or int32 gathered in parallel).",
     py::arg("X"), py::arg("order"), py::arg("out"), py::arg("nthreads"));

  crossed.def("order_rows", [](py::array codes, int64_t factor, int64_t lo, int64_t q,
                               py::array order) {
    const auto r = codes_only(codes);
    if (factor < 0 || factor >= r.k)
      fail("factor", to_string(factor) + " is not a column of codes (" + to_string(r.k) + " columns)");
    if (lo < 0 || q < 0 || lo + q > (int64_t{1} << 31))
      fail("lo", "the factor's levels [lo, lo + q) = [" + to_string(lo) + ", " + to_string(lo + q) +
                     ") must lie within [0, 2^31)");
    int64_t* po = out<int64_t>(order, "order", {r.n});
    auto bounds = same_bounds(r.k, int64_t{1} << 31, "[0, 2^31)");
    bounds[factor] = {lo, lo + q, "factor " + to_string(factor) + "'s levels [lo, lo + q)"};
    check_codes(r, bounds, false, 1);
    py::gil_scoped_release release;
    pyglmm::order_rows(r.codes, r.n, r.k, factor, lo, q, po);
  }, "The stable permutation sorting the rows by codes[:, factor] (levels [lo, lo + q)).",
     py::arg("codes"), py::arg("factor"), py::arg("lo"), py::arg("q"), py::arg("order"));

  crossed.def("irls_quantities", [](int family, py::array eta, py::array y, py::array prior,
                                    py::array offset, py::array mu, py::array w, py::array z,
                                    int nthreads) {
    family_id(family);
    threads(nthreads);
    const double* pe = in<double>(eta, "eta", {-1});
    const int64_t n = eta.shape(0);
    const double* py_ = in<double>(y, "y", {n});
    const double* pp = opt<double>(prior, "prior", {n});
    const double* po = opt<double>(offset, "offset", {n});
    double* pm = out<double>(mu, "mu", {n});
    double* pw = out<double>(w, "w", {n});
    double* pz = out<double>(z, "z", {n});
    py::gil_scoped_release release;
    return pyglmm::irls_quantities(family, n, pe, py_, pp, po, pm, pw, pz, nthreads);
  }, "mu, unscaled working weights and working response of zeta; returns the deviance.",
     py::arg("family"), py::arg("eta"), py::arg("y"), py::arg("prior"), py::arg("offset"),
     py::arg("mu"), py::arg("w"), py::arg("z"), py::arg("nthreads"));

  crossed.def("stats_pass", [](int family, py::array X, py::array codes, py::array y,
                               py::array prior, py::array offset, py::array beta, py::array b,
                               py::array dbeta, py::array db, bool design, py::array w,
                               py::array G, py::array h, py::array S, int nthreads,
                               py::object xcat) {
    family_id(family);
    threads(nthreads);
    auto r = rows(X, codes);
    const int64_t T = categoricals(r, xcat, beta.ndim() == 1 ? beta.shape(0) : -1);
    const double* py_ = in<double>(y, "y", {r.n});
    const double* pp = opt<double>(prior, "prior", {r.n});
    const double* po = opt<double>(offset, "offset", {r.n});
    const double* pbeta = in<double>(beta, "beta", {T});
    const double* pb = in<double>(b, "b", {-1});
    const int64_t Q = b.shape(0);
    const double* pdbeta = in<double>(dbeta, "dbeta", {T});
    const double* pdb = in<double>(db, "db", {Q});
    double* pw = out<double>(w, "w", {r.n});
    double* pG = out<double>(G, "G", {T, T});
    double* ph = out<double>(h, "h", {T});
    double* pS = out<double>(S, "S", {Q, T + 2});
    check_codes(r, same_bounds(r.k, Q, "the levels [0, len(b))"), false, nthreads);
    py::array_t<double> scalars(4);
    double* psc = scalars.mutable_data();
    {
      py::gil_scoped_release release;
      pyglmm::stats_pass(family, r, Q, py_, pp, po, pbeta, pb, pdbeta, pdb, design, pw, pG,
                         ph, pS, psc, nthreads);
    }
    return scalars;
  }, "Fused pass; returns [pearson, sum zeta^2, sum dzeta^2, sum (zeta-dzeta)^2].",
     py::arg("family"), py::arg("X"), py::arg("codes"), py::arg("y"), py::arg("prior"),
     py::arg("offset"), py::arg("beta"), py::arg("b"), py::arg("dbeta"), py::arg("db"),
     py::arg("design"), py::arg("w"), py::arg("G"), py::arg("h"), py::arg("S"),
     py::arg("nthreads"), py::arg("xcat") = py::none());

  crossed.def("group_cross_sums", [](py::array codes, int64_t factor, int64_t lo, py::array w,
                                     double scale, py::array table, py::array result,
                                     int nthreads) {
    threads(nthreads);
    finite(scale, "scale");
    const auto r = codes_only(codes);
    if (factor < 0 || factor >= r.k)
      fail("factor", to_string(factor) + " is not a column of codes (" + to_string(r.k) + " columns)");
    const double* pw = in<double>(w, "w", {r.n});
    const double* pt = in<double>(table, "table", {-1, -1});
    const int64_t Q = table.shape(0), m = table.shape(1);
    double* po = out<double>(result, "out", {-1, m});
    const int64_t q = result.shape(0);
    if (lo < 0 || lo > Q - q)
      fail("lo", "the factor's levels [lo, lo + q) = [" + to_string(lo) + ", " + to_string(lo + q) +
                     ") (q = rows of out) must lie within the " + to_string(Q) + " rows of table");
    auto bounds = same_bounds(r.k, Q, "[0, rows of table)");
    bounds[factor] = {lo, lo + q, "the factor's levels [lo, lo + rows of out)"};
    check_codes(r, bounds, false, nthreads);
    py::gil_scoped_release release;
    pyglmm::group_cross_sums(r, factor, lo, q, pw, scale, pt, m, po, nthreads);
  }, "Weighted group sums over one factor of the gathered other factors' table rows.",
     py::arg("codes"), py::arg("factor"), py::arg("lo"), py::arg("w"), py::arg("scale"),
     py::arg("table"), py::arg("out"), py::arg("nthreads"));

  crossed.def("club_backfit", [](py::array codes, py::array offsets, py::array w, double scale,
                                 py::array h, py::array s, py::array D, py::array tq,
                                 py::array chol, py::array XtX, py::array counts, py::array beta,
                                 py::array b, double tol, int64_t max_iter, int nthreads) {
    threads(nthreads);
    finite(scale, "scale");
    nonnegative(tol, "tol");
    if (max_iter < 0) fail("max_iter", "must be non-negative, got " + to_string(max_iter));
    auto r = codes_only(codes);
    double* pb = out<double>(b, "b", {-1});
    const int64_t Q = b.shape(0);
    const int64_t* poff = offsets_of(offsets, r.k, Q, "b");
    double* pbeta = out<double>(beta, "beta", {-1});
    r.p = beta.shape(0);
    const double* pw = in<double>(w, "w", {r.n});
    const double* ph = in<double>(h, "h", {r.p});
    const double* ps = in<double>(s, "s", {Q, r.p});
    const double* pD = in<double>(D, "D", {Q});
    const double* ptq = in<double>(tq, "tq", {Q});
    const double* pch = in<double>(chol, "chol", {r.k, r.p, r.p});
    const double* pX = in<double>(XtX, "XtX", {r.p, r.p});
    const double* pc = in<double>(counts, "counts", {Q});
    check_positive(pD, Q, "D");
    check_cholesky(pch, r.k, r.p);
    check_codes(r, factor_bounds(r.k, poff), false, nthreads);
    pyglmm::ClubResult res;
    {
      py::gil_scoped_release release;
      res = pyglmm::club_backfit(r, poff, pw, scale, ph, ps, pD, ptq, pch, pX, pc, pbeta, pb,
                                 tol, max_iter, nthreads);
    }
    return py::make_tuple(res.sweeps, res.rel);
  }, "Clubbed backfitting to tolerance; updates beta and b in place; returns (sweeps, rel).",
     py::arg("codes"), py::arg("offsets"), py::arg("w"), py::arg("scale"), py::arg("h"),
     py::arg("s"), py::arg("D"), py::arg("tq"), py::arg("chol"), py::arg("XtX"),
     py::arg("counts"), py::arg("beta"), py::arg("b"), py::arg("tol"), py::arg("max_iter"),
     py::arg("nthreads"));

  crossed.def("sandwich_pass", [](py::array X, py::array codes, py::array A, py::array wu,
                                  double scale, py::array wm, py::array H, py::array ZU,
                                  py::array M0, int nthreads, py::object xcat) {
    threads(nthreads);
    finite(scale, "scale");
    auto r = rows(X, codes);
    const int64_t T = categoricals(r, xcat, H.ndim() == 2 ? H.shape(0) : -1);
    double* pZ = out<double>(ZU, "ZU", {-1, T});
    const int64_t Q = ZU.shape(0);
    const double* pA = opt<double>(A, "A", {Q, T});
    const double* pwu = in<double>(wu, "wu", {r.n});
    const double* pwm = opt<double>(wm, "wm", {r.n});
    double* pH = out<double>(H, "H", {T, T});
    double* pM = out<double>(M0, "M0", {T, T});
    check_codes(r, same_bounds(r.k, Q, "[0, rows of ZU)"), false, nthreads);
    py::gil_scoped_release release;
    pyglmm::sandwich_pass(r, Q, pA, pwu, scale, pwm, pH, pZ, pM, nthreads);
  }, "H = X'U, ZU = Z'U, M0 = sum wm r r' with r = X - Z A, U = scale * wu * r.",
     py::arg("X"), py::arg("codes"), py::arg("A"), py::arg("wu"), py::arg("scale"),
     py::arg("wm"), py::arg("H"), py::arg("ZU"), py::arg("M0"), py::arg("nthreads"), py::arg("xcat") = py::none());

  crossed.def("schall_update", [](py::array offsets, py::array Wq, py::array b, py::array lam,
                                  py::array nu, py::array sigma2) {
    const double* pl = in<double>(lam, "lam", {-1});
    const int64_t k = lam.shape(0);
    const double* pb = in<double>(b, "b", {-1});
    const int64_t Q = b.shape(0);
    const int64_t* poff = offsets_of(offsets, k, Q, "b");
    const double* pW = in<double>(Wq, "Wq", {Q});
    double* pn = out<double>(nu, "nu", {k});
    double* ps = out<double>(sigma2, "sigma2", {k});
    check_positive(pl, k, "lam");
    pyglmm::schall_update(k, poff, pW, pb, pl, pn, ps);
  }, "Schall's variance update with the diagonal trace approximation.",
     py::arg("offsets"), py::arg("Wq"), py::arg("b"), py::arg("lam"), py::arg("nu"),
     py::arg("sigma2"));
  // New kernels (helper "perf").
  crossed.def("smooth_step", [](py::array codes, py::array offsets, int64_t factor, py::array w,
                                py::array s, py::array D, py::array counts, bool centre,
                                py::array A, py::array work, int nthreads) {
    threads(nthreads);
    auto r = codes_only(codes);
    if (factor < 0 || factor >= r.k) throw std::invalid_argument("factor: out of range");
    double* pA = out<double>(A, "A", {-1, -1});
    const int64_t Q = A.shape(0);
    r.p = A.shape(1);
    const int64_t* poff = offsets_of(offsets, r.k, Q, "A");
    check_codes(r, factor_bounds(r.k, poff), false, nthreads);
    const double* pw = in<double>(w, "w", {r.n});
    const double* ps = in<double>(s, "s", {Q, r.p});
    const double* pD = in<double>(D, "D", {Q});
    const double* pc = in<double>(counts, "counts", {Q});
    double* pwork = out<double>(work, "work", {-1, r.p});
    if (work.shape(0) < poff[factor + 1] - poff[factor])
      throw std::invalid_argument("work: fewer rows than the factor's levels");
    pyglmm::SmoothResult res;
    {
      py::gil_scoped_release release;
      res = pyglmm::smooth_step(r, poff, factor, pw, ps, pD, pc, centre, pA, pwork, nthreads);
    }
    return py::make_tuple(res.num, res.den);
  }, "One block step of the smoother of X's columns: updates A's rows of one factor; "
     "returns (num, den) of the change.", py::arg("codes"), py::arg("offsets"), py::arg("factor"),
     py::arg("w"), py::arg("s"), py::arg("D"), py::arg("counts"), py::arg("centre"), py::arg("A"),
     py::arg("work"), py::arg("nthreads"));
  crossed.def("club_prepare", [](py::array S, py::array offsets, py::array lam,
                                 py::array s, py::array Wq, py::array tq, py::array D,
                                 py::array R, int nthreads) {
    threads(nthreads);
    const int64_t k = lam.ndim() == 1 ? lam.shape(0) : -1;
    const double* pl = in<double>(lam, "lam", {-1});
    double* ps = out<double>(s, "s", {-1, -1});
    const int64_t Q = s.shape(0), p = s.shape(1);
    const int64_t* poff = offsets_of(offsets, k, Q, "s");
    const double* pS = in<double>(S, "S", {Q, p + 2});
    double* pW = out<double>(Wq, "Wq", {Q});
    double* pt = out<double>(tq, "tq", {Q});
    double* pD = out<double>(D, "D", {Q});
    double* pR = out<double>(R, "R", {k, p, p});
    py::gil_scoped_release release;
    pyglmm::club_prepare(k, Q, p, poff, pS, pl, ps, pW, pt, pD, pR, nthreads);
  }, "Per-level inputs of the clubbed loop from the level table S: s, Wq, tq, "
     "D = Wq + lam and R_j = s_j' D_j^-1 s_j.", py::arg("S"), py::arg("offsets"), py::arg("lam"),
     py::arg("s"), py::arg("Wq"), py::arg("tq"), py::arg("D"), py::arg("R"), py::arg("nthreads"));

  py::module_ agq = m.def_submodule("agq", "Kernels of the adaptive Gauss-Hermite engine.");

  agq.def("cluster_eval", [](int family, double dispersion, py::array X, py::array Z, py::array y,
                             py::array weights, py::array offset, py::array starts, py::array beta,
                             py::array theta, py::array nodes, py::array gh_weights, py::array modes,
                             int deriv, py::array loglik_out, py::array grad_out, py::array hess_out,
                             py::array condvar_out, int nthreads) {
    pyglmm::agq::Problem pr;
    pr.family = family_id(family);
    threads(nthreads);
    if (deriv < 0 || deriv > 2) fail("deriv", "must be 0, 1 or 2, got " + to_string(deriv));
    pr.dispersion = finite(dispersion, "dispersion");
    if (family == pyglmm::GAUSSIAN && !positive(dispersion))
      fail("dispersion", "must be positive for the gaussian family, got " + num(dispersion));
    pr.X = in<double>(X, "X", {-1, -1});
    pr.n = X.shape(0);
    pr.p = X.shape(1);
    pr.Z = in<double>(Z, "Z", {pr.n, -1});
    pr.q = Z.shape(1);
    if (pr.q < 1 || pr.q > pyglmm::agq::kMaxQ)
      fail("Z", to_string(pr.q) + " random effects per cluster (columns); 1 to 3 are supported");
    const int64_t q = pr.q, t = q * (q + 1) / 2, d = pr.p + t;
    pr.y = in<double>(y, "y", {pr.n});
    pr.weights = in<double>(weights, "weights", {pr.n});
    pr.offset = in<double>(offset, "offset", {pr.n});
    pr.starts = starts_of(starts, pr.n);
    pr.m = starts.shape(0) - 1;
    pr.beta = in<double>(beta, "beta", {pr.p});
    pr.theta = in<double>(theta, "theta", {t});
    pr.nodes = in<double>(nodes, "nodes", {-1});
    pr.K = nodes.shape(0);
    if (pr.K < 1) fail("nodes", "must hold at least one node (K >= 1)");
    pr.gh_weights = in<double>(gh_weights, "gh_weights", {pr.K});
    pyglmm::agq::Outputs o;
    o.modes = out<double>(modes, "modes", {pr.m, q});
    o.loglik = out<double>(loglik_out, "loglik_out", {pr.m});
    o.grad = out<double>(grad_out, "grad_out", {d});
    o.hess = out<double>(hess_out, "hess_out", {d, d});
    o.condvar = out<double>(condvar_out, "condvar_out", {pr.m, q, q});
    check_finite(pr.beta, pr.p, "beta");
    check_finite(pr.theta, t, "theta");
    check_finite(pr.nodes, pr.K, "nodes");
    check_positive(pr.gh_weights, pr.K, "gh_weights");
    check_positive(pr.weights, pr.n, "weights");
    py::gil_scoped_release release;
    return pyglmm::agq::cluster_eval(pr, deriv, o, nthreads);
  }, "Adaptive Gauss-Hermite log-likelihood per cluster, and the sums of its gradient and "
     "Hessian in (beta, theta); returns the number of clusters whose mode did not converge "
     "(contract: pyglmm.engines.agq.kernels_numpy.cluster_eval).",
     py::arg("family"), py::arg("dispersion"), py::arg("X"), py::arg("Z"), py::arg("y"),
     py::arg("weights"), py::arg("offset"), py::arg("starts"), py::arg("beta"), py::arg("theta"),
     py::arg("nodes"), py::arg("gh_weights"), py::arg("modes"), py::arg("deriv"),
     py::arg("loglik_out"), py::arg("grad_out"), py::arg("hess_out"), py::arg("condvar_out"),
     py::arg("nthreads"));

  py::module_ ridge = m.def_submodule("ridge", "Kernels of the ridge LMM engine (csrc/ridge/kernels.hpp).");

  ridge.def("group_reductions", [](py::array offsets, py::array Z, py::array D, py::array y,
                                   int nthreads) {
    threads(nthreads);
    const double* pz = in<double>(Z, "Z", {-1, -1});
    const int64_t n = Z.shape(0), q = Z.shape(1);
    const double* pd = in<double>(D, "D", {n, -1});
    const int64_t p = D.shape(1);
    const double* py_ = in<double>(y, "y", {n});
    const int64_t* po = in<int64_t>(offsets, "offsets", {-1});
    const int64_t m = offsets.shape(0) - 1;
    if (m < 0) fail("offsets", "must hold at least one entry");
    if (po[0] != 0) fail("offsets", "must start at 0, got " + to_string(po[0]));
    for (int64_t i = 0; i < m; ++i)
      if (po[i + 1] < po[i])
        fail("offsets", "decrease at position " + to_string(i + 1) + " (" + to_string(po[i]) +
                            " then " + to_string(po[i + 1]) + ")");
    if (po[m] != n) fail("offsets", "must end at the number of rows len(Z) = " + to_string(n) +
                                        ", got " + to_string(po[m]));
    py::array_t<double> ZtZ({m, q, q}), ZtD({m, q, p}), Zty({m, q});
    double *a = ZtZ.mutable_data(), *b = ZtD.mutable_data(), *c = Zty.mutable_data();
    {
      py::gil_scoped_release release;
      pyglmm::ridge::group_reductions(m, po, q, p, pz, pd, py_, a, b, c, nthreads);
    }
    return py::make_tuple(ZtZ, ZtD, Zty);
  }, "Per-group Z_i'Z_i, Z_i'D_i, Z_i'y_i of rows sorted by group (offsets).",
     py::arg("offsets"), py::arg("Z"), py::arg("D"), py::arg("y"), py::arg("nthreads") = 1);

  ridge.def("batched_spd_solve", [](py::array M, py::array R, int nthreads) {
    threads(nthreads);
    const double* pm = in<double>(M, "M", {-1, -1, -1});
    const int64_t m = M.shape(0), q = M.shape(1);
    if (M.shape(2) != q) fail("M", "blocks must be square, got " + to_string(q) + " x " + to_string(M.shape(2)));
    const double* pr = in<double>(R, "R", {m, q, -1});
    const int64_t k = R.shape(2);
    for (int64_t i = 0; i < m * q * q; ++i)
      if (!std::isfinite(pm[i])) fail("M", "holds a non-finite value in block " + to_string(i / (q * q)));
    py::array_t<double> X({m, q, k}), logdet(m);
    double *px = X.mutable_data(), *pl = logdet.mutable_data();
    {
      py::gil_scoped_release release;
      pyglmm::ridge::batched_spd_solve(m, q, k, pm, pr, px, pl, nthreads);
    }
    return py::make_tuple(X, logdet);
  }, "X_i = M_i^{-1} R_i by Cholesky per block; logdet (NaN where M_i is not positive definite).",
     py::arg("M"), py::arg("R"), py::arg("nthreads") = 1);
}
