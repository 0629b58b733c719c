#include "operators/monitor/subspace_drift.hpp"

#include "operators/core/config_error.hpp"
#include "operators/model/principal_angles.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace specwatch {
namespace {

}  // namespace

void SubspaceDriftOptions::Validate() const {
  RequireOption(threshold_deg > 0.0 && threshold_deg < 90.0, "threshold_deg", "in (0, 90)", threshold_deg);
  RequireOption(confirm_checks >= 1, "confirm_checks", ">= 1", confirm_checks);
  RequireOption(min_signal_ratio >= 0.0, "min_signal_ratio", ">= 0", min_signal_ratio);
}

int ReferenceRank(const PcaModel& model, const SubspaceDriftOptions& options) {
  const int rank = std::min<int>(model.rank, static_cast<int>(model.singular_values.size()));
  if (!(model.rank_threshold > 0.0)) return std::max(rank, 0);
  const double floor = options.min_signal_ratio * model.rank_threshold;
  int r = 0;
  while (r < rank && model.singular_values[r] >= floor) ++r;
  return r;
}

SubspaceDriftTracker::SubspaceDriftTracker(SubspaceDriftOptions options) : options_(options) { options_.Validate(); }

void SubspaceDriftTracker::SetReference(const Eigen::Ref<const Eigen::MatrixXf>& basis, int r) {
  if (r < 1 || r > basis.cols()) {
    throw std::invalid_argument("SubspaceDriftTracker::SetReference: rank " + std::to_string(r) + " of a basis of " +
                                std::to_string(basis.cols()) + " columns");
  }
  reference_ = basis.leftCols(r).cast<double>();
  pending_ = 0;
}

std::optional<SubspaceDriftEvent> SubspaceDriftTracker::Check(const Eigen::Ref<const Eigen::MatrixXf>& current,
                                                              uint64_t spectra_index) {
  if (!has_reference()) return std::nullopt;
  if (current.rows() != reference_.rows()) {
    throw std::invalid_argument("SubspaceDriftTracker::Check: basis of " + std::to_string(current.rows()) +
                                " rows, reference of " + std::to_string(reference_.rows()));
  }
  const Eigen::Index r = reference_.cols();
  const Eigen::Index used = std::min(r, current.cols());
  const Eigen::MatrixXd now = current.leftCols(used).cast<double>();
  const Eigen::VectorXd found = PrincipalAnglesDeg(reference_, now);
  std::vector<double> angles(found.data(), found.data() + found.size());
  angles.resize(static_cast<size_t>(r), 90.0);
  last_max_angle_deg_ = angles.back();

  if (!(last_max_angle_deg_ > options_.threshold_deg)) {
    pending_ = 0;
    return std::nullopt;
  }
  if (pending_ == 0) pending_onset_ = spectra_index;
  if (++pending_ < options_.confirm_checks) return std::nullopt;

  SubspaceDriftEvent event;
  event.max_angle_deg = last_max_angle_deg_;
  event.angles_deg = std::move(angles);
  event.reference_rank = static_cast<int>(r);
  event.onset_spectra = pending_onset_;
  event.detected_spectra = spectra_index;
  // The new regime is the reference from now on. With fewer columns than the reference rank the reference
  // shrinks to what the model has (it cannot be padded with directions the model does not know).
  if (used > 0) {
    reference_ = now;
  } else {
    reference_.resize(0, 0);
  }
  pending_ = 0;
  return event;
}

void SubspaceDriftTracker::Reset() {
  reference_.resize(0, 0);
  pending_ = 0;
  last_max_angle_deg_ = 0;
}

}  // namespace specwatch
