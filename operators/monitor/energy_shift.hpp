#pragma once
/// Energy-axis drift (docs/science.md §7.1): the sub-channel shift of the spectra against a reference, tracked
/// block by block, with step detection; and the cubic shift of a vector along the channel axis that moves the
/// model with the drift ("shift the model, not the counts").
///
/// EnergyShiftTracker is fed one frame at a time with the frame's channel sums (Σ over its spectra, summed by
/// the caller, e.g. in a parallel stage). The first `reference_spectra` spectra make the reference R (mean
/// counts per spectrum); its strongest peak (the zero-loss peak for EELS, the strongest line otherwise) or a
/// given channel is the feature, fitted on a window around it. Every `block_spectra` spectra, the block's sums
/// y are fitted on the window by the model
///   μ_j = a · R(j − δ)        (R cubic-interpolated, a a scale that absorbs changes of the count rate)
/// by Poisson-weighted least squares, weights 1/μ re-evaluated each Gauss–Newton step (the fixed point is the
/// Poisson maximum-likelihood estimate), started at the best integer lag (Poisson likelihood over lags of up to
/// the window half-width), so shifts of several channels converge. The standard error of δ is the sandwich
/// of the Fisher information F = Jᵀ diag(1/μ) J with the block's Poisson noise and the reference's own Poisson
/// noise (the reference has finite counts too: with the default 2048 reference and 512 block spectra it adds
/// about a quarter to the variance).
///
/// Detection: a drift event when |δ − baseline| > max(min_shift_channels, confidence_sigma · σ_change) for
/// confirm_blocks consecutive blocks on the same side, σ_change the standard error of the difference. The
/// baseline is the mean of the estimates since the last event (0, the reference, before any), so it follows a
/// slow drift only through events: a ramp yields one event each time it has moved by the threshold. After an
/// event the baseline is the new level. Onset: the first spectrum of the first confirming block (a step
/// happened at or after it). The new level is the mean of the confirming blocks after the first (the first may
/// straddle the step and hold a mixture of both levels); with confirm_blocks 1 it is that block.
///
/// Correction: when the caller has shifted the model by Δ (StreamingModel::ShiftChannels), ApplyCorrection(Δ)
/// makes later estimates relative to the corrected model. On an event the natural Δ is the new level relative
/// to the corrected model, event.shift_channels − corrections_channels() (the baseline is then 0 again): δ is then fitted against the reference moved by the
/// corrections so far (kept unshifted and offset in the fit, so the reference is never re-interpolated), and
/// the baseline moves by −Δ. total_shift_channels() = corrections + current estimate.
///
/// Concurrency: stateful; one thread at a time (a serial stage, frame order). Data path: Add never throws for
/// data (a frame with non-finite sums is skipped and counted in rejected_frames(), a block whose fit fails in
/// failed_blocks()); summed_counts of the wrong size is a caller bug (std::invalid_argument).

#include <Eigen/Core>

#include <cstdint>
#include <optional>
#include <string>

namespace specwatch {

/// Options of the energy-axis shift tracker (config section "drift", keys energy_*).
struct EnergyShiftOptions {
  int reference_spectra = 2048;         ///< spectra summed into the reference
  int block_spectra = 512;              ///< spectra per shift estimate (a frame is never split)
  int feature_channel = -1;             ///< channel of the reference feature; -1 = auto: the strongest peak
  int window_half_width_channels = 0;   ///< fit window ± around the feature; 0 = auto, from the peak's width
  double min_shift_channels = 0.2;      ///< smallest change reported as drift
  double confidence_sigma = 5.0;        ///< and at least this many standard errors of the change
  int confirm_blocks = 2;               ///< consecutive blocks beyond the threshold that make an event

  /// Throws ConfigError naming the field ("block_spectra ...") unless the options are valid for some channel count.
  void Validate() const;
  /// Why the options cannot track spectra of `channels` channels ("" when they can); never throws.
  std::string ChannelProblem(int channels) const;
  /// Validate() and ChannelProblem(channels); throws ConfigError.
  void Validate(int channels) const;
};

/// One block's fit.
struct EnergyShiftEstimate {
  uint64_t first_spectrum = 0;  ///< index of the block's first spectrum (counting from the tracker's start)
  uint64_t spectra = 0;         ///< spectra in the block
  double shift_channels = 0;    ///< δ relative to the corrected model (features at channel j + δ)
  double standard_error_channels = 0;
  double scale = 0;             ///< a: block counts relative to the reference's per-spectrum mean
};

/// A step of the energy axis, reported once.
struct EnergyShiftEvent {
  uint64_t onset_spectrum = 0;       ///< first spectrum of the first confirming block
  uint64_t detected_spectrum = 0;    ///< spectra seen when it was reported
  double magnitude_channels = 0;     ///< new level − old baseline
  double shift_channels = 0;         ///< new level, absolute: corrections applied + level
  double confidence = 0;             ///< z of the change: magnitude / its standard error
};

class EnergyShiftTracker {
 public:
  EnergyShiftTracker(int channels, EnergyShiftOptions options);  ///< throws ConfigError (options.Validate)

  /// One frame: Σ over its spectra of the counts per channel (D entries) and the number of spectra summed.
  /// Returns the event when this frame completed a block that confirmed a step.
  std::optional<EnergyShiftEvent> Add(const Eigen::VectorXd& summed_counts, uint64_t spectra);
  /// As Add, with the expected counts of the same spectra on the reference axis (a model's reconstruction of
  /// them, learnt before any drift): each block is then fitted against its own expectation instead of the
  /// fixed reference mean, so a scan whose phase composition varies (the strongest line of one phase waxing
  /// and waning next to another's) does not read as a shift. The expectation is taken as noiseless. Use one
  /// form per tracker.
  std::optional<EnergyShiftEvent> Add(const Eigen::VectorXd& summed_counts, uint64_t spectra,
                                      const Eigen::VectorXd& expected_counts);
  /// The model was shifted by delta_channels: later estimates are relative to it.
  void ApplyCorrection(double delta_channels);

  bool has_reference() const { return feature_channel_ >= 0; }
  int feature_channel() const { return feature_channel_; }          ///< -1 until the reference is built
  int window_half_width_channels() const { return half_width_; }   ///< 0 until the reference is built
  /// The latest block's fit, if any.
  const std::optional<EnergyShiftEstimate>& last_estimate() const { return last_; }
  double baseline_channels() const { return baseline_; }            ///< relative to the corrected model
  double corrections_channels() const { return corrections_; }
  /// Corrections applied + the latest estimate (0 before any).
  double total_shift_channels() const { return corrections_ + (last_ ? last_->shift_channels : 0.0); }
  uint64_t spectra_seen() const { return spectra_seen_; }
  uint64_t events() const { return events_; }
  uint64_t rejected_frames() const { return rejected_frames_; }
  uint64_t failed_blocks() const { return failed_blocks_; }
  const EnergyShiftOptions& options() const { return options_; }

  /// Fits the shift of `block` (summed counts of `spectra` spectra) against the reference: the estimate of
  /// Add without the detection (exposed for tests and tools). Empty if there is no reference or the fit fails.
  std::optional<EnergyShiftEstimate> Estimate(const Eigen::VectorXd& block, uint64_t spectra) const;
  /// The same fit against `reference` (any scale; `reference_spectra` = spectra averaged into it, 0 = noiseless).
  std::optional<EnergyShiftEstimate> EstimateAgainst(const Eigen::VectorXd& block, uint64_t spectra,
                                                     const Eigen::VectorXd& reference, double reference_spectra) const;

 private:
  void BuildReference();
  std::optional<EnergyShiftEvent> CloseBlock(const Eigen::VectorXd* expected);
  std::optional<EnergyShiftEvent> Detect(const EnergyShiftEstimate& e);

  int channels_;
  EnergyShiftOptions options_;

  Eigen::VectorXd reference_;   // mean counts per spectrum over the reference spectra
  double reference_spectra_ = 0;
  int feature_channel_ = -1;
  int half_width_ = 0;
  double corrections_ = 0;

  Eigen::VectorXd block_;
  Eigen::VectorXd block_expected_;  // the expected counts of the block's spectra (Add with expectations)
  uint64_t block_spectra_ = 0;
  uint64_t block_first_ = 0;
  uint64_t spectra_seen_ = 0;

  std::optional<EnergyShiftEstimate> last_;
  double baseline_ = 0;
  double baseline_blocks_ = 0;   // estimates averaged into the baseline (0: the reference itself)
  double baseline_sum_ = 0;
  int pending_sign_ = 0;
  Eigen::VectorXd pending_shift_;  // confirming blocks so far
  Eigen::VectorXd pending_variance_;
  int pending_ = 0;
  uint64_t pending_onset_ = 0;

  uint64_t events_ = 0;
  uint64_t rejected_frames_ = 0;
  uint64_t failed_blocks_ = 0;
};

}  // namespace specwatch
