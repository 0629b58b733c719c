#include "operators/dose/acquisition_advisor.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace specwatch {

void AdviceOptions::Validate() const {
  RequireOption(tile_px >= 1 && tile_px <= 4096, "tile_px", "in [1, 4096]", tile_px);
  RequireOption(revisit_dose_factor >= 1.0 && std::isfinite(revisit_dose_factor), "revisit_dose_factor", ">= 1",
                revisit_dose_factor);
  RequireOption(min_interval_s >= 0.0 && std::isfinite(min_interval_s), "min_interval_s", ">= 0", min_interval_s);
}

const char* ToString(TileAdvice advice) {
  switch (advice) {
    case TileAdvice::kContinue: return "continue";
    case TileAdvice::kRevisit: return "revisit";
    case TileAdvice::kSkip: return "skip";
  }
  return "?";
}

uint32_t AdviceMap::Count(TileAdvice a) const {
  return static_cast<uint32_t>(std::count_if(tiles.begin(), tiles.end(), [a](const TileVerdict& t) { return t.advice == a; }));
}

AcquisitionAdvisor::AcquisitionAdvisor(AdviceOptions options) : options_(options) { options_.Validate(); }

void AcquisitionAdvisor::StartSeries(const ScanShape& shape) {
  shape_ = ScanShape{};
  tiles_x_ = tiles_y_ = 0;
  novel_.clear();
  damaged_.clear();
  tile_novel_.clear();
  tile_damaged_.clear();
  SetShape(shape);
}

void AcquisitionAdvisor::SetShape(const ScanShape& shape) {
  if (shape_.Positions() != 0 || shape.Positions() == 0) return;
  shape_ = shape;
  tiles_x_ = (shape.width + options_.tile_px - 1) / options_.tile_px;
  tiles_y_ = (shape.height + options_.tile_px - 1) / options_.tile_px;
  novel_.assign(shape.Positions(), 0);
  damaged_.assign(shape.Positions(), 0);
  tile_novel_.assign(size_t{tiles_x_} * tiles_y_, 0);
  tile_damaged_.assign(size_t{tiles_x_} * tiles_y_, 0);
}

size_t AcquisitionAdvisor::TileOf(const ScanPosition& p) const {
  return size_t{p.y / options_.tile_px} * tiles_x_ + p.x / options_.tile_px;
}

void AcquisitionAdvisor::MarkNovel(const ScanPosition& p) {
  if (p.x >= shape_.width || p.y >= shape_.height) return;
  uint8_t& m = novel_[size_t{p.y} * shape_.width + p.x];
  if (m) return;
  m = 1;
  ++tile_novel_[TileOf(p)];
}

void AcquisitionAdvisor::MarkDamaged(const ScanPosition& p) {
  if (p.x >= shape_.width || p.y >= shape_.height) return;
  uint8_t& m = damaged_[size_t{p.y} * shape_.width + p.x];
  if (m) return;
  m = 1;
  ++tile_damaged_[TileOf(p)];
}

AdviceMap AcquisitionAdvisor::Advise(const DoseLedger& ledger) const {
  AdviceMap map;
  map.shape = shape_;
  map.tiles_x = tiles_x_;
  map.tiles_y = tiles_y_;
  map.tile_px = options_.tile_px;
  const double visit = ledger.last_dose_per_spectrum_e_per_A2();
  map.revisit_dose_e_per_A2 = options_.revisit_dose_factor * visit;
  map.tiles.resize(size_t{tiles_x_} * tiles_y_);
  const DoseBudget& budget = ledger.budget();
  const bool run_spent = budget.run_e_per_A2 > 0.0 && ledger.run_dose_e_per_A2() + visit > budget.run_e_per_A2;
  const bool dose_known = ledger.shape().width == shape_.width && ledger.shape().height == shape_.height &&
                          !ledger.position_dose().empty();
  for (uint32_t ty = 0; ty < tiles_y_; ++ty) {
    for (uint32_t tx = 0; tx < tiles_x_; ++tx) {
      const size_t t = size_t{ty} * tiles_x_ + tx;
      TileVerdict& v = map.tiles[t];
      v.novel_positions = tile_novel_[t];
      v.damaged_positions = tile_damaged_[t];
      double max_dose = 0.0;
      if (dose_known) {
        const uint32_t x_end = std::min(shape_.width, (tx + 1) * options_.tile_px);
        const uint32_t y_end = std::min(shape_.height, (ty + 1) * options_.tile_px);
        for (uint32_t y = ty * options_.tile_px; y < y_end; ++y) {
          for (uint32_t x = tx * options_.tile_px; x < x_end; ++x) {
            max_dose = std::max(max_dose, ledger.position_dose()[size_t{y} * shape_.width + x]);
          }
        }
      }
      v.max_dose_e_per_A2 = max_dose;
      v.remaining_e_per_A2 = budget.position_e_per_A2 > 0.0 ? std::max(0.0, budget.position_e_per_A2 - max_dose)
                                                            : std::numeric_limits<double>::infinity();
      // "Cannot take one more visit": the remaining budget is below the latest dose per spectrum (with the
      // ledger's reach margin, so a budget of exactly k visits is spent after the k-th).
      const bool spent = budget.position_e_per_A2 > 0.0 && (v.remaining_e_per_A2 < visit * (1.0 - 1e-12) ||
                                                            v.remaining_e_per_A2 <= budget.position_e_per_A2 * 1e-12);
      if (v.damaged_positions > 0) {
        v.advice = TileAdvice::kSkip;
        v.reason = "damage";
      } else if (spent) {
        v.advice = TileAdvice::kSkip;
        v.reason = "budget";
      } else if (run_spent) {
        v.advice = TileAdvice::kSkip;
        v.reason = "run_budget";
      } else if (v.novel_positions > 0 && v.remaining_e_per_A2 >= map.revisit_dose_e_per_A2) {
        v.advice = TileAdvice::kRevisit;
        v.reason = "novelty";
      }
    }
  }
  return map;
}

}  // namespace specwatch
