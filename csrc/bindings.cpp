// pybind11 bindings for pyglmm's kernels: array checks, GIL release, nothing else.
// dtype, contiguity, shape and writeability are checked (ValueError naming the
// argument); the contents of level codes and offsets are not: pyglmm builds
// them (see kernels.hpp).  Empty optional arrays mean "absent".
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "crossed/kernels.hpp"

namespace py = pybind11;

namespace {

using Shape = std::vector<int64_t>;  // -1 matches any extent

std::string shape_str(const py::array& a) {
  std::string out = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) out += (d ? ", " : "") + std::to_string(a.shape(d));
  return out + ")";
}

template <class T>
void check(const py::array& a, const char* name, const Shape& shape) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw std::invalid_argument(std::string(name) + ": wrong dtype " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + ": array must be C-contiguous");
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
  if (!ok) throw std::invalid_argument(std::string(name) + ": wrong shape " + shape_str(a));
}

template <class T>
const T* in(const py::array& a, const char* name, const Shape& shape) {
  check<T>(a, name, shape);
  return static_cast<const T*>(a.data());
}

// An optional input: an empty array means absent (nullptr).
template <class T>
const T* opt(const py::array& a, const char* name, const Shape& shape) {
  return a.size() == 0 ? nullptr : in<T>(a, name, shape);
}

template <class T>
T* out(py::array& a, const char* name, const Shape& shape) {
  check<T>(a, name, shape);
  if (!a.writeable()) throw std::invalid_argument(std::string(name) + ": array is read-only");
  return static_cast<T*>(a.mutable_data());
}

pyglmm::Rows rows(const py::array& X, const py::array& codes) {
  pyglmm::Rows r;
  r.X = in<double>(X, "X", {-1, -1});
  r.n = X.shape(0);
  r.p = X.shape(1);
  r.codes = in<int32_t>(codes, "codes", {r.n, -1});
  r.k = codes.shape(1);
  return r;
}

pyglmm::Rows codes_only(const py::array& codes) {
  pyglmm::Rows r;
  r.codes = in<int32_t>(codes, "codes", {-1, -1});
  r.n = codes.shape(0);
  r.k = codes.shape(1);
  return r;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyglmm C++ kernels (see csrc/kernels.hpp for their contracts).";
  m.def("gram_isa", &pyglmm::gram_isa, "The Gram kernel in use: 'avx2' or 'portable'.");

  py::module_ crossed = m.def_submodule("crossed", "Kernels of the crossed random-effects engine.");

  crossed.def("linear_predictor", [](py::array X, py::array codes, py::array beta, py::array b,
                               py::array offset, py::array eta, int nthreads) {
    const auto r = rows(X, codes);
    const double* pb = in<double>(beta, "beta", {r.p});
    const double* pv = in<double>(b, "b", {-1});
    const double* po = opt<double>(offset, "offset", {r.n});
    double* pe = out<double>(eta, "eta", {r.n});
    py::gil_scoped_release release;
    pyglmm::linear_predictor(r, pb, pv, po, pe, nthreads);
  }, "eta = offset + X beta + sum_j b[codes[:, j]] (negative code -> 0).");

  crossed.def("take_rows", [](py::array X, py::array order, py::array result, int nthreads) {
    const double* px = in<double>(X, "X", {-1, -1});
    const int64_t rows = X.shape(0), p = X.shape(1);
    const int64_t* po = in<int64_t>(order, "order", {-1});
    const int64_t n = order.shape(0);
    for (int64_t i = 0; i < n; ++i)
      if (po[i] < 0 || po[i] >= rows) throw std::invalid_argument("order: index out of range");
    double* pr = out<double>(result, "out", {n, p});
    py::gil_scoped_release release;
    pyglmm::take_rows(px, p, po, n, pr, nthreads);
  }, "out[i] = X[order[i]] (rows gathered in parallel).");

  crossed.def("irls_quantities", [](int family, py::array eta, py::array y, py::array prior,
                              py::array offset, py::array mu, py::array w, py::array z,
                              int nthreads) {
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
  }, "mu, unscaled working weights and working response of zeta; returns the deviance.");

  crossed.def("stats_pass", [](int family, py::array X, py::array codes, py::array y,
                         py::array prior, py::array offset, py::array beta, py::array b,
                         py::array dbeta, py::array db, bool design, py::array w,
                         py::array G, py::array h, py::array S, int nthreads) {
    const auto r = rows(X, codes);
    const int64_t Q = b.shape(0);
    const double* py_ = in<double>(y, "y", {r.n});
    const double* pp = opt<double>(prior, "prior", {r.n});
    const double* po = opt<double>(offset, "offset", {r.n});
    const double* pbeta = in<double>(beta, "beta", {r.p});
    const double* pb = in<double>(b, "b", {Q});
    const double* pdbeta = in<double>(dbeta, "dbeta", {r.p});
    const double* pdb = in<double>(db, "db", {Q});
    double* pw = out<double>(w, "w", {r.n});
    double* pG = out<double>(G, "G", {r.p, r.p});
    double* ph = out<double>(h, "h", {r.p});
    double* pS = out<double>(S, "S", {Q, r.p + 2});
    py::array_t<double> scalars(4);
    double* psc = scalars.mutable_data();
    {
      py::gil_scoped_release release;
      pyglmm::stats_pass(family, r, Q, py_, pp, po, pbeta, pb, pdbeta, pdb, design, pw, pG,
                         ph, pS, psc, nthreads);
    }
    return scalars;
  }, "Fused pass; returns [pearson, sum zeta^2, sum dzeta^2, sum (zeta-dzeta)^2].");

  crossed.def("group_cross_sums", [](py::array codes, int64_t factor, int64_t lo, py::array w,
                               double scale, py::array table, py::array result, int nthreads) {
    const auto r = codes_only(codes);
    if (factor < 0 || factor >= r.k) throw std::invalid_argument("factor: out of range");
    const double* pw = in<double>(w, "w", {r.n});
    const double* pt = in<double>(table, "table", {-1, -1});
    const int64_t m_ = table.shape(1);
    double* po = out<double>(result, "out", {-1, m_});
    const int64_t q = result.shape(0);
    py::gil_scoped_release release;
    pyglmm::group_cross_sums(r, factor, lo, q, pw, scale, pt, m_, po, nthreads);
  }, "Weighted group sums over one factor of the gathered other factors' table rows.");

  crossed.def("club_backfit", [](py::array codes, py::array offsets, py::array w, double scale,
                           py::array h, py::array s, py::array D, py::array tq, py::array chol,
                           py::array XtX, py::array counts, py::array beta, py::array b,
                           double tol, int64_t max_iter, int nthreads) {
    auto r = codes_only(codes);
    const int64_t* poff = in<int64_t>(offsets, "offsets", {r.k + 1});
    const int64_t Q = b.shape(0);
    r.p = beta.shape(0);
    const double* pw = in<double>(w, "w", {r.n});
    const double* ph = in<double>(h, "h", {r.p});
    const double* ps = in<double>(s, "s", {Q, r.p});
    const double* pD = in<double>(D, "D", {Q});
    const double* ptq = in<double>(tq, "tq", {Q});
    const double* pch = in<double>(chol, "chol", {r.k, r.p, r.p});
    const double* pX = in<double>(XtX, "XtX", {r.p, r.p});
    const double* pc = in<double>(counts, "counts", {Q});
    double* pbeta = out<double>(beta, "beta", {r.p});
    double* pb = out<double>(b, "b", {Q});
    pyglmm::ClubResult res;
    {
      py::gil_scoped_release release;
      res = pyglmm::club_backfit(r, poff, pw, scale, ph, ps, pD, ptq, pch, pX, pc, pbeta, pb,
                                 tol, max_iter, nthreads);
    }
    return py::make_tuple(res.sweeps, res.rel);
  }, "Clubbed backfitting to tolerance; updates beta and b in place; returns (sweeps, rel).");

  crossed.def("sandwich_pass", [](py::array X, py::array codes, py::array A, py::array wu,
                            double scale, py::array wm, py::array H, py::array ZU, py::array M0,
                            int nthreads) {
    const auto r = rows(X, codes);
    const int64_t Q = ZU.shape(0);
    const double* pA = opt<double>(A, "A", {Q, r.p});
    const double* pwu = in<double>(wu, "wu", {r.n});
    const double* pwm = opt<double>(wm, "wm", {r.n});
    double* pH = out<double>(H, "H", {r.p, r.p});
    double* pZ = out<double>(ZU, "ZU", {Q, r.p});
    double* pM = out<double>(M0, "M0", {r.p, r.p});
    py::gil_scoped_release release;
    pyglmm::sandwich_pass(r, Q, pA, pwu, scale, pwm, pH, pZ, pM, nthreads);
  }, "H = X'U, ZU = Z'U, M0 = sum wm r r' with r = X - Z A, U = scale * wu * r.");

  crossed.def("schall_update", [](py::array offsets, py::array Wq, py::array b, py::array lam,
                            py::array nu, py::array sigma2) {
    const int64_t k = lam.shape(0);
    const int64_t* poff = in<int64_t>(offsets, "offsets", {k + 1});
    const int64_t Q = b.shape(0);
    const double* pW = in<double>(Wq, "Wq", {Q});
    const double* pb = in<double>(b, "b", {Q});
    const double* pl = in<double>(lam, "lam", {k});
    double* pn = out<double>(nu, "nu", {k});
    double* ps = out<double>(sigma2, "sigma2", {k});
    pyglmm::schall_update(k, poff, pW, pb, pl, pn, ps);
  }, "Schall's variance update with the diagonal trace approximation.");
  // New kernels (helper "perf").
  // Offsets of the level space: 0 = offsets[0] <= ... <= offsets[k] = Q.
  auto levels_ok = [](const int64_t* offsets, int64_t k, int64_t Q) {
    if (offsets[0] != 0 || offsets[k] != Q) return false;
    for (int64_t j = 0; j < k; ++j)
      if (offsets[j + 1] < offsets[j]) return false;
    return true;
  };
  crossed.def("smooth_step", [levels_ok](py::array codes, py::array offsets, int64_t factor, py::array w,
                                py::array s, py::array D, py::array counts, bool centre,
                                py::array A, py::array work, int nthreads) {
    auto r = codes_only(codes);
    if (factor < 0 || factor >= r.k) throw std::invalid_argument("factor: out of range");
    const int64_t* poff = in<int64_t>(offsets, "offsets", {r.k + 1});
    double* pA = out<double>(A, "A", {-1, -1});
    const int64_t Q = A.shape(0);
    r.p = A.shape(1);
    if (!levels_ok(poff, r.k, Q)) throw std::invalid_argument("offsets: not 0 <= ... <= Q = rows of A");
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
  crossed.def("club_prepare", [levels_ok](py::array S, py::array offsets, py::array lam,
                                 py::array s, py::array Wq, py::array tq, py::array D,
                                 py::array R, int nthreads) {
    const int64_t k = lam.ndim() == 1 ? lam.shape(0) : -1;
    const double* pl = in<double>(lam, "lam", {-1});
    const int64_t* poff = in<int64_t>(offsets, "offsets", {k + 1});
    double* ps = out<double>(s, "s", {-1, -1});
    const int64_t Q = s.shape(0), p = s.shape(1);
    if (!levels_ok(poff, k, Q)) throw std::invalid_argument("offsets: not 0 <= ... <= Q = rows of s");
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
  // Overloads with categorical fixed effects as codes (Rows::xcat): xcat is
  // (n, m) int32 with values in [p, T) or -1, T the fixed-effect columns in all
  // (from beta, or H for sandwich_pass); m = 0 means none (then T = p).
  auto with_cat = [](pyglmm::Rows& r, const py::array& xcat, int64_t T) {
    r.xcat = in<int32_t>(xcat, "xcat", {r.n, -1});
    r.m = xcat.shape(1);
    if (T < r.p || (r.m == 0 && T != r.p))
      throw std::invalid_argument("xcat: " + std::to_string(T - r.p) + " dummy columns for " +
                                  std::to_string(r.m) + " categoricals");
    r.pc = T - r.p;
    for (int64_t i = 0; i < r.n * r.m; ++i)
      if (r.xcat[i] != -1 && (r.xcat[i] < r.p || r.xcat[i] >= T))
        throw std::invalid_argument("xcat: column id out of range");
  };
  crossed.def("linear_predictor", [with_cat](py::array X, py::array codes, py::array beta,
                                             py::array b, py::array offset, py::array eta,
                                             int nthreads, py::array xcat) {
    auto r = rows(X, codes);
    const double* pb = in<double>(beta, "beta", {-1});
    with_cat(r, xcat, beta.shape(0));
    const double* pv = in<double>(b, "b", {-1});
    const double* po = opt<double>(offset, "offset", {r.n});
    double* pe = out<double>(eta, "eta", {r.n});
    py::gil_scoped_release release;
    pyglmm::linear_predictor(r, pb, pv, po, pe, nthreads);
  }, "eta = offset + X beta + sum_j b[codes[:, j]] (negative code -> 0), with categoricals.",
     py::arg("X"), py::arg("codes"), py::arg("beta"), py::arg("b"), py::arg("offset"),
     py::arg("eta"), py::arg("nthreads"), py::arg("xcat"));
  crossed.def("stats_pass", [with_cat](int family, py::array X, py::array codes, py::array y,
                                       py::array prior, py::array offset, py::array beta,
                                       py::array b, py::array dbeta, py::array db, bool design,
                                       py::array w, py::array G, py::array h, py::array S,
                                       int nthreads, py::array xcat) {
    auto r = rows(X, codes);
    const double* pbeta = in<double>(beta, "beta", {-1});
    const int64_t T = beta.shape(0), Q = b.ndim() == 1 ? b.shape(0) : -1;
    with_cat(r, xcat, T);
    const double* py_ = in<double>(y, "y", {r.n});
    const double* pp = opt<double>(prior, "prior", {r.n});
    const double* po = opt<double>(offset, "offset", {r.n});
    const double* pb = in<double>(b, "b", {Q});
    const double* pdbeta = in<double>(dbeta, "dbeta", {T});
    const double* pdb = in<double>(db, "db", {Q});
    double* pw = out<double>(w, "w", {r.n});
    double* pG = out<double>(G, "G", {T, T});
    double* ph = out<double>(h, "h", {T});
    double* pS = out<double>(S, "S", {Q, T + 2});
    py::array_t<double> scalars(4);
    double* psc = scalars.mutable_data();
    {
      py::gil_scoped_release release;
      pyglmm::stats_pass(family, r, Q, py_, pp, po, pbeta, pb, pdbeta, pdb, design, pw, pG,
                         ph, pS, psc, nthreads);
    }
    return scalars;
  }, "Fused pass with categoricals; returns [pearson, sum zeta^2, sum dzeta^2, sum (zeta-dzeta)^2].",
     py::arg("family"), py::arg("X"), py::arg("codes"), py::arg("y"), py::arg("prior"),
     py::arg("offset"), py::arg("beta"), py::arg("b"), py::arg("dbeta"), py::arg("db"),
     py::arg("design"), py::arg("w"), py::arg("G"), py::arg("h"), py::arg("S"),
     py::arg("nthreads"), py::arg("xcat"));
  crossed.def("sandwich_pass", [with_cat](py::array X, py::array codes, py::array A, py::array wu,
                                          double scale, py::array wm, py::array H, py::array ZU,
                                          py::array M0, int nthreads, py::array xcat) {
    auto r = rows(X, codes);
    double* pH = out<double>(H, "H", {-1, -1});
    const int64_t T = H.shape(0), Q = ZU.ndim() == 2 ? ZU.shape(0) : -1;
    with_cat(r, xcat, T);
    check<double>(H, "H", {T, T});
    const double* pA = opt<double>(A, "A", {Q, T});
    const double* pwu = in<double>(wu, "wu", {r.n});
    const double* pwm = opt<double>(wm, "wm", {r.n});
    double* pZ = out<double>(ZU, "ZU", {Q, T});
    double* pM = out<double>(M0, "M0", {T, T});
    py::gil_scoped_release release;
    pyglmm::sandwich_pass(r, Q, pA, pwu, scale, pwm, pH, pZ, pM, nthreads);
  }, "H = X'U, ZU = Z'U, M0 = sum wm r r' with r = X - Z A, U = scale * wu * r, with categoricals.",
     py::arg("X"), py::arg("codes"), py::arg("A"), py::arg("wu"), py::arg("scale"), py::arg("wm"),
     py::arg("H"), py::arg("ZU"), py::arg("M0"), py::arg("nthreads"), py::arg("xcat"));
}
