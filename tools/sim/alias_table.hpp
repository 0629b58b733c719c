#pragma once
/// Walker's alias method (Vose's construction): O(1) draws of a channel index with probability
/// proportional to a non-negative weight vector. The simulator distributes the N ~ Poisson(λ) counts of
/// one phase over the channels with it, which makes every channel exactly Poisson(λ·p_j) and the channels
/// independent (Poisson splitting). Immutable after construction: safe to draw from on many threads,
/// each with its own Rng.

#include "tools/sim/random.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace specwatch::sim {

class AliasTable {
 public:
  AliasTable() = default;
  /// `weights` >= 0, not all zero (all zero gives a table that Total() reports as 0; do not draw from it).
  explicit AliasTable(std::span<const double> weights);

  /// One channel index. Probabilities are quantised to 32 bits (relative error < 2^-32 per cell).
  uint32_t Draw(Rng& rng) const {
    const uint64_t r = rng.Next();
    const auto i = static_cast<uint32_t>(((r >> 32) * size_) >> 32);
    const Cell& c = cells_[i];
    return static_cast<uint32_t>(r) < c.threshold ? i : c.alias;
  }
  /// Adds `n` draws into `histogram` (size() entries). Same draws as n calls of Draw().
  void DrawInto(Rng& rng, uint64_t n, uint32_t* histogram) const {
    const Cell* cells = cells_.data();
    const uint64_t size = size_;
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t r = rng.Next();
      const auto i = static_cast<uint32_t>(((r >> 32) * size) >> 32);
      const Cell c = cells[i];
      // Branch-free select: the keep/alias outcome is random, a branch would mispredict often.
      const uint32_t keep = 0u - static_cast<uint32_t>(static_cast<uint32_t>(r) < c.threshold);
      ++histogram[(i & keep) | (c.alias & ~keep)];
    }
  }
  /// As DrawInto, alternating the draws between two histograms: consecutive hits on one channel (a
  /// zero-loss peak, a strong line) then do not wait on each other's increment. Same draws in the same
  /// order; the caller adds `h1` into `h0` afterwards.
  void DrawInto2(Rng& rng, uint64_t n, uint32_t* h0, uint32_t* h1) const {
    const Cell* cells = cells_.data();
    const uint64_t size = size_;
    uint64_t k = 0;
    for (; k + 1 < n; k += 2) {
      const uint64_t r0 = rng.Next();
      const uint64_t r1 = rng.Next();
      const auto i0 = static_cast<uint32_t>(((r0 >> 32) * size) >> 32);
      const auto i1 = static_cast<uint32_t>(((r1 >> 32) * size) >> 32);
      const Cell c0 = cells[i0];
      const Cell c1 = cells[i1];
      const uint32_t keep0 = 0u - static_cast<uint32_t>(static_cast<uint32_t>(r0) < c0.threshold);
      const uint32_t keep1 = 0u - static_cast<uint32_t>(static_cast<uint32_t>(r1) < c1.threshold);
      ++h0[(i0 & keep0) | (c0.alias & ~keep0)];
      ++h1[(i1 & keep1) | (c1.alias & ~keep1)];
    }
    if (k < n) DrawInto(rng, 1, h0);
  }
  uint32_t size() const { return size_; }
  /// Sum of the weights the table was built from.
  double Total() const { return total_; }
  /// The probability the table actually draws channel j with (after quantisation), for tests.
  double Probability(uint32_t j) const;

 private:
  struct Cell {
    uint32_t threshold;  ///< keep i when the low 32 random bits are below this; 2^32-1 ~ "always"
    uint32_t alias;
  };
  std::vector<Cell> cells_;
  uint32_t size_ = 0;
  double total_ = 0.0;
};

}  // namespace specwatch::sim
