// Argument checks of the bindings (csrc/bindings.cpp, the one file that includes this):
// dtype, C-contiguity, shape and writeability of arrays, level codes and offsets, cluster
// starts, family ids, thread counts, finite and positive scalars.  Each failure raises
// ValueError naming the argument (and the row, column or position at fault).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/checks.hpp"
#include "crossed/kernels.hpp"

namespace py = pybind11;

namespace {

using Shape = std::vector<int64_t>;  // -1 matches any extent
using std::to_string;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw std::invalid_argument(name + ": " + what);
}

std::string num(double v) {  // 6 significant digits: 1e-300, not 0.000000
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string shape_str(const Shape& shape) {
  std::string out = "(";
  for (size_t d = 0; d < shape.size(); ++d)
    out += (d ? ", " : "") + (shape[d] < 0 ? std::string("any") : to_string(shape[d]));
  return out + (shape.size() == 1 ? ",)" : ")");
}

template <class T>
void check(const py::array& a, const char* name, const Shape& shape) {
  if (!a.dtype().equal(py::dtype::of<T>()))  // equal, not is: unpickled arrays have their own dtype objects
    fail(name, "wrong dtype " + std::string(py::str(a.dtype())) + ", expected " +
                   std::string(py::str(py::dtype::of<T>())));
  if (!(a.flags() & py::array::c_style)) fail(name, "array must be C-contiguous");
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
  if (!ok) {
    const Shape got(a.shape(), a.shape() + a.ndim());
    fail(name, "wrong shape " + shape_str(got) + ", expected " + shape_str(shape));
  }
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
  if (!a.writeable()) fail(name, "array is read-only");
  return static_cast<T*>(a.mutable_data());
}

int threads(int nthreads) {
  if (nthreads < 1) fail("nthreads", "must be at least 1, got " + to_string(nthreads));
  return nthreads;
}

int family_id(int family) {
  if (family < 0 || family >= pyglmm::kNumFamilies)
    fail("family", "unknown family id " + to_string(family) + " (ids are 0 to " +
                       to_string(pyglmm::kNumFamilies - 1) + ")");
  return family;
}

double finite(double v, const char* name) {
  if (!std::isfinite(v)) fail(name, "must be finite, got " + num(v));
  return v;
}

double nonnegative(double v, const char* name) {
  if (!(finite(v, name) >= 0.0)) fail(name, "must be non-negative, got " + num(v));
  return v;
}

// Entries that the kernels divide by must be positive and finite.
bool positive(double v) { return v > 0.0 && std::isfinite(v); }

void check_positive(const double* v, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    if (!positive(v[i]))
      fail(name, "entry " + to_string(i) + " is " + num(v[i]) + ", expected positive and finite");
}

// chol (k, p, p): lower Cholesky factors, one per factor, with a positive diagonal.
void check_cholesky(const double* chol, int64_t k, int64_t p) {
  for (int64_t f = 0; f < k; ++f)
    for (int64_t l = 0; l < p; ++l)
      if (!positive(chol[(f * p + l) * p + l]))
        fail("chol", "factor " + to_string(f) + "'s Cholesky factor has diagonal entry " + to_string(l) +
                         " = " + num(chol[(f * p + l) * p + l]) + ", expected positive and finite");
}

// offsets (k + 1,): 0 = offsets[0] <= ... <= offsets[k] = Q (the length of `of`).
const int64_t* offsets_of(const py::array& offsets, int64_t k, int64_t Q, const char* of) {
  const int64_t* o = in<int64_t>(offsets, "offsets", {k + 1});
  if (o[0] != 0) fail("offsets", "must start at 0, got " + to_string(o[0]));
  for (int64_t j = 0; j < k; ++j)
    if (o[j + 1] < o[j])
      fail("offsets", "decrease at position " + to_string(j + 1) + " (" + to_string(o[j]) + " then " +
                          to_string(o[j + 1]) + ")");
  if (o[k] != Q)
    fail("offsets", "must end at the number of levels Q = len(" + std::string(of) + ") = " +
                        to_string(Q) + ", got " + to_string(o[k]));
  return o;
}

// The level ids column j of the codes may hold: [lo, hi), spelt `what`.
struct Bounds {
  int64_t lo, hi;
  std::string what;
};

std::vector<Bounds> same_bounds(int64_t k, int64_t Q, const std::string& what) {
  return std::vector<Bounds>(static_cast<size_t>(k), Bounds{0, Q, what});
}

std::vector<Bounds> factor_bounds(int64_t k, const int64_t* offsets) {
  std::vector<Bounds> b;
  for (int64_t j = 0; j < k; ++j)
    b.push_back({offsets[j], offsets[j + 1], "factor " + to_string(j) + "'s levels [offsets[" +
                                                 to_string(j) + "], offsets[" + to_string(j + 1) + "])"});
  return b;
}

// Level codes as kernels.hpp defines them: column j holds ids within bounds[j]
// (and -1, an unseen level, if `unseen`), and the columns' ranges of ids come
// in column order without overlap (each factor has its own levels).
void check_codes(const pyglmm::Rows& r, const std::vector<Bounds>& bounds, bool unseen,
                 int nthreads) {
  std::vector<pyglmm::ColumnRange> range;
  {
    py::gil_scoped_release release;
    range = pyglmm::column_ranges(r.codes, r.n, r.k, nthreads);
  }
  // Names the first row whose entry in column j is bad (the error path only).
  auto at_fault = [&](int64_t j, auto bad, const std::string& why) {
    for (int64_t i = 0; i < r.n; ++i) {
      const int64_t v = r.codes[i * r.k + j];
      if (bad(v))
        fail("codes", "row " + to_string(i) + ", column " + to_string(j) + " holds " + to_string(v) +
                          ": " + why);
    }
  };
  const int64_t floor = unseen ? -1 : 0;
  int64_t before = -1, prev = -1;  // the highest id of the columns so far, and its column
  for (int64_t j = 0; j < r.k; ++j) {
    const auto& c = range[j];
    const Bounds& b = bounds[j];
    if (c.min < floor)
      at_fault(j, [&](int64_t v) { return v < floor; },
               unseen ? "level ids are >= 0, or -1 for an unseen level" : "level ids are >= 0");
    if (c.hi < 0) continue;  // no level id in this column
    if (c.lo < b.lo || c.hi >= b.hi)
      at_fault(j, [&](int64_t v) { return v >= 0 && (v < b.lo || v >= b.hi); },
               "outside " + b.what + " = [" + to_string(b.lo) + ", " + to_string(b.hi) + ")");
    if (c.lo <= before)
      fail("codes", "columns " + to_string(prev) + " and " + to_string(j) +
                        " share level ids (column " + to_string(prev) + " reaches " + to_string(before) +
                        ", column " + to_string(j) + " starts at " + to_string(c.lo) +
                        "): each factor's ids must follow the previous factor's");
    before = c.hi;
    prev = j;
  }
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

// Categorical fixed effects kept as codes (Rows::xcat, optional): xcat is (n, m)
// int32 holding, per row and categorical, its dummy column id in [p, T) or -1
// (the reference level); T = all fixed-effect columns, read from `T` (beta's or
// H's extent).  Returns T; without xcat (None) T = p.
int64_t categoricals(pyglmm::Rows& r, const py::object& xcat, int64_t T) {
  if (xcat.is_none()) return r.p;
  const py::array a = py::array::ensure(xcat);
  if (!a) fail("xcat", "must be an array of int32 or None");
  r.xcat = in<int32_t>(a, "xcat", {r.n, -1});
  r.m = a.shape(1);
  if (T < r.p || (r.m == 0 && T != r.p))
    fail("xcat", to_string(T - r.p) + " dummy columns for " + to_string(r.m) + " categoricals");
  r.pc = T - r.p;
  for (int64_t i = 0; i < r.n * r.m; ++i)
    if (r.xcat[i] != -1 && (r.xcat[i] < r.p || r.xcat[i] >= T))
      fail("xcat", "row " + to_string(i / r.m) + ", column " + to_string(i % r.m) + " holds " +
                       to_string(r.xcat[i]) + ": outside the dummy columns [" + to_string(r.p) +
                       ", " + to_string(T) + ") or -1");
  return T;
}

void check_finite(const double* v, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) fail(name, "entry " + to_string(i) + " is " + num(v[i]) + ", expected finite");
}

// starts (m + 1,): 0 = starts[0] <= ... <= starts[m] = n (cluster c owns rows [starts[c], starts[c+1])).
const int64_t* starts_of(const py::array& starts, int64_t n) {
  const int64_t* s = in<int64_t>(starts, "starts", {-1});
  const int64_t m = starts.shape(0) - 1;
  if (m < 0) fail("starts", "must hold at least one entry (0)");
  if (s[0] != 0) fail("starts", "must start at 0, got " + to_string(s[0]));
  for (int64_t c = 0; c < m; ++c)
    if (s[c + 1] < s[c])
      fail("starts", "decrease at position " + to_string(c + 1) + " (" + to_string(s[c]) + " then " +
                         to_string(s[c + 1]) + ")");
  if (s[m] != n) fail("starts", "must end at the number of rows n = " + to_string(n) + ", got " + to_string(s[m]));
  return s;
}

pyglmm::Rows codes_only(const py::array& codes) {
  pyglmm::Rows r;
  r.codes = in<int32_t>(codes, "codes", {-1, -1});
  r.n = codes.shape(0);
  r.k = codes.shape(1);
  return r;
}

}  // namespace
