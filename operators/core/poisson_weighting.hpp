#pragma once
/// Keenan–Kotula scaling of Poisson counts (docs/science.md §2), learnt online.
///
///   x̃_ij = x_ij / sqrt(a_i · b_j)
///
/// a_i: total counts of spectrum i (floored at 1 count, so an empty spectrum maps to 0, not 0/0).
/// b_j: the mean spectral shape, normalised to sum 1, from the first `calibration_spectra` spectra, then frozen
///      until the next refresh (below).
///      Each b_j is floored at `floor_fraction` × mean(b) = floor_fraction / D, so a channel that was empty during
///      calibration cannot blow a stray count up into a huge weighted value.
/// With b normalised this way a_i·b_j is the count expected in channel j of a spectrum of the mean shape, so the
/// weighted noise is close to 1 per channel: plain SVD on x̃ no longer ranks channels by intensity, and a weak
/// edge on a strong background keeps its share of the variance.
///
/// Refresh: the first spectra of a scan are a few scan lines, rarely representative of the whole field (a phase
/// absent there gets b_j at the floor, and its lines then weigh tens of times too much). So after calibration the
/// channel sums keep accumulating (decayed with the model's forgetting, so b follows a changing experiment), and
/// Refresh() recomputes b from them. StreamingModel decides when, and re-expresses the learnt basis.
///
/// Not thread-safe while calibrating (one thread feeds it, the model-update stage). Once frozen, the scale is
/// immutable and copied into each PcaModel (PcaModel::channel_scale), which the denoising threads use.

#include <Eigen/Core>

namespace specwatch {

struct WeightingOptions {
  bool enabled = true;               ///< false: data are not counts (a processed float source)
  int calibration_spectra = 256;     ///< spectra whose mean shape fixes b
  double floor_fraction = 0.05;      ///< b_j >= floor_fraction / D
  /// Refresh b (and re-express the model) when the spectra learnt since calibration reach 1, 2, 4 ... times
  /// calibration_spectra, then every `refresh_spectra` spectra once the doubling reaches it. 0: never (b stays
  /// as calibrated).
  int refresh_spectra = 65536;
  /// Refresh b also when VarianceImbalance() exceeds this (checked at every update, at most one refresh per
  /// calibration_spectra learnt); 0: only on the schedule above. Unused while refresh_spectra is 0.
  double refresh_imbalance = 1.5;
  /// Throws ConfigError naming the field ("floor_fraction ..."; operators/core/config_error.hpp) when out of range.
  void Validate() const;
};

class PoissonWeighting {
 public:
  PoissonWeighting(int channels, WeightingOptions options);  ///< throws ConfigError

  /// Adds D x m spectra to the calibration sums (until calibration_spectra were seen). Returns true once frozen.
  bool Calibrate(const Eigen::Ref<const Eigen::MatrixXf>& spectra);
  bool frozen() const { return frozen_; }
  /// Spectra still needed before the scale is frozen.
  int CalibrationLeft() const { return options_.calibration_spectra - static_cast<int>(calibrated_); }
  /// sqrt(b_j), D entries; valid once frozen.
  const Eigen::VectorXf& channel_scale() const { return channel_scale_; }
  /// Forgets the calibration.
  void Reset();
  /// Freezes on what was seen so far (uniform b if nothing was).
  void FreezeNow() { Freeze(); }
  /// Once frozen: decays the channel sums by `decay` (the model's forgetting over these spectra, 1 = none) and
  /// adds the D x m spectra (raw counts) to them.
  void Accumulate(const Eigen::Ref<const Eigen::MatrixXf>& spectra, double decay);
  /// Once frozen: b from the accumulated sums (floored as at calibration) becomes the scale. Returns
  /// old scale / new scale per channel, the factor that re-expresses data weighted with the old scale.
  Eigen::VectorXf Refresh();
  /// Once frozen: how unequal the weighted noise has become since the scale was set. Data weighted with b but
  /// of mean shape b' (the accumulated sums) have noise variance b'_j / b_j in channel j; this is the largest of
  /// those ratios over their mean. 1 when b still fits. A channel with a ratio above the rank threshold's
  /// λ*² ≈ 2.6 (rank_selection.hpp) is a noise direction the rank rule takes for a component.
  double VarianceImbalance() const;
  /// The energy axis moved by delta_channels (features at j now at j + delta): the channel sums (the mean shape
  /// accumulated so far, calibrating or not) and, once frozen, the scale follow, v'(j) = v(j − delta) by cubic
  /// interpolation, the edge value held beyond the ends (ShiftByCubic, energy_shift.hpp). The sums stay >= 0 and
  /// the scale >= its smallest value before (a cubic can undershoot at a sharp step), exactly as
  /// IncrementalSvd::ShiftChannels shifts the model's copy, so the two stay equal.
  void ShiftChannels(double delta_channels);
  /// Takes over a frozen scale: sqrt(b), D finite positive entries, e.g. a restored model's channel_scale
  /// (std::invalid_argument otherwise). The channel sums restart empty: a later Refresh() takes b from the
  /// spectra accumulated after this call only. Defined in model_restore.cpp.
  void Restore(const Eigen::VectorXf& channel_scale);

 private:
  void Freeze();
  Eigen::VectorXf ScaleFromSums() const;  // sqrt(b), b = sums normalised and floored

  int channels_;
  WeightingOptions options_;
  Eigen::VectorXd channel_sums_;
  double calibrated_ = 0;
  bool frozen_ = false;
  Eigen::VectorXf channel_scale_;
};

/// Σ_i x_i over the columns of D x m spectra, in float (exact for counts below 2^24 per channel; the callers add
/// a frame at a time into double sums).
Eigen::VectorXf ColumnSum(const Eigen::Ref<const Eigen::MatrixXf>& spectra);
/// a_i floored at 1 count, for D x m counts.
Eigen::VectorXf SpectrumTotals(const Eigen::Ref<const Eigen::MatrixXf>& spectra);

/// x̃ = x / sqrt(a_i b_j), written into `out` (resized). `channel_scale` = sqrt(b).
void ApplyWeights(const Eigen::Ref<const Eigen::MatrixXf>& spectra, const Eigen::VectorXf& channel_scale,
                  const Eigen::Ref<const Eigen::VectorXf>& totals, Eigen::MatrixXf* out);

}  // namespace specwatch
