#pragma once
/// The model the service keeps: Poisson weighting learnt from the first spectra, then the incremental SVD of
/// the weighted spectra (docs/science.md §2–§4). What the model-update stage feeds, in frame order.
///
///   calibrating: spectra are kept (up to WeightingOptions::calibration_spectra); Model() is empty, so
///                denoising passes data through.
///   frozen:      b is fixed, the kept spectra are weighted and learnt (but for those the first fit's screen
///                holds out: first_fit_screen.hpp), and every later spectrum too.
///   refreshed:   the raw spectra keep feeding b's sums (decayed with the SVD's forgetting); when the spectra
///                learnt since calibration reach 1, 2, 4 ... × calibration_spectra (then every refresh_spectra),
///                b is recomputed and the learnt model re-expressed in the new weighting
///                (IncrementalSvd::RescaleChannels). Each refresh is a new model version with a new channel_scale.
/// With weighting disabled the spectra go to the SVD as they are.
///
/// Concurrency as IncrementalSvd: Add/Flush/Reset from one thread at a time; Model() from any thread.

#include "operators/model/incremental_svd.hpp"
#include "operators/core/poisson_weighting.hpp"

#include <memory>

namespace specwatch {

class StreamingModel {
 public:
  /// Throws ConfigError (options of either part).
  StreamingModel(int channels, SubspaceOptions subspace, WeightingOptions weighting);

  void Add(const Eigen::Ref<const Eigen::MatrixXf>& spectra);
  /// Updates with whatever the SVD has buffered. While calibrating it freezes the weights early on the spectra
  /// seen so far (a series ended before calibration_spectra spectra came), so they are learnt.
  void Flush();
  /// Forgets the model and the calibration.
  void Reset();

  /// The energy axis moved by delta_channels (EnergyShiftTracker): the learnt model (mean, basis, channel
  /// scale) and the weighting (scale and the sums its refreshes use) are re-expressed on the shifted axis, so
  /// spectra measured from now on match them (IncrementalSvd::ShiftChannels, PoissonWeighting::ShiftChannels).
  /// Spectra already taken (kept for calibration, buffered in the SVD) are counts and are not moved. Publishes
  /// a new model version.
  void ShiftChannels(double delta_channels);

  std::shared_ptr<const PcaModel> Model() const { return svd_.Model(); }
  int channels() const { return svd_.channels(); }
  bool calibrating() const { return weighting_options_.enabled && !weighting_.frozen(); }
  int buffered() const { return svd_.buffered() + static_cast<int>(kept_cols_); }
  uint64_t rejected_blocks() const { return svd_.rejected_blocks(); }
  uint64_t weight_refreshes() const { return weight_refreshes_; }  ///< since construction, never reset
  /// Spectra of first blocks held out of the first fit (first_fit_screen.hpp), since construction.
  uint64_t first_fit_held_out() const { return first_fit_held_out_; }
  const SubspaceOptions& options() const { return svd_.options(); }
  /// Continues from `model` instead of calibrating and learning afresh. A weighted model (channel_scale set)
  /// freezes the Poisson weights at its scale until refresh_spectra spectra were learnt (0: for good); the
  /// refreshes then take b from the spectra learnt since the restore. Requires the weighting to be enabled
  /// exactly when the model is weighted, and what IncrementalSvd::Restore requires (std::invalid_argument
  /// otherwise).
  void Restore(const PcaModel& model);

 private:
  void StartLearning();  // weights frozen: hand the scale to the SVD, learn the kept spectra
  void AddWeighted(const Eigen::Ref<const Eigen::MatrixXf>& spectra);

  WeightingOptions weighting_options_;
  PoissonWeighting weighting_;
  IncrementalSvd svd_;
  Eigen::MatrixXf kept_;  // D x calibration_spectra while calibrating
  Eigen::Index kept_cols_ = 0;
  Eigen::MatrixXf weighted_;  // workspace
  double learnt_since_calibration_ = 0;  // spectra
  double next_refresh_at_ = 0;           // learnt_since_calibration_ at the next refresh; 0 = none
  double last_refresh_at_ = 0;           // learnt_since_calibration_ at the last refresh
  uint64_t weight_refreshes_ = 0;
  uint64_t first_fit_held_out_ = 0;
};

}  // namespace specwatch
