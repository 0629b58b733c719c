#pragma once
/// Subspace drift (docs/science.md §7.2): the model's leading subspace compared with a reference by principal
/// angles, θ_i = arccos σ_i(U_refᵀ U), every ~10³ spectra.
///
/// A slow change of the sample (a phase growing, a shifted edge) turns the eigenspectra; the denoiser follows it
/// (forgetting) and so hides it. Comparing the current basis with the one the experiment started from makes the
/// turn visible: one event per change, after which the new basis is the reference.
///
/// Concurrency: SubspaceDriftTracker is stateful, one
/// thread at a time (the stage that owns the model's updates, or one reading its snapshots in order).

#include "operators/model/incremental_svd.hpp"
#include "operators/model/principal_angles.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <optional>
#include <vector>

namespace specwatch {

/// Options of the subspace drift check (config section "drift.subspace").
struct SubspaceDriftOptions {
  double threshold_deg = 10.0;  ///< largest principal angle of the reference rank that counts as drift
  int confirm_checks = 2;       ///< consecutive checks above the threshold before an event (one noisy basis is not)
  /// Only components with a singular value at least this many times the model's rank threshold τ (Gavish–Donoho)
  /// enter the reference (ReferenceRank): a component near the noise level has no stable direction, and
  /// comparing it would report drift where there is none (a fixed rank 8 on a 3-phase sample turns 6 noise
  /// directions freely).
  double min_signal_ratio = 2.0;
  /// Throws ConfigError naming the field ("threshold_deg ..."; operators/core/config_error.hpp).
  void Validate() const;
};

struct SubspaceDriftEvent {
  double max_angle_deg = 0;      ///< largest principal angle at the confirming check
  std::vector<double> angles_deg;  ///< all of them, ascending (reference rank many)
  int reference_rank = 0;
  uint64_t onset_spectra = 0;     ///< spectra index of the first check of the confirming run above the threshold
  uint64_t detected_spectra = 0;  ///< spectra index of the confirming check
};

/// The reference rank of a model: its components within `rank` whose singular value is at least
/// options.min_signal_ratio · rank_threshold; all `rank` when the threshold is unknown (0); 0 when none is.
int ReferenceRank(const PcaModel& model, const SubspaceDriftOptions& options);

/// Compares the leading `r` columns of each checked basis with a reference of rank r. An event is returned
/// when the largest angle exceeds threshold_deg at confirm_checks consecutive checks; then the reference
/// becomes the current basis (its first r columns), so one change gives one event. A check below the
/// threshold breaks the run. Before SetReference (and after Reset) Check does nothing.
/// A checked basis with fewer than r columns is compared on the columns it has, the missing directions counting
/// as 90° (a smaller subspace cannot hold the reference); an event then shrinks the reference to those columns.
/// Bases must have the reference's row count (std::invalid_argument otherwise: a caller bug; a new channel count
/// is a new series, call Reset).
/// Memory: the reference, D x r doubles.
class SubspaceDriftTracker {
 public:
  explicit SubspaceDriftTracker(SubspaceDriftOptions options = {});  ///< throws ConfigError (options.Validate)

  /// The reference: the first r columns of `basis` (orthonormal). 1 <= r <= basis.cols()
  /// (std::invalid_argument otherwise). Clears a pending run of checks above the threshold.
  void SetReference(const Eigen::Ref<const Eigen::MatrixXf>& basis, int r);
  /// Compares `current` (D x k, orthonormal columns, e.g. PcaModel::basis) with the reference. `spectra_index`:
  /// the caller's position in the stream (spectra seen), reported as onset and detection.
  std::optional<SubspaceDriftEvent> Check(const Eigen::Ref<const Eigen::MatrixXf>& current, uint64_t spectra_index);
  /// Forgets the reference and any pending run (series boundary, re-baseline).
  void Reset();

  bool has_reference() const { return reference_.cols() > 0; }
  int reference_rank() const { return static_cast<int>(reference_.cols()); }
  double last_max_angle_deg() const { return last_max_angle_deg_; }  ///< of the last Check; 0 before any
  int pending_checks() const { return pending_; }  ///< consecutive checks above the threshold so far
  const SubspaceDriftOptions& options() const { return options_; }

 private:
  SubspaceDriftOptions options_;
  Eigen::MatrixXd reference_;  // D x r
  int pending_ = 0;
  uint64_t pending_onset_ = 0;
  double last_max_angle_deg_ = 0;
};

}  // namespace specwatch
