// Shared inline helpers: row-block threading and the family functions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

#include "kernels.hpp"

namespace pyglmm {

// Rows per thread below which extra threads cost more than they save.
constexpr int64_t kMinRowsPerBlock = 16384;

// Number of row blocks for n rows and a requested thread count.  The numba
// backend uses the same rule (n_blocks in pyglmm/_kernels_numba.py).
inline int64_t n_blocks(int64_t n, int nthreads) {
  int64_t t = std::max<int64_t>(1, nthreads);
  return std::max<int64_t>(1, std::min<int64_t>(t, n / kMinRowsPerBlock));
}

inline int64_t block_begin(int64_t n, int64_t nb, int64_t i) { return n * i / nb; }

// Runs fn(block, begin, end) for each block, one thread per block.  An
// exception in any block (std::bad_alloc, say) is rethrown here after every
// thread has joined, so that it reaches Python instead of terminating it.
template <class F>
void run_blocks(int64_t n, int64_t nb, F&& fn) {
  if (nb == 1) {
    fn(int64_t{0}, int64_t{0}, n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(nb));
  auto guarded = [&](int64_t t) {
    try {
      fn(t, block_begin(n, nb, t), block_begin(n, nb, t + 1));
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nb - 1));
  for (int64_t t = 1; t < nb; ++t) pool.emplace_back(guarded, t);
  guarded(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Logistic function without overflow.
inline double expit(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// The linear predictor is clamped to [-30, 30] inside IRLS (as R's
// binomial()$linkinv does), so V(mu) >= 9.4e-14 and z stays finite.
constexpr double kEtaClamp = 30.0;

struct Irls {
  double mu, var;  // mean and variance function V(mu)
};

inline Irls irls_point(int family, double eta) {
  if (family == BINOMIAL) {
    const double mu = expit(std::min(kEtaClamp, std::max(-kEtaClamp, eta)));
    return {mu, mu * (1.0 - mu)};
  }
  return {eta, 1.0};
}

}  // namespace pyglmm

namespace pyglmm {

// A row block's private per-level accumulator, `width` doubles per level,
// for the levels [lo, hi) of the global level space.  When that range holds
// more than kDenseSlab doubles, the slab covers, for each factor, only the
// levels the block's rows touch (found by a scan of the codes): with rows
// sorted by a factor, blocks touch disjoint ranges of it, so the slabs of all
// blocks together are about one table, not one per thread.
constexpr int64_t kDenseSlab = 1 << 19;

class LevelSlab {
 public:
  // only >= 0 restricts the scan to that factor (whose levels lie in [lo, hi)).
  LevelSlab(const Rows& r, int64_t begin, int64_t end, int64_t width, int64_t only, int64_t lo,
            int64_t hi)
      : width_(width), lo_(r.k, lo), count_(r.k, 0), shift_(r.k, 0) {
    if (width == 0) return;
    const bool dense = (hi - lo) * width <= kDenseSlab;
    if (dense) {
      data_.assign(static_cast<size_t>((hi - lo) * width), 0.0);
      shift_.assign(r.k, lo);
      count_.assign(1, hi - lo);  // one range, added once
      lo_.assign(1, lo);
      bases_.assign(1, 0);
      return;
    }
    std::vector<int64_t> hi_seen(r.k, -1);
    for (int64_t f = 0; f < r.k; ++f) lo_[f] = std::numeric_limits<int64_t>::max();
    for (int64_t i = begin; i < end; ++i)
      for (int64_t f = 0; f < r.k; ++f) {
        if (only >= 0 && f != only) continue;
        const int64_t g = r.codes[i * r.k + f];
        lo_[f] = std::min(lo_[f], g);
        hi_seen[f] = std::max(hi_seen[f], g);
      }
    int64_t total = 0;
    for (int64_t f = 0; f < r.k; ++f) {
      count_[f] = hi_seen[f] >= lo_[f] ? hi_seen[f] - lo_[f] + 1 : 0;
      bases_.push_back(total);
      total += count_[f];
    }
    data_.assign(static_cast<size_t>(total * width), 0.0);
    for (int64_t f = 0; f < r.k; ++f) shift_[f] = count_[f] ? lo_[f] - bases_[f] : 0;
  }
  // The accumulator of level g of factor f (a level the block's rows touch).
  double* at(int64_t f, int64_t g) { return data_.data() + (g - shift_[f]) * width_; }
  // out[(g - shift) * width + c] += this block's sum for level g, column c.
  void add_to(double* out, int64_t shift) const {
    for (size_t f = 0; f < count_.size(); ++f)
      for (int64_t j = 0; j < count_[f]; ++j) {
        const double* src = data_.data() + (bases_[f] + j) * width_;
        double* dst = out + (lo_[f] + j - shift) * width_;
        for (int64_t c = 0; c < width_; ++c) dst[c] += src[c];
      }
  }

 private:
  int64_t width_;
  std::vector<int64_t> lo_, count_, bases_, shift_;  // level g of f sits at row g - shift_[f]
  std::vector<double> data_;
};

// Runs fn(begin, end, acc, slab) on each row block, with a zeroed private
// accumulator of `size` doubles and a LevelSlab of `width` doubles per level
// for the levels [shift, shift + rows) (restricted to factor `only` if >= 0).
// Afterwards, in block order, the accumulators are summed into the returned
// vector and the slabs added into `table` (zeroed first, `rows` x `width`,
// level g at row g - shift).
template <class F>
std::vector<double> reduce_blocks(const Rows& r, int nthreads, size_t size, int64_t width,
                                  double* table, int64_t rows, int64_t shift, int64_t only,
                                  F&& fn) {
  const int64_t nb = n_blocks(r.n, nthreads);
  std::vector<std::vector<double>> acc(static_cast<size_t>(nb));
  std::vector<std::optional<LevelSlab>> slabs(static_cast<size_t>(nb));
  run_blocks(r.n, nb, [&](int64_t t, int64_t begin, int64_t end) {
    acc[t].assign(size, 0.0);
    slabs[t].emplace(r, begin, end, width, only, shift, shift + rows);
    fn(begin, end, acc[t].data(), *slabs[t]);
  });
  std::fill(table, table + rows * width, 0.0);
  for (int64_t t = 0; t < nb; ++t) {
    if (t > 0)
      for (size_t i = 0; i < size; ++i) acc[0][i] += acc[t][i];
    slabs[t]->add_to(table, shift);
  }
  return std::move(acc[0]);
}

// Row tiles for the Gram accumulations: kTile rows are gathered into buffers
// whose rows are padded with zeros to a multiple of 4 columns, and the tile's
// contribution A'B is added in 4 x 4 register blocks: each accumulator
// element is written once per tile, not once per row.
constexpr int64_t kTile = 64;

inline int64_t padded(int64_t p) { return (p + 3) / 4 * 4; }

// out (P x P, P = padded(p)) += A' B over nr rows of the P-wide tile buffers A
// and B; with upper = true only the blocks on or above the diagonal.
inline void gram_tile(int64_t nr, int64_t P, const double* A, const double* B, double* out,
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

// Copies the top-left p x p block of a P x P matrix (row-major) into out.
inline void unpad(int64_t p, int64_t P, const double* in, double* out) {
  for (int64_t j = 0; j < p; ++j)
    for (int64_t l = 0; l < p; ++l) out[j * p + l] = in[j * P + l];
}

// Copies the upper triangle of a p x p row-major matrix into its lower one.
inline void mirror_upper(int64_t p, double* a) {
  for (int64_t j = 0; j < p; ++j)
    for (int64_t l = j + 1; l < p; ++l) a[l * p + j] = a[j * p + l];
}

}  // namespace pyglmm
