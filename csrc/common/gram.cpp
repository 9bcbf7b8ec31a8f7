// The Gram accumulation out += A'B of the row tiles (see common.hpp): most of
// the arithmetic of the fused pass and of the sandwich pass.
//
// Two versions: a portable one in 4 x 4 register blocks, and, on x86-64 with
// GCC or Clang, one in 4 x 8 blocks of AVX2 vectors with fused multiply-adds
// (8 accumulators of 4 doubles: per tile row, 2 vector loads of B and 4
// broadcasts of A feed 8 FMAs).  The choice is made once, from the CPU the
// module runs on, so the wheel needs no special compiler flags;
// PYGLMM_NO_AVX2=1 in the environment forces the portable version (tests).
#include <cstdlib>

#include "common/common.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PYGLMM_GRAM_AVX2 1
#include <immintrin.h>
#endif

namespace pyglmm {
namespace {

void gram_portable(int64_t nr, int64_t P, const double* A, const double* B, double* out,
                   bool upper) {
  for (int64_t jb = 0; jb < P; jb += 4) {
    for (int64_t lb = upper ? jb : 0; lb < P; lb += 4) {
      double acc[4][4] = {};
      for (int64_t r = 0; r < nr; ++r) {
        const double* a = A + r * P + jb;
        const double* b = B + r * P + lb;
        for (int u = 0; u < 4; ++u)
          for (int v = 0; v < 4; ++v) acc[u][v] += a[u] * b[v];
      }
      for (int u = 0; u < 4; ++u)
        for (int v = 0; v < 4; ++v) out[(jb + u) * P + lb + v] += acc[u][v];
    }
  }
}

#ifdef PYGLMM_GRAM_AVX2
__attribute__((target("avx2,fma"))) void gram_avx2(int64_t nr, int64_t P, const double* A,
                                                   const double* B, double* out, bool upper) {
  for (int64_t jb = 0; jb < P; jb += 4) {
    int64_t lb = upper ? jb : 0;
    for (; lb + 8 <= P; lb += 8) {  // 4 x 8 blocks
      __m256d c0 = _mm256_setzero_pd(), c1 = c0, c2 = c0, c3 = c0;
      __m256d d0 = c0, d1 = c0, d2 = c0, d3 = c0;
      for (int64_t r = 0; r < nr; ++r) {
        const double* a = A + r * P + jb;
        const __m256d b0 = _mm256_loadu_pd(B + r * P + lb);
        const __m256d b1 = _mm256_loadu_pd(B + r * P + lb + 4);
        __m256d x = _mm256_broadcast_sd(a);
        c0 = _mm256_fmadd_pd(x, b0, c0);
        d0 = _mm256_fmadd_pd(x, b1, d0);
        x = _mm256_broadcast_sd(a + 1);
        c1 = _mm256_fmadd_pd(x, b0, c1);
        d1 = _mm256_fmadd_pd(x, b1, d1);
        x = _mm256_broadcast_sd(a + 2);
        c2 = _mm256_fmadd_pd(x, b0, c2);
        d2 = _mm256_fmadd_pd(x, b1, d2);
        x = _mm256_broadcast_sd(a + 3);
        c3 = _mm256_fmadd_pd(x, b0, c3);
        d3 = _mm256_fmadd_pd(x, b1, d3);
      }
      const __m256d cs[4] = {c0, c1, c2, c3}, ds[4] = {d0, d1, d2, d3};
      for (int u = 0; u < 4; ++u) {
        double* o = out + (jb + u) * P + lb;
        _mm256_storeu_pd(o, _mm256_add_pd(_mm256_loadu_pd(o), cs[u]));
        _mm256_storeu_pd(o + 4, _mm256_add_pd(_mm256_loadu_pd(o + 4), ds[u]));
      }
    }
    if (lb < P) {  // the last 4 columns: one 4 x 4 block
      __m256d c0 = _mm256_setzero_pd(), c1 = c0, c2 = c0, c3 = c0;
      for (int64_t r = 0; r < nr; ++r) {
        const double* a = A + r * P + jb;
        const __m256d b0 = _mm256_loadu_pd(B + r * P + lb);
        c0 = _mm256_fmadd_pd(_mm256_broadcast_sd(a), b0, c0);
        c1 = _mm256_fmadd_pd(_mm256_broadcast_sd(a + 1), b0, c1);
        c2 = _mm256_fmadd_pd(_mm256_broadcast_sd(a + 2), b0, c2);
        c3 = _mm256_fmadd_pd(_mm256_broadcast_sd(a + 3), b0, c3);
      }
      const __m256d cs[4] = {c0, c1, c2, c3};
      for (int u = 0; u < 4; ++u) {
        double* o = out + (jb + u) * P + lb;
        _mm256_storeu_pd(o, _mm256_add_pd(_mm256_loadu_pd(o), cs[u]));
      }
    }
  }
}
#endif

using GramFn = void (*)(int64_t, int64_t, const double*, const double*, double*, bool);

GramFn pick_gram() {
  const char* off = std::getenv("PYGLMM_NO_AVX2");
  if (off && *off && *off != '0') return gram_portable;
#ifdef PYGLMM_GRAM_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return gram_avx2;
#endif
  return gram_portable;
}

const GramFn gram_impl = pick_gram();

}  // namespace

void gram_tile(int64_t nr, int64_t P, const double* A, const double* B, double* out, bool upper) {
  gram_impl(nr, P, A, B, out, upper);
}

const char* gram_isa() {
#ifdef PYGLMM_GRAM_AVX2
  if (gram_impl == gram_avx2) return "avx2";
#endif
  return "portable";
}

}  // namespace pyglmm
