// Shared inline helpers: row-block threading and the family functions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include "common/pool.hpp"
#include "common/types.hpp"

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

// Runs fn(block, begin, end) for each block, one thread per block (the
// persistent pool's, or fresh ones if the pool is busy).  An exception in any
// block (std::bad_alloc, say) is rethrown here after every block has finished,
// so that it reaches Python instead of terminating it.
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
  auto task = [](void* ctx, int64_t t) { (*static_cast<decltype(guarded)*>(ctx))(t); };
  if (!pool_run(nb, task, &guarded)) {
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(nb - 1));
    int64_t t = 1;
    try {
      for (; t < nb; ++t) threads.emplace_back(guarded, t);
    } catch (const std::system_error&) {  // no more threads: this one runs the rest
    }
    for (int64_t rest = t; rest < nb; ++rest) guarded(rest);
    guarded(0);
    for (auto& th : threads) th.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Logistic function without overflow.
inline double expit(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// The linear predictor is clamped inside IRLS so that the working weights and
// responses stay finite (pyglmm/families.py documents the same clamps):
// binomial |eta| <= 30 (as R's binomial()$linkinv), so V(mu) >= 9.4e-14;
// poisson mu = max(exp(min(eta, 100)), DBL_EPSILON): the floor is R's
// poisson()$linkinv, the ceiling (mu <= 2.7e43) acts only on a diverging
// iterate, far above any count a double holds exactly and far below overflow.
constexpr double kEtaClamp = 30.0;
constexpr double kPoissonEtaMax = 100.0;

struct Irls {
  double mu, var;  // mean and variance function V(mu)
};

inline Irls irls_point(int family, double eta) {
  if (family == BINOMIAL) {
    const double mu = expit(std::min(kEtaClamp, std::max(-kEtaClamp, eta)));
    return {mu, mu * (1.0 - mu)};
  }
  if (family == POISSON) {
    const double mu = std::max(std::exp(std::min(kPoissonEtaMax, eta)),
                               std::numeric_limits<double>::epsilon());
    return {mu, mu};
  }
  return {eta, 1.0};
}

// Unit deviance (0 log 0 = 0): (y - mu)^2 (gaussian);
// 2 [y log(y/mu) + (1-y) log((1-y)/(1-mu))] (binomial, y a proportion);
// 2 [y log(y/mu) - (y - mu)] (poisson).
inline double unit_deviance(int family, double y, double mu) {
  if (family == BINOMIAL) {
    double d = 0.0;
    if (y > 0.0) d += y * std::log(y / mu);
    if (y < 1.0) d += (1.0 - y) * std::log((1.0 - y) / (1.0 - mu));
    return 2.0 * d;
  }
  if (family == POISSON) return 2.0 * ((y > 0.0 ? y * std::log(y / mu) : 0.0) - (y - mu));
  return (y - mu) * (y - mu);
}

}  // namespace pyglmm

namespace pyglmm {

// Per-level sums over row blocks.  A kernel adds row i's terms to the
// accumulator of each of its levels; every block gets a LevelSlab that says
// where that accumulator is, and reduce_blocks combines the blocks.
//
// A small level space (at most kDenseSlab doubles) gets one private copy per
// block.  A large one is first scanned: the range of levels each block
// touches, per factor.  When rows are sorted by a factor, the blocks' ranges
// of it follow one another and overlap at most at their ends: such a factor
// is accumulated straight into the shared output table, except for a
// block's first level when the block before touches it too, which stays
// private: every level has one block that writes it directly, the first one
// touching it.  Any other factor gets a private slab over the block's range.
// Each level's sum is thus formed in row order within a block and the private
// parts are added in block order, so results do not depend on the path.
constexpr int64_t kDenseSlab = 1 << 19;

struct Span {  // the levels [lo, hi] of one factor that a block's rows touch
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = -1;
};

// Spans of each factor (only `only` if >= 0) over rows [begin, end).
inline std::vector<Span> scan_spans(const Rows& r, int64_t begin, int64_t end, int64_t only) {
  std::vector<Span> spans(static_cast<size_t>(r.k));
  for (int64_t f = 0; f < r.k; ++f) {
    if (only >= 0 && f != only) continue;
    Span& s = spans[f];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = r.codes[i * r.k + f];
      s.lo = std::min(s.lo, g);
      s.hi = std::max(s.hi, g);
    }
  }
  return spans;
}

class LevelSlab {
 public:
  // A private slab for all levels [lo, hi).
  LevelSlab(int64_t k, int64_t width, int64_t lo, int64_t hi)
      : width_(width), slots_(static_cast<size_t>(k)) {
    for (Slot& s : slots_) s.lo = lo;
    add_private(lo, hi - lo);
    data_.assign(static_cast<size_t>(rows_ * width_), 0.0);
  }
  // Per factor f: straight into `table` (level g at row g - shift) if direct[f],
  // except the first level of own[f] if shared[f] (the block before touches
  // it), which is kept private; else a private slab over own[f].
  LevelSlab(int64_t width, const std::vector<Span>& own, const std::vector<char>& direct,
            const std::vector<char>& shared, double* table, int64_t shift)
      : width_(width), slots_(own.size()), table_(table), shift_(shift) {
    for (size_t f = 0; f < own.size(); ++f) {
      const Span& sp = own[f];
      Slot& s = slots_[f];
      if (sp.hi < sp.lo) continue;  // factor not used by this kernel
      s.lo = sp.lo;
      if (!direct[f]) {
        s.base = add_private(sp.lo, sp.hi - sp.lo + 1);
        continue;
      }
      s.direct = true;
      if (shared[f]) {
        s.first = sp.lo;
        s.base = add_private(sp.lo, 1);
      }
    }
    data_.assign(static_cast<size_t>(rows_ * width_), 0.0);
  }
  // The accumulator of level g of factor f (a level this block's rows touch).
  double* at(int64_t f, int64_t g) {
    const Slot& s = slots_[f];
    if (s.direct) return g == s.first ? data_.data() + s.base * width_ : table_ + (g - shift_) * width_;
    return data_.data() + (s.base + g - s.lo) * width_;
  }
  // out[(g - shift) * width + c] += this block's private sum for level g, column c.
  void add_to(double* out, int64_t shift) const {
    for (const Range& rg : private_)
      for (int64_t j = 0; j < rg.count; ++j) {
        const double* src = data_.data() + (rg.base + j) * width_;
        double* dst = out + (rg.lo + j - shift) * width_;
        for (int64_t c = 0; c < width_; ++c) dst[c] += src[c];
      }
  }

 private:
  struct Slot {
    bool direct = false;
    int64_t lo = 0, base = 0;  // private: level g at row base + g - lo
    int64_t first = -1;        // direct: the private first level (at row base), if any
  };
  struct Range {
    int64_t lo, count, base;
  };
  int64_t add_private(int64_t lo, int64_t count) {
    private_.push_back({lo, count, rows_});
    rows_ += count;
    return rows_ - count;
  }
  int64_t width_;
  std::vector<Slot> slots_;
  double* table_ = nullptr;
  int64_t shift_ = 0, rows_ = 0;
  std::vector<Range> private_;
  std::vector<double> data_;
};

// Runs fn(begin, end, acc, slab) on each row block, with a zeroed private
// accumulator of `size` doubles and a LevelSlab of `width` doubles per level
// for the levels [shift, shift + rows) (restricted to factor `only` if >= 0).
// Afterwards, in block order, the accumulators are summed into the returned
// vector and the slabs' private parts added into `table` (`rows` x `width`,
// level g at row g - shift, zeroed by this function).
template <class F>
std::vector<double> reduce_blocks(const Rows& r, int nthreads, size_t size, int64_t width,
                                  double* table, int64_t rows, int64_t shift, int64_t only,
                                  F&& fn) {
  const int64_t nb = n_blocks(r.n, nthreads);
  std::vector<std::vector<double>> acc(static_cast<size_t>(nb));
  std::vector<std::optional<LevelSlab>> slabs(static_cast<size_t>(nb));
  const bool dense = width == 0 || rows * width <= kDenseSlab;
  std::vector<std::vector<Span>> spans(static_cast<size_t>(nb));
  if (dense) {
    std::fill(table, table + rows * width, 0.0);
  } else {  // scan the spans and zero the table, in parallel
    run_blocks(r.n, nb, [&](int64_t t, int64_t begin, int64_t end) {
      spans[t] = scan_spans(r, begin, end, only);
      std::fill(table + block_begin(rows, nb, t) * width,
                table + block_begin(rows, nb, t + 1) * width, 0.0);
    });
  }
  // A factor goes straight into the table when its spans follow block order.
  std::vector<char> direct(static_cast<size_t>(r.k), !dense);
  for (int64_t f = 0; f < r.k && !dense; ++f)
    for (int64_t t = 0; t + 1 < nb; ++t)
      if (spans[t][f].hi > spans[t + 1][f].lo) direct[f] = 0;
  run_blocks(r.n, nb, [&](int64_t t, int64_t begin, int64_t end) {
    acc[t].assign(size, 0.0);
    if (dense) {
      slabs[t].emplace(r.k, width, shift, shift + rows);
    } else {
      std::vector<char> shared(static_cast<size_t>(r.k));
      for (int64_t f = 0; f < r.k; ++f) shared[f] = t > 0 && spans[t - 1][f].hi == spans[t][f].lo;
      slabs[t].emplace(width, spans[t], direct, shared, table, shift);
    }
    fn(begin, end, acc[t].data(), *slabs[t]);
  });
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
// and B; with upper = true only the 4 x 4 blocks on or above the diagonal are
// exact (the others may be partly accumulated and must not be read).  Defined
// in gram.cpp, which picks an AVX2/FMA version at run time where the CPU has it.
void gram_tile(int64_t nr, int64_t P, const double* A, const double* B, double* out, bool upper);

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
