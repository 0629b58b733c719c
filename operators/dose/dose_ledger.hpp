#pragma once
/// The electron dose ledger (docs/science.md §8): how much dose every scan position and the whole run received,
/// against budgets.
///
///   dose per spectrum  D = I·τ/(e·A) [e⁻/Å²] = 6.2415e6 · I[pA] · τ[s] / A[Å²], from the frame's acquisition
///                      parameters (the frame header's, or the series defaults)
///   position dose      Σ of D over the visits of a position (repeated passes, revisits)
///   run dose           Σ of D over every spectrum of the series (the areal dose summed over exposures: with
///                      W·H positions scanned once at D each it is W·H·D)
///   dose rate          D / τ of the latest frame [e⁻/Å²/s], the beam's areal dose rate (docs/science.md §8: some damage has
///                      a dose-rate threshold)
/// Budgets: a per-position and a run budget (0 = none). A position's dose reaching warning_fraction · budget raises
/// a warning alarm, reaching the budget a limit alarm; each once per position and level (and once per level for the
/// run) for a given budget. Alarms name the positions that crossed with the frame that made them cross, and their
/// doses. A new budget (SetBudget) is a new contract: its alarms fire anew, at once for positions already beyond.
///
/// Concurrency: stateful; one thread at a time, frames of one series in order (a serial flow-graph stage).
/// Memory: one double and one byte per scan position.

#include "operators/core/spectrum_batch.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace specwatch {

/// Electrons per pA·s: 1e-12 C/s divided by the elementary charge.
inline constexpr double kElectronsPerPicoampSecond = 1e-12 / 1.602176634e-19;

/// D = I·τ/(e·A) in e⁻/Å²; 0 when any of the three is missing (<= 0 or not finite).
double DosePerSpectrum_e_per_A2(double beam_current_pA, double dwell_s, double pixel_area_A2);

/// Budgets (config section "dose", or per series through the control socket).
struct DoseBudget {
  double position_e_per_A2 = 0.0;  ///< per scan position, over all its visits; 0 = none
  double run_e_per_A2 = 0.0;       ///< the series' run dose; 0 = none
  double warning_fraction = 0.8;   ///< a warning at this fraction of a budget, (0, 1)
  /// Throws ConfigError naming the field ("position_e_per_A2 ..."; operators/core/config_error.hpp).
  void Validate() const;
  bool Any() const { return position_e_per_A2 > 0.0 || run_e_per_A2 > 0.0; }
};

enum class DoseLevel { kWarning, kLimit };
const char* ToString(DoseLevel level);

struct DoseAlarm {
  DoseLevel level = DoseLevel::kWarning;
  bool run = false;                   ///< the run budget; otherwise the position budget
  double budget_e_per_A2 = 0.0;
  double threshold_e_per_A2 = 0.0;    ///< budget, or warning_fraction · budget
  std::vector<ScanPosition> positions;  ///< position alarms: the positions that reached the threshold (x, y; pass
                                        ///< of the visit that made them reach it)
  std::vector<double> doses_e_per_A2;   ///< their doses after that visit
  double run_dose_e_per_A2 = 0.0;     ///< after the frame
};

class DoseLedger {
 public:
  /// A new series: forgets all dose, lays positions out on `shape` (0 x 0: unknown, the run is tracked only).
  void StartSeries(const ScanShape& shape, const DoseBudget& budget);
  /// Lays positions out on `shape` when the series' shape was unknown so far (the run dose is kept); no-op
  /// otherwise.
  void SetShape(const ScanShape& shape);
  /// A new budget for the series (control socket): alarms re-armed; those already due are appended to `alarms`.
  void SetBudget(const DoseBudget& budget, std::vector<DoseAlarm>* alarms);

  /// One frame: `spectra` spectra at `positions` (one per spectrum, or empty when unknown), each receiving
  /// dose_per_spectrum; dwell_s for the dose rate (0: unknown). Alarms raised by the frame are appended.
  /// Positions outside the scan shape count for the run only.
  void AddFrame(uint64_t spectra, std::span<const ScanPosition> positions, double dose_per_spectrum_e_per_A2,
                double dwell_s, std::vector<DoseAlarm>* alarms);

  const ScanShape& shape() const { return shape_; }
  const DoseBudget& budget() const { return budget_; }
  /// Height x width, row-major: each position's dose so far; empty when the shape is unknown.
  const std::vector<double>& position_dose() const { return position_dose_; }
  double run_dose_e_per_A2() const { return run_dose_; }
  double max_position_dose_e_per_A2() const { return max_position_dose_; }
  double dose_rate_e_per_A2_per_s() const { return dose_rate_; }
  double last_dose_per_spectrum_e_per_A2() const { return last_dose_per_spectrum_; }
  uint64_t spectra() const { return spectra_; }
  uint64_t spectra_without_dose() const { return spectra_without_dose_; }  ///< frames with no acquisition data
  uint64_t positions_over_warning() const { return over_warning_; }  ///< of the position budget (0 without one)
  uint64_t positions_over_limit() const { return over_limit_; }
  /// Remaining dose of a position under the position budget (+inf without one; 0 when spent).
  double RemainingAt(uint32_t x, uint32_t y) const;

 private:
  void CheckPosition(size_t index, const ScanPosition& p, std::vector<DoseAlarm>* alarms);
  void CheckRun(std::vector<DoseAlarm>* alarms);
  DoseAlarm& AlarmFor(DoseLevel level, std::vector<DoseAlarm>* alarms, size_t first_of_frame);

  ScanShape shape_;
  DoseBudget budget_;
  std::vector<double> position_dose_;
  std::vector<uint8_t> fired_;  // per position: bit 0 warning, bit 1 limit
  uint8_t run_fired_ = 0;
  double run_dose_ = 0.0;
  double max_position_dose_ = 0.0;
  double dose_rate_ = 0.0;
  double last_dose_per_spectrum_ = 0.0;
  uint64_t spectra_ = 0;
  uint64_t spectra_without_dose_ = 0;
  uint64_t over_warning_ = 0, over_limit_ = 0;
  size_t frame_alarms_begin_ = 0;  // index in the caller's vector of this frame's first alarm
};

}  // namespace specwatch
