#include "tools/sim/alias_table.hpp"

#include <cmath>
#include <stdexcept>

namespace specwatch::sim {

AliasTable::AliasTable(std::span<const double> weights) {
  if (weights.empty()) throw std::invalid_argument("AliasTable: no weights");
  size_ = static_cast<uint32_t>(weights.size());
  cells_.assign(size_, Cell{0xFFFFFFFFu, 0});
  total_ = 0.0;
  for (double w : weights) {
    if (!(w >= 0.0) || !std::isfinite(w)) throw std::invalid_argument("AliasTable: negative or non-finite weight");
    total_ += w;
  }
  for (uint32_t i = 0; i < size_; ++i) cells_[i].alias = i;
  if (total_ <= 0.0) return;

  // Vose (1991): scaled probabilities n·p_i; pair each "small" cell with a "large" donor.
  std::vector<double> scaled(size_);
  std::vector<uint32_t> small, large;
  small.reserve(size_);
  large.reserve(size_);
  const double n_over_total = static_cast<double>(size_) / total_;
  for (uint32_t i = 0; i < size_; ++i) {
    scaled[i] = weights[i] * n_over_total;
    (scaled[i] < 1.0 ? small : large).push_back(i);
  }
  auto threshold_of = [](double q) -> uint32_t {
    const double t = std::round(q * 4294967296.0);
    return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
  };
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back();
    small.pop_back();
    const uint32_t l = large.back();
    cells_[s].threshold = threshold_of(scaled[s]);
    cells_[s].alias = l;
    scaled[l] = (scaled[l] + scaled[s]) - 1.0;
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // Leftovers are 1 up to rounding: keep themselves always (alias = self).
  for (uint32_t i : large) cells_[i] = Cell{0xFFFFFFFFu, i};
  for (uint32_t i : small) cells_[i] = Cell{0xFFFFFFFFu, i};
}

double AliasTable::Probability(uint32_t j) const {
  // Exact probability of the draw, including the multiply-shift index mapping: cell i is chosen by
  // ceil((i+1)·2^32/n) − ceil(i·2^32/n) of the 2^32 values of the high word.
  const double two32 = 4294967296.0;
  double p = 0.0;
  for (uint32_t i = 0; i < size_; ++i) {
    const uint64_t lo = ((uint64_t{i} << 32) + size_ - 1) / size_;
    const uint64_t hi = ((uint64_t{i + 1} << 32) + size_ - 1) / size_;
    const double cell = static_cast<double>(hi - lo) / two32;
    const double keep = static_cast<double>(cells_[i].threshold) / two32;
    if (i == j) p += cell * keep;
    if (cells_[i].alias == j) p += cell * (1.0 - keep);
  }
  return p;
}

}  // namespace specwatch::sim
