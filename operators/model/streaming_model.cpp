#include "operators/model/streaming_model.hpp"

#include "operators/model/first_fit_screen.hpp"

#include <algorithm>
#include <cmath>

namespace specwatch {

StreamingModel::StreamingModel(int channels, SubspaceOptions subspace, WeightingOptions weighting)
    : weighting_options_(weighting), weighting_(channels, weighting), svd_(channels, subspace) {
  Reset();
}

void StreamingModel::Reset() {
  weighting_.Reset();
  svd_.Reset();
  svd_.SetChannelScale(Eigen::VectorXf());
  kept_cols_ = 0;
  if (weighting_options_.enabled) kept_.resize(svd_.channels(), weighting_options_.calibration_spectra);
  learnt_since_calibration_ = 0;
  next_refresh_at_ = 0;
  last_refresh_at_ = 0;
}

void StreamingModel::Add(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
  if (spectra.rows() != svd_.channels()) {
    svd_.Add(spectra);  // throws the channel-count error
    return;
  }
  if (!calibrating()) {
    AddWeighted(spectra);
    return;
  }
  const Eigen::Index take = std::min<Eigen::Index>(spectra.cols(), kept_.cols() - kept_cols_);
  kept_.middleCols(kept_cols_, take) = spectra.leftCols(take);
  kept_cols_ += take;
  if (weighting_.Calibrate(spectra.leftCols(take))) {
    StartLearning();
    if (take < spectra.cols()) AddWeighted(spectra.rightCols(spectra.cols() - take));
  }
}

void StreamingModel::Flush() {
  if (calibrating() && kept_cols_ > 0) {
    weighting_.FreezeNow();
    StartLearning();
  }
  svd_.Flush();
}

void StreamingModel::ShiftChannels(double delta_channels) {
  if (weighting_options_.enabled) weighting_.ShiftChannels(delta_channels);
  svd_.ShiftChannels(delta_channels);
}

void StreamingModel::StartLearning() {
  svd_.SetChannelScale(weighting_.channel_scale());
  const double refresh = weighting_options_.refresh_spectra;
  next_refresh_at_ = refresh > 0 ? std::min(refresh, static_cast<double>(weighting_options_.calibration_spectra)) : 0;
  // The kept spectra are already in b's sums: learnt, not accumulated again.
  ApplyWeights(kept_.leftCols(kept_cols_), weighting_.channel_scale(), SpectrumTotals(kept_.leftCols(kept_cols_)),
               &weighted_);
  // The first fit learns no component that a handful of the block's spectra carry alone (first_fit_screen.hpp).
  const FirstFitScreen screen = ScreenFirstBlock(weighted_, svd_.options());
  if (screen.held_out > 0) {
    Eigen::Index kept = 0;
    for (Eigen::Index i = 0; i < weighted_.cols(); ++i) {
      if (screen.keep[static_cast<size_t>(i)]) weighted_.col(kept++) = weighted_.col(i);
    }
    weighted_.conservativeResize(Eigen::NoChange, kept);
    first_fit_held_out_ += static_cast<uint64_t>(screen.held_out);
  }
  svd_.Add(weighted_);
  kept_cols_ = 0;
  kept_.resize(0, 0);
}

void StreamingModel::AddWeighted(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
  if (!weighting_options_.enabled) {
    svd_.Add(spectra);
    return;
  }
  ApplyWeights(spectra, weighting_.channel_scale(), SpectrumTotals(spectra), &weighted_);
  svd_.Add(weighted_);
  if (next_refresh_at_ <= 0) return;
  weighting_.Accumulate(spectra, std::pow(svd_.options().forgetting, static_cast<double>(spectra.cols())));
  learnt_since_calibration_ += static_cast<double>(spectra.cols());
  const bool scheduled = learnt_since_calibration_ >= next_refresh_at_;
  // Between the scheduled refreshes: when the scan reached spectra whose mean shape the scale no longer fits
  // (a new phase domain), at most once per calibration block.
  const double imbalance = weighting_options_.refresh_imbalance;
  const bool imbalanced = imbalance > 0.0 &&
                          learnt_since_calibration_ - last_refresh_at_ >= weighting_options_.calibration_spectra &&
                          weighting_.VarianceImbalance() > imbalance;
  if (!scheduled && !imbalanced) return;
  const Eigen::VectorXf factor = weighting_.Refresh();
  svd_.RescaleChannels(factor, weighting_.channel_scale());
  ++weight_refreshes_;
  last_refresh_at_ = learnt_since_calibration_;
  // Doubling intervals until they reach refresh_spectra, then every refresh_spectra.
  while (next_refresh_at_ <= learnt_since_calibration_) {
    next_refresh_at_ += std::min(next_refresh_at_, static_cast<double>(weighting_options_.refresh_spectra));
  }
}

}  // namespace specwatch
