// Restoring the streaming model from a saved PcaModel (IncrementalSvd, StreamingModel, PoissonWeighting).
// In a file of its own so the classes' own files stay as they are while their update rules evolve.

#include "operators/model/incremental_svd.hpp"
#include "operators/core/poisson_weighting.hpp"
#include "operators/model/streaming_model.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace specwatch {

void PoissonWeighting::Restore(const Eigen::VectorXf& channel_scale) {
  if (channel_scale.size() != channels_ || !channel_scale.allFinite() || (channel_scale.array() <= 0.0f).any()) {
    throw std::invalid_argument("PoissonWeighting::Restore: the scale needs " + std::to_string(channels_) +
                                " finite positive entries");
  }
  channel_scale_ = channel_scale;
  channel_sums_ = Eigen::VectorXd::Zero(channels_);  // refreshes use this session's spectra
  calibrated_ = options_.calibration_spectra;
  frozen_ = true;
}

void IncrementalSvd::Restore(const PcaModel& model) {
  const Eigen::Index k = model.basis.cols();
  const auto fail = [](const std::string& what) { throw std::invalid_argument("IncrementalSvd::Restore: " + what); };
  if (model.mean.size() != channels_ || (k > 0 && model.basis.rows() != channels_)) {
    fail("the model has " + std::to_string(model.mean.size()) + " channels, this one " + std::to_string(channels_));
  }
  if (k > options_.MaxComponents()) {
    fail(std::to_string(k) + " components, at most " + std::to_string(options_.MaxComponents()) + " tracked");
  }
  if (model.singular_values.size() != k) fail("one singular value per basis column needed");
  if (model.channel_scale.size() != 0 && model.channel_scale.size() != channels_) fail("channel_scale size");
  if (!model.mean.allFinite() || !model.basis.allFinite() || !model.singular_values.allFinite()) {
    fail("non-finite values");
  }
  auto next = std::make_shared<PcaModel>(model);
  if (k > 0) Reorthonormalize(next->basis);
  next->rank = std::clamp(model.rank, 0, std::min<int>(options_.rank, static_cast<int>(k)));
  next->effective_memory = effective_memory_;
  channel_scale_ = model.channel_scale;
  mean_ = model.mean.cast<double>();
  buffered_ = 0;
  updates_since_qr_ = 0;
  Publish(std::move(next));
}

void StreamingModel::Restore(const PcaModel& model) {
  if (model.Weighted() != weighting_options_.enabled) {
    throw std::invalid_argument(std::string("StreamingModel::Restore: the model is ") +
                                (model.Weighted() ? "" : "not ") + "Poisson-weighted, the weighting is " +
                                (weighting_options_.enabled ? "on" : "off"));
  }
  svd_.Restore(model);  // first: it checks the model
  if (model.Weighted()) weighting_.Restore(model.channel_scale);
  kept_cols_ = 0;
  kept_.resize(0, 0);
  // The saved b already holds what the earlier session learnt: it stays for refresh_spectra spectra, then the
  // refreshes go on, every refresh_spectra, from the spectra of this session.
  learnt_since_calibration_ = 0;
  last_refresh_at_ = 0;
  const bool refresh = model.Weighted() && weighting_options_.refresh_spectra > 0;
  next_refresh_at_ = refresh ? weighting_options_.refresh_spectra : 0;
}

}  // namespace specwatch
