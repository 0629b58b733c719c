#pragma once
/// The simulated acquisition: the phase spectra, the scene, the drift and damage schedules, and the frame
/// generator that turns them into Poisson counts. Built once from SimOptions, then const.
///
/// Concurrency: every const method is safe on many threads. GenerateFrame needs a FrameWorkspace per
/// thread (scratch space and the sampling tables of the current drift level). A frame's payload depends
/// only on the options and the frame number (its random stream is seeded from (seed, frame number)), so
/// frames can be generated in any order, on any number of threads, and are byte-identical run to run.
///
/// Statistics: the counts of a spectrum are, per channel, independent Poisson with mean
/// Σ_phases a_p·(w·S₀_p + (1−w)·S∞_p) evaluated at the spectrum's drift shift (exact: sum of independent
/// Poissons, each phase's N_p ~ Poisson(λ_p) spread over channels with an alias table, or per-channel
/// Poisson draws when λ_p is large). Readout noise, if any, comes from a 65,536-entry table of
/// stratified normal quantiles (tails cut at ±4.3σ, rescaled to unit variance).

#include "operators/core/spectrum_batch.hpp"
#include "tools/sim/alias_table.hpp"
#include "tools/sim/scene.hpp"
#include "tools/sim/sim_options.hpp"
#include "tools/sim/spectral_models.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace specwatch::sim {

struct FrameInfo {
  uint64_t frame_number = 0;
  uint64_t start_index = 0;  ///< raster index of the first spectrum, counting across passes
  uint32_t spectrum_count = 0;
};

struct SpectrumPosition {
  uint32_t x = 0, y = 0, pass = 0;
};

/// Per-thread scratch for GenerateFrame. Default-constructible; reuse it across frames.
class FrameWorkspace {
 private:
  friend class Simulator;
  struct ComponentTables {
    std::vector<double> values;  ///< expected counts per channel of the pure component at this level
    AliasTable alias;
    double total = 0.0;
  };
  int64_t level_ = std::numeric_limits<int64_t>::min();
  std::vector<ComponentTables> tables_;
  std::vector<uint32_t> histogram_;
  std::vector<uint32_t> histogram2_;
  std::vector<double> dense_mu_;
  std::vector<float> noise_;
  std::vector<int32_t> rounded_noise_;
  std::vector<double> abundances_;
};

class Simulator {
 public:
  /// Energy-axis shift quantum: the drift is applied in steps of 1/kShiftSubdivisions channel, and the
  /// model is integrated over each channel with this many midpoints.
  static constexpr int kShiftSubdivisions = 16;

  /// Throws ConfigError for inconsistent options.
  explicit Simulator(const SimOptions& options);

  const SimOptions& Options() const { return options_; }
  const EnergyAxis& Axis() const { return axis_; }
  const Scene& GetScene() const { return scene_; }
  /// One model per scene phase column (base..., inclusion?, grow?).
  const std::vector<PhaseModel>& Phases() const { return phases_; }
  int Channels() const { return options_.channels; }
  bool DamageEnabled() const { return options_.critical_dose_e_per_A2 > 0.0; }

  uint64_t SpectrumCount() const { return total_spectra_; }
  uint64_t FrameCount() const { return frame_count_; }
  FrameInfo Frame(uint64_t frame_number) const;
  SpectrumPosition Position(uint64_t spectrum_index) const;
  size_t BytesPerSample() const;
  size_t PayloadBytes(uint32_t spectra) const { return size_t{spectra} * options_.channels * BytesPerSample(); }

  /// Drift: the shift of spectrum i in 1/kShiftSubdivisions channels: 0 before the start s, then
  /// round(kShiftSubdivisions · drift · min(1, (i − s)/ramp)) (ramp 0: the whole drift from s on); features
  /// appear at channel j + shift. The default ramp ends at the last spectrum, N − 1 − s (none left: no drift).
  int64_t ShiftLevel(uint64_t spectrum_index) const;
  /// The ramp in spectra as resolved from the options (-1: the drift never applies within the run).
  int64_t DriftRampSpectra() const { return drift_ramp_spectra_; }
  double ShiftChannels(uint64_t spectrum_index) const { return static_cast<double>(ShiftLevel(spectrum_index)) / kShiftSubdivisions; }
  /// (first spectrum index, shift in channels) at every change of the quantised shift.
  std::vector<std::pair<uint64_t, double>> DriftChangePoints() const;

  /// Dose per spectrum (e⁻/Å²) and the intact weight w_p of pass p (see dose.hpp).
  double DosePerSpectrum() const { return dose_per_spectrum_; }
  double IntactWeight(uint32_t pass) const;

  /// Expected counts per channel of a pure phase (scene column), intact or fully damaged (S∞; the intact
  /// spectrum when damage is off), at a shift level (clamped to the run's range of levels).
  std::vector<double> PhaseSpectrum(int phase, bool damaged, int64_t level = 0) const;
  /// Expected counts per channel of spectrum `index` (before readout noise).
  std::vector<double> ExpectedSpectrum(uint64_t spectrum_index) const;

  /// Writes frame `frame_number`'s payload (spectra x channels, the payload type, little-endian) into
  /// `out` (PayloadBytes(spectrum_count) bytes). Returns how many values were clamped at the type's
  /// maximum (uint16/uint32 saturation).
  uint64_t GenerateFrame(uint64_t frame_number, FrameWorkspace& ws, std::span<std::byte> out) const;

  /// The readout-noise table (unit variance), exposed for tests.
  const std::vector<float>& NoiseTable() const { return noise_table_; }

 private:
  struct Component {
    int phase = 0;
    bool damaged = false;
    std::vector<double> prefix;  ///< prefix sums of the density at the fine grid, already scaled
  };
  void ComponentValues(const Component& c, int64_t level, std::vector<double>& out) const;
  void PrepareLevel(FrameWorkspace& ws, int64_t level) const;
  int ComponentIndex(int phase, bool damaged) const { return phase * (DamageEnabled() ? 2 : 1) + (damaged ? 1 : 0); }

  SimOptions options_;
  EnergyAxis axis_;
  Scene scene_;
  std::vector<PhaseModel> phases_;
  std::vector<Component> components_;
  uint64_t total_spectra_ = 0;
  uint64_t frame_count_ = 0;
  int64_t level_min_ = 0, level_max_ = 0;
  int64_t drift_ramp_spectra_ = -1;
  double dose_per_spectrum_ = 0.0;
  std::vector<float> noise_table_;
  std::vector<int32_t> rounded_noise_table_;  ///< floor(σ·z + ½) of noise_table_
};

/// Φ⁻¹(p) for 0 < p < 1 (Acklam's rational approximation refined by one Halley step; |error| < 1e-13).
double InverseNormalCdf(double p);

}  // namespace specwatch::sim
