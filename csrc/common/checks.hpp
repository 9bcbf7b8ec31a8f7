// Scans behind the bindings' argument checks (csrc/bindings.cpp): the ranges
// of integer index arrays (level codes, row orders), read in the kernels' row
// blocks on their threads, so that checking them costs a fraction of a pass.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/common.hpp"

namespace pyglmm {

// One column's entries: the smallest, the smallest non-negative one and the
// largest.  A column with no non-negative entry has hi < 0 (lo is then
// meaningless).
struct ColumnRange {
  int64_t min = std::numeric_limits<int64_t>::max();
  int64_t lo = std::numeric_limits<int64_t>::max();
  int64_t hi = std::numeric_limits<int64_t>::min();
  void add(int64_t mn, int64_t nonneg, int64_t mx) {
    min = std::min(min, mn);
    lo = std::min(lo, nonneg);
    hi = std::max(hi, mx);
  }
};

namespace detail {

// Ranges of the columns of rows [begin, end) of an n x k row-major array.
// When k divides kLanes the rows are read as one flat run in kLanes-wide
// chunks (lane l holds column l % k), a loop the compiler vectorises.
template <class T>
void scan_columns(const T* a, int64_t k, int64_t begin, int64_t end, ColumnRange* out) {
  constexpr int64_t kLanes = 24;  // a multiple of 1, 2, 3, 4, 6, 8 and 12 columns
  constexpr T kTop = std::numeric_limits<T>::max(), kBottom = std::numeric_limits<T>::min();
  const T* p = a + begin * k;
  const int64_t m = (end - begin) * k;
  int64_t i = 0;
  if (kLanes % k == 0 && m >= kLanes) {
    T mn[kLanes], lo[kLanes], hi[kLanes];
    std::fill(mn, mn + kLanes, kTop);
    std::fill(lo, lo + kLanes, kTop);
    std::fill(hi, hi + kLanes, kBottom);
    for (; i + kLanes <= m; i += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) {
        const T v = p[i + l];
        mn[l] = std::min(mn[l], v);
        lo[l] = std::min(lo[l], v < 0 ? kTop : v);
        hi[l] = std::max(hi[l], v);
      }
    for (int64_t l = 0; l < kLanes; ++l) out[l % k].add(mn[l], lo[l], hi[l]);
  }
  for (; i < m; ++i) {  // i is a multiple of k at the start: column i % k
    const T v = p[i];
    out[i % k].add(v, v < 0 ? kTop : v, v);
  }
}

}  // namespace detail

// The range of each column of an n x k row-major integer array, scanned in
// the row blocks of n_blocks(n, nthreads) in parallel.
template <class T>
std::vector<ColumnRange> column_ranges(const T* a, int64_t n, int64_t k, int nthreads) {
  const int64_t nb = n_blocks(n, nthreads);
  std::vector<std::vector<ColumnRange>> parts(static_cast<size_t>(nb),
                                              std::vector<ColumnRange>(static_cast<size_t>(k)));
  if (k > 0)
    run_blocks(n, nb, [&](int64_t t, int64_t begin, int64_t end) {
      detail::scan_columns(a, k, begin, end, parts[t].data());
    });
  std::vector<ColumnRange> out(static_cast<size_t>(k));
  for (const auto& part : parts)
    for (int64_t j = 0; j < k; ++j) out[j].add(part[j].min, part[j].lo, part[j].hi);
  return out;
}

}  // namespace pyglmm
