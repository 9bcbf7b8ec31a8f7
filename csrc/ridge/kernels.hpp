// Kernels of the ridge LMM engine (pyglmm/engines/ridge): per-group reductions
// and batched small SPD solves.  Twins: pyglmm/engines/ridge/kernels_numba.py and
// kernels_numpy.py (the reference).  Plain C++17 on raw row-major float64 arrays;
// the bindings (csrc/bindings.cpp, submodule _core.ridge) check every argument.
#pragma once

#include <cstdint>

namespace pyglmm {
namespace ridge {

// Rows sorted by group: group i owns rows [offsets[i], offsets[i+1]) (offsets
// non-decreasing, offsets[0] = 0, offsets[m] = n).  Writes, per group,
// ZtZ[i] = Z_i'Z_i (q x q), ZtD[i] = Z_i'D_i (q x p), Zty[i] = Z_i'y_i (q);
// Z is n x q, D n x p, y n.  Groups are split over nthreads threads; each
// writes only its own groups, so results do not depend on the thread count.
void group_reductions(int64_t m, const int64_t* offsets, int64_t q, int64_t p, const double* Z,
                      const double* D, const double* y, double* ZtZ, double* ZtD, double* Zty,
                      int nthreads);

// For every i < m: Cholesky M_i = L L' of the symmetric q x q M[i] (lower
// triangle read) and X[i] = M_i^{-1} R[i] (R: m x q x k); logdet[i] = log|M_i|.
// Where M_i is not positive definite: logdet[i] = NaN and X[i] = 0.
void batched_spd_solve(int64_t m, int64_t q, int64_t k, const double* M, const double* R,
                       double* X, double* logdet, int nthreads);

}  // namespace ridge
}  // namespace pyglmm
