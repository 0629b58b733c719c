#pragma once
/// Adaptive-acquisition advice (issue 5): where the microscope should spend its remaining dose. The scan is cut
/// into tiles of tile_px x tile_px positions; each tile gets one of
///   skip      its budget is spent (its most-dosed position cannot take one more visit of the latest dose per
///             spectrum, or the run budget is spent) or beam damage has begun at one of its positions;
///   revisit   something is happening there (a position was flagged novel in this series) and the budget of its
///             most-dosed position still allows a visit at revisit_dose_factor x the latest dose per spectrum:
///             come back at higher dose;
///   continue  otherwise.
/// Skip wins over revisit: no discovery is worth destroying the sample or overrunning the budget.
///
/// Concurrency: stateful; one thread at a time (the in-order stage that owns the dose ledger).

#include "operators/dose/dose_ledger.hpp"
#include "operators/core/spectrum_batch.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace specwatch {

struct AdviceOptions {
  uint32_t tile_px = 8;               ///< tile edge in scan positions (the last row/column of tiles may be smaller)
  double revisit_dose_factor = 2.0;   ///< a revisit is advised at this many times the latest dose per spectrum
  double min_interval_s = 1.0;        ///< advice is published at most this often (and at each scan pass)
  /// Throws ConfigError naming the field ("tile_px ..."; operators/core/config_error.hpp).
  void Validate() const;
};

enum class TileAdvice : uint8_t { kContinue = 0, kRevisit = 1, kSkip = 2 };
const char* ToString(TileAdvice advice);

/// One tile's advice and why.
struct TileVerdict {
  TileAdvice advice = TileAdvice::kContinue;
  std::string reason;               ///< "budget", "run_budget", "damage", "novelty", ""
  uint32_t novel_positions = 0;
  uint32_t damaged_positions = 0;
  double max_dose_e_per_A2 = 0.0;   ///< of its most-dosed position
  double remaining_e_per_A2 = 0.0;  ///< of that position's budget (+inf without a position budget)
};

struct AdviceMap {
  uint32_t tiles_x = 0, tiles_y = 0, tile_px = 0;
  ScanShape shape;
  double revisit_dose_e_per_A2 = 0.0;  ///< the dose per spectrum advised for revisits
  std::vector<TileVerdict> tiles;      ///< tiles_y x tiles_x, row-major
  uint32_t Count(TileAdvice a) const;
};

class AcquisitionAdvisor {
 public:
  explicit AcquisitionAdvisor(AdviceOptions options);  ///< throws ConfigError

  /// A new series: forgets novelty and damage marks; tiles laid out on `shape` (0 x 0: no advice).
  void StartSeries(const ScanShape& shape);
  /// Lays the tiles out when the shape becomes known later (no-op when one is known).
  void SetShape(const ScanShape& shape);
  void MarkNovel(const ScanPosition& p);
  void MarkDamaged(const ScanPosition& p);

  /// The advice now, from the marks and the ledger (same scan shape).
  AdviceMap Advise(const DoseLedger& ledger) const;

  const AdviceOptions& options() const { return options_; }
  const ScanShape& shape() const { return shape_; }

 private:
  size_t TileOf(const ScanPosition& p) const;

  AdviceOptions options_;
  ScanShape shape_;
  uint32_t tiles_x_ = 0, tiles_y_ = 0;
  std::vector<uint8_t> novel_;     // per position
  std::vector<uint8_t> damaged_;   // per position
  std::vector<uint32_t> tile_novel_, tile_damaged_;
};

}  // namespace specwatch
