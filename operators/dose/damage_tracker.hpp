#pragma once
/// Beam-damage detection (docs/science.md §9): does a position's spectrum change with the dose it received?
///
/// The first visit's spectrum is kept at full resolution for the positions of a regular subgrid of the scan (at most
/// max_positions of them: damage acts everywhere the beam went, so a sample of positions measures it, in bounded
/// memory). Every later visit y of a tracked position is compared with that first visit x:
/// 1. Alignment: an energy-axis drift moves every line between visits, which is not damage. The integer lag
///    L minimising the full-resolution Σ_j (y_{j+L} − x_j)² / (x_j + y_{j+L}) is taken, searched within ±2 channels
///    of the lag most chosen in the visit group so far (drift moves slowly; |L| <= max_lag), and y read shifted
///    back by L: counts are moved, never interpolated. (Chosen from the data, the lag lowers χ² a little where
///    nothing moved: the statistic errs towards no damage.)
/// 2. Both are binned to `bins` energy bins (counts summed) and compared bin by bin, relative to the Poisson floor
///    of those very counts:
///   χ² = Σ_b (y_b − x_b)² / (x_b + y_b)    over the bins with x_b + y_b > 0 (B_eff of them)
/// For independent Poisson counts of equal means, E[(Y − X)²/(X + Y) | X + Y > 0] = 1 exactly, so χ² − B_eff has
/// mean 0 with no model and at any dose. (y is first scaled by the ratio of the two visits' doses, a known
/// acquisition parameter, when they differ.) The sub-channel remainder δ of a drift moves counts across the bins'
/// edges: to second order Δ_b ≈ −δ·g1_b + δ²/2·g2_b, g1 the difference of s = x + y at the bin's two edges and g2
/// that of its slope (s at full resolution; uncorrelated with y − x when nothing changed). The part of χ² in
/// span(g1, g2) (metric 1/s) is removed per position: the remaining excess
///   Y = χ² − explained − (B_eff − 2)
/// is spectral change that is not a shift: damage (drift follows time and is a shift; damage follows dose and
/// changes line and edge intensities).
///
/// Visits are grouped by visit number v (the v-th revisit of each position, v >= 1). For each group the mean Ȳ_v
/// over positions, with its standard error, and the mean dose windows of the first and the v-th visit are kept.
/// Damage S(D) = S∞ + (S₀ − S∞)·exp(−D/D_c) recorded over a visit from dose a to a + d is the dwell average
/// S∞ + w·(S₀ − S∞), w(a, d) = (D_c/d)(e^{−a/D_c} − e^{−(a+d)/D_c}); so Ȳ_v = K·(w_first − w_v)².
/// - Detection: a group of at least min_group positions (or all tracked ones, when fewer: a fixed spot, a small
///   dose series) whose Ȳ_v exceeds detect_sigma times its standard error
///   under no change, sqrt(2(B_eff − 2)/N_v): a damage warning (once per series).
/// - Critical dose: D_c fitted by profiling over a log grid (K in closed form for each D_c, weighted least
///   squares with the groups' empirical standard errors); its ±1σ interval from Δχ² = 1 times the reduced χ² when
///   that exceeds 1 (an open end when the data do not bound it: only the start of the damage seen).
/// - Affected positions: those whose own standardised excess (χ² − ...)/sqrt(2(B_eff − 2)) passes
///   position_sigma at a revisit.
/// - Energies that changed: per bin, the mean over a group's positions of (y_b − x_b)/sqrt(x_b + y_b); the bins
///   of the latest large group with the largest |mean| · sqrt(N).
///
/// Concurrency: stateful; one thread at a time, spectra of one series in order (a serial stage).
/// Memory: channels floats per tracked position (first visits), plus O(bins) per visit group.

#include "operators/core/spectrum_batch.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace specwatch {

struct DamageOptions {
  bool enabled = true;
  int bins = 128;               ///< energy bins of the comparison (at most the channel count)
  int max_lag = 8;              ///< channels searched for the alignment of a revisit with its first visit
  uint32_t min_group = 512;     ///< revisits of one visit number before it can raise a warning
  double detect_sigma = 6.0;    ///< warning when a group's mean excess passes this many standard errors
  double position_sigma = 5.0;  ///< a position is affected when its own excess passes this
  uint64_t max_positions = 2048;  ///< positions tracked (a regular subgrid; memory: channels floats each)
  /// Throws ConfigError naming the field ("bins ..."; operators/core/config_error.hpp).
  void Validate() const;
};

/// One visit group (the v-th revisit of each position).
struct DamageGroup {
  uint32_t visit = 0;               ///< v >= 1
  uint64_t positions = 0;           ///< N_v
  double mean_excess = 0.0;         ///< Ȳ_v
  double standard_error = 0.0;      ///< empirical, of Ȳ_v
  double null_standard_error = 0.0; ///< sqrt(2 (B_eff − 2) / N_v): what no change gives
  double z = 0.0;                   ///< Ȳ_v / null_standard_error
  double first_dose_start = 0.0, first_dose_width = 0.0;  ///< mean dose window of the first visits, e-/A^2
  double dose_start = 0.0, dose_width = 0.0;              ///< ... of the v-th revisits
};

struct ChangedEnergy {
  int bin = 0;
  int first_channel = 0, last_channel = 0;  ///< channels of the bin
  double mean_change_sd = 0.0;  ///< mean over positions of (y − x)/sqrt(x + y): < 0 intensity lost, > 0 gained
  double z = 0.0;               ///< mean_change_sd · sqrt(N)
};

struct CriticalDoseFit {
  bool ok = false;
  double critical_dose_e_per_A2 = 0.0;
  double lower_e_per_A2 = 0.0;   ///< ±1σ interval (Δχ² = 1)
  double upper_e_per_A2 = 0.0;   ///< +inf: not bounded above by the data (only the onset of damage seen)
  double amplitude = 0.0;        ///< K: the mean excess at complete damage
  double chi2 = 0.0;
  int groups = 0;
};

struct DamageReport {
  bool warning = false;          ///< the first detection of the series (else an update of the fit)
  DamageGroup group;             ///< the group that raised it (warning) or the latest large one (update)
  CriticalDoseFit fit;
  std::vector<ChangedEnergy> energies;  ///< strongest first
  uint64_t affected_positions = 0;
  std::vector<ScanPosition> affected;   ///< newly affected since the last report (x, y, the visit's pass)
};

class DamageTracker {
 public:
  explicit DamageTracker(DamageOptions options);  ///< throws ConfigError

  /// A new series: forgets everything; `shape` 0 x 0 or too large: not tracked.
  void StartSeries(const ScanShape& shape, int channels);
  /// Lays positions out when the shape becomes known later (no-op when one is known).
  void SetShape(const ScanShape& shape, int channels);

  /// One spectrum: its position, counts (channels), the dose its position had received before this visit and
  /// the dose of this visit. Returns a warning report when this spectrum made a group pass the detection.
  std::optional<DamageReport> Add(const ScanPosition& position, const Eigen::Ref<const Eigen::VectorXf>& counts,
                                  double dose_before_e_per_A2, double dose_visit_e_per_A2);
  /// The fit and the state now (an update report; warning false). Call at the end of a pass.
  DamageReport Report(size_t max_energies = 8);

  bool tracking() const { return !first_.empty(); }
  uint32_t stride() const { return stride_; }  ///< tracked positions: x and y multiples of it
  bool warned() const { return warned_; }
  const std::vector<DamageGroup>& groups() const;  ///< by visit number, index v − 1
  uint64_t affected_positions() const { return affected_count_; }

 private:
  struct Accumulator {
    uint64_t n = 0;
    double sum = 0, sum_sq = 0, sum_beff = 0;
    double first_a = 0, first_d = 0, a = 0, d = 0;
    Eigen::VectorXd change;  // per bin: Σ (y − x)/sqrt(x + y)
    std::vector<uint32_t> lags;  // how often each lag −max_lag..max_lag was chosen
  };
  void Bin(const float* counts, int first_channel, int last_channel, Eigen::VectorXf* out) const;
  int Align(const float* x, const Eigen::Ref<const Eigen::VectorXf>& y, int centre);
  DamageGroup Summarise(uint32_t visit, const Accumulator& a) const;
  CriticalDoseFit Fit() const;
  std::vector<ChangedEnergy> Energies(size_t max) const;

  DamageOptions options_;
  ScanShape shape_;
  int channels_ = 0;
  int bins_ = 0;
  uint32_t stride_ = 1;
  uint32_t tracked_w_ = 0, tracked_h_ = 0;
  std::vector<float> first_;          // tracked positions x channels
  std::vector<float> first_dose_;     // per position: the first visit's dose
  std::vector<float> first_start_;    // ... and the dose before it
  std::vector<uint32_t> visits_;      // per position
  std::vector<uint8_t> affected_;     // per position
  std::vector<Accumulator> groups_acc_;
  mutable std::vector<DamageGroup> groups_;  // summaries, refreshed by groups()
  bool warned_ = false;
  uint64_t affected_count_ = 0;
  std::vector<ScanPosition> new_affected_;
  Eigen::VectorXf y_, xb_, derivative_, curvature_;   // workspaces
};

}  // namespace specwatch
