#include "operators/core/poisson_weighting.hpp"

#include "operators/core/config_error.hpp"
#include "operators/core/channel_shift.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace specwatch {

void WeightingOptions::Validate() const {
  RequireOption(calibration_spectra >= 1, "calibration_spectra", ">= 1", calibration_spectra);
  RequireOption(floor_fraction > 0.0 && floor_fraction <= 1.0, "floor_fraction", "in (0, 1]", floor_fraction);
  RequireOption(refresh_spectra >= 0, "refresh_spectra", ">= 0", refresh_spectra);
  RequireOption(refresh_imbalance == 0.0 || refresh_imbalance >= 1.0, "refresh_imbalance", "0 (off) or >= 1",
                refresh_imbalance);
}

PoissonWeighting::PoissonWeighting(int channels, WeightingOptions options) : channels_(channels), options_(options) {
  options_.Validate();
  Reset();
}

void PoissonWeighting::Reset() {
  channel_sums_ = Eigen::VectorXd::Zero(channels_);
  calibrated_ = 0;
  frozen_ = false;
  channel_scale_.resize(0);
}

bool PoissonWeighting::Calibrate(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
  if (frozen_) return true;
  const Eigen::Index take = std::min<Eigen::Index>(spectra.cols(), CalibrationLeft());
  channel_sums_ += ColumnSum(spectra.leftCols(take)).cast<double>();
  calibrated_ += static_cast<double>(take);
  if (CalibrationLeft() <= 0) Freeze();
  return frozen_;
}

void PoissonWeighting::Freeze() {
  channel_scale_ = ScaleFromSums();
  frozen_ = true;
}

Eigen::VectorXf PoissonWeighting::ScaleFromSums() const {
  const double total = channel_sums_.sum();
  Eigen::VectorXd b = total > 0 ? Eigen::VectorXd(channel_sums_ / total)
                                : Eigen::VectorXd::Constant(channels_, 1.0 / channels_);
  b = b.cwiseMax(options_.floor_fraction / channels_);
  return b.cwiseSqrt().cast<float>();
}

void PoissonWeighting::Accumulate(const Eigen::Ref<const Eigen::MatrixXf>& spectra, double decay) {
  if (!frozen_) throw std::logic_error("PoissonWeighting::Accumulate before the calibration froze");
  if (decay != 1.0) channel_sums_ *= decay;
  channel_sums_ += ColumnSum(spectra).cast<double>();
}

Eigen::VectorXf PoissonWeighting::Refresh() {
  if (!frozen_) throw std::logic_error("PoissonWeighting::Refresh before the calibration froze");
  Eigen::VectorXf next = ScaleFromSums();
  Eigen::VectorXf factor = channel_scale_.cwiseQuotient(next);
  channel_scale_ = std::move(next);
  return factor;
}

double PoissonWeighting::VarianceImbalance() const {
  if (!frozen_) throw std::logic_error("PoissonWeighting::VarianceImbalance before the calibration froze");
  const Eigen::ArrayXd ratio = (ScaleFromSums().cwiseQuotient(channel_scale_)).cast<double>().array().square();
  const double mean = ratio.mean();
  return mean > 0.0 ? ratio.maxCoeff() / mean : 1.0;
}

void PoissonWeighting::ShiftChannels(double delta_channels) {
  channel_sums_ = ShiftByCubic(channel_sums_, delta_channels, ShiftEdge::kHold).cwiseMax(0.0);
  if (frozen_) {
    const Eigen::VectorXd scale = channel_scale_.cast<double>();
    channel_scale_ = ShiftByCubic(scale, delta_channels, ShiftEdge::kHold).cwiseMax(scale.minCoeff()).cast<float>();
  }
}

Eigen::VectorXf ColumnSum(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
  // Column by column: vectorised, where rowwise().sum() of a cast walks each row with a stride.
  Eigen::VectorXf sum = Eigen::VectorXf::Zero(spectra.rows());
  for (Eigen::Index i = 0; i < spectra.cols(); ++i) sum += spectra.col(i);
  return sum;
}

Eigen::VectorXf SpectrumTotals(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
  return spectra.colwise().sum().transpose().cwiseMax(1.0f);
}

void ApplyWeights(const Eigen::Ref<const Eigen::MatrixXf>& spectra, const Eigen::VectorXf& channel_scale,
                  const Eigen::Ref<const Eigen::VectorXf>& totals, Eigen::MatrixXf* out) {
  out->resize(spectra.rows(), spectra.cols());
  const Eigen::ArrayXf inverse_scale = channel_scale.array().inverse();
  for (Eigen::Index i = 0; i < spectra.cols(); ++i) {
    out->col(i).array() = spectra.col(i).array() * inverse_scale * (1.0f / std::sqrt(totals(i)));
  }
}

}  // namespace specwatch
