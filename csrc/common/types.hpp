// Types shared by every engine's kernels: the family ids and the row layout.
#pragma once

#include <cstdint>

namespace pyglmm {

// Family ids (as pyglmm/families.py numbers them): a new family goes before
// kNumFamilies, the number of families, which the bindings check ids against.
enum Family : int {
  GAUSSIAN = 0,
  BINOMIAL = 1,
  POISSON = 2,
  kNumFamilies
};

struct Rows {
  int64_t n = 0;
  int64_t p = 0;
  int64_t k = 0;
  const double* X = nullptr;       // n x p
  const int32_t* codes = nullptr;  // n x k
  // Optional categorical fixed effects, kept as codes instead of dummy columns:
  // the fixed-effect columns are X's p dense ones, then pc dummy columns; row i
  // has a 1 in column xcat[i * m + j] (in [p, p + pc)) for each categorical j,
  // or no 1 where that is -1 (its reference level).
  int64_t pc = 0;
  int64_t m = 0;
  const int32_t* xcat = nullptr;  // n x m
};

// The version of the Gram accumulation in use (gram.cpp): "avx2" (AVX2 and FMA,
// chosen at run time where the CPU has them) or "portable".
const char* gram_isa();

}  // namespace pyglmm
