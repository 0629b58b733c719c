#include "operators/monitor/energy_shift.hpp"

#include "operators/core/channel_shift.hpp"
#include "operators/core/config_error.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace specwatch {
namespace {

// The four taps of v at position t: v(t) = Σ weight[k] · v[index[k]], indices clamped to the ends (hold), and
// dv/dt with the derivative weights.
struct Taps {
  int index[4];
  double weight[4];
  double slope[4];
};

Taps TapsAt(double t, int size) {
  const double base = std::floor(t);
  const double f = t - base;
  Taps taps;
  for (int k = 0; k < 4; ++k) {
    const double i = base + (k - 1);
    taps.index[k] = static_cast<int>(std::clamp(i, 0.0, static_cast<double>(size - 1)));
    taps.weight[k] = KeysCubic(f - (k - 1));
    taps.slope[k] = KeysCubicDerivative(f - (k - 1));
  }
  return taps;
}

}  // namespace

void EnergyShiftOptions::Validate() const {
  RequireOption(reference_spectra >= 1, "reference_spectra", ">= 1", reference_spectra);
  RequireOption(block_spectra >= 1, "block_spectra", ">= 1", block_spectra);
  RequireOption(feature_channel >= -1, "feature_channel", "-1 (auto) or a channel", feature_channel);
  RequireOption(window_half_width_channels == 0 || window_half_width_channels >= 2, "window_half_width_channels",
                "0 (auto) or >= 2", window_half_width_channels);
  RequireOption(min_shift_channels >= 0.0, "min_shift_channels", ">= 0", min_shift_channels);
  RequireOption(confidence_sigma > 0.0, "confidence_sigma", "> 0", confidence_sigma);
  RequireOption(confirm_blocks >= 1, "confirm_blocks", ">= 1", confirm_blocks);
}

std::string EnergyShiftOptions::ChannelProblem(int channels) const {
  if (channels < 8) return "spectra must have at least 8 channels, got " + std::to_string(channels);
  if (feature_channel >= channels) {
    return "feature_channel " + std::to_string(feature_channel) + " is beyond the " + std::to_string(channels) +
           " channels";
  }
  if (window_half_width_channels > channels / 2) {
    return "window_half_width_channels " + std::to_string(window_half_width_channels) + " is more than half the " +
           std::to_string(channels) + " channels";
  }
  return {};
}

void EnergyShiftOptions::Validate(int channels) const {
  Validate();
  if (const std::string problem = ChannelProblem(channels); !problem.empty()) throw ConfigError("channels", problem);
}

EnergyShiftTracker::EnergyShiftTracker(int channels, EnergyShiftOptions options)
    : channels_(channels), options_(options) {
  options_.Validate(channels_);
  block_ = Eigen::VectorXd::Zero(channels_);
}

std::optional<EnergyShiftEvent> EnergyShiftTracker::Add(const Eigen::VectorXd& summed_counts, uint64_t spectra) {
  if (summed_counts.size() != channels_) {
    throw std::invalid_argument("EnergyShiftTracker::Add: " + std::to_string(summed_counts.size()) +
                                " channels, the tracker " + std::to_string(channels_));
  }
  if (spectra == 0) return std::nullopt;
  if (!summed_counts.allFinite()) {
    ++rejected_frames_;
    spectra_seen_ += spectra;
    return std::nullopt;
  }
  if (block_spectra_ == 0) block_first_ = spectra_seen_;
  block_ += summed_counts;
  block_spectra_ += spectra;
  spectra_seen_ += spectra;
  return CloseBlock(nullptr);
}

std::optional<EnergyShiftEvent> EnergyShiftTracker::Add(const Eigen::VectorXd& summed_counts, uint64_t spectra,
                                                        const Eigen::VectorXd& expected_counts) {
  if (summed_counts.size() != channels_ || expected_counts.size() != channels_) {
    throw std::invalid_argument("EnergyShiftTracker::Add: " + std::to_string(summed_counts.size()) + " and " +
                                std::to_string(expected_counts.size()) + " channels, the tracker " +
                                std::to_string(channels_));
  }
  if (spectra == 0) return std::nullopt;
  if (!summed_counts.allFinite() || !expected_counts.allFinite()) {
    ++rejected_frames_;
    spectra_seen_ += spectra;
    return std::nullopt;
  }
  if (block_expected_.size() != channels_) block_expected_ = Eigen::VectorXd::Zero(channels_);
  if (block_spectra_ == 0) block_first_ = spectra_seen_;
  block_ += summed_counts;
  block_expected_ += expected_counts;
  block_spectra_ += spectra;
  spectra_seen_ += spectra;
  return CloseBlock(&block_expected_);
}

std::optional<EnergyShiftEvent> EnergyShiftTracker::CloseBlock(const Eigen::VectorXd* expected) {
  if (!has_reference()) {
    if (block_spectra_ >= static_cast<uint64_t>(options_.reference_spectra)) {
      // With expectations the feature is found on them (noiseless), and the raw reference is not needed.
      if (expected != nullptr) block_ = *expected;
      BuildReference();
      if (expected != nullptr) block_expected_.setZero();
    }
    return std::nullopt;
  }
  if (block_spectra_ < static_cast<uint64_t>(options_.block_spectra)) return std::nullopt;
  std::optional<EnergyShiftEstimate> estimate = expected != nullptr
                                                    ? EstimateAgainst(block_, block_spectra_, *expected, 0.0)
                                                    : Estimate(block_, block_spectra_);
  if (estimate) estimate->first_spectrum = block_first_;
  block_.setZero();
  if (expected != nullptr) block_expected_.setZero();
  block_spectra_ = 0;
  if (!estimate) {
    ++failed_blocks_;
    return std::nullopt;
  }
  last_ = estimate;
  return Detect(*estimate);
}

void EnergyShiftTracker::BuildReference() {
  const Eigen::VectorXd mean = block_ / static_cast<double>(block_spectra_);
  const double spectra = static_cast<double>(block_spectra_);
  block_.setZero();
  block_spectra_ = 0;
  const int d = channels_;

  int peak = options_.feature_channel;
  if (peak < 0) {
    // The strongest peak: the largest local maximum of the 3-point smoothed mean that is the maximum of its
    // ±3 channels (a falling background at the first channels is not a peak).
    Eigen::VectorXd smooth = mean;
    for (int j = 1; j + 1 < d; ++j) smooth(j) = 0.25 * mean(j - 1) + 0.5 * mean(j) + 0.25 * mean(j + 1);
    double best = 0.0;
    for (int j = 3; j + 3 < d; ++j) {
      if (smooth.segment(j - 3, 7).maxCoeff() > smooth(j) || smooth(j) <= smooth(j - 1)) continue;
      if (smooth(j) > best) {
        best = smooth(j);
        peak = j;
      }
    }
    if (peak < 0) return;  // no peak (empty or monotonic spectra): try again on the next spectra
  }
  if (!(mean(peak) > 0.0)) return;

  int half_width = options_.window_half_width_channels;
  if (half_width == 0) {
    // Full width at half maximum above the local background (the lowest level within ±64 channels), then
    // ±1.5 FWHM plus 2 channels: the flanks that carry the shift information, with room to move.
    const int lo = std::max(0, peak - 64), hi = std::min(d - 1, peak + 64);
    const double background = mean.segment(lo, hi - lo + 1).minCoeff();
    const double half = background + 0.5 * (mean(peak) - background);
    int left = peak, right = peak;
    while (left > lo && mean(left) > half) --left;
    while (right < hi && mean(right) > half) ++right;
    half_width = std::clamp(static_cast<int>(std::ceil(1.5 * (right - left))) + 2, 3, d / 4);
  }
  reference_ = mean;
  reference_spectra_ = spectra;
  feature_channel_ = peak;
  half_width_ = half_width;
}

std::optional<EnergyShiftEstimate> EnergyShiftTracker::Estimate(const Eigen::VectorXd& block,
                                                                uint64_t spectra) const {
  return EstimateAgainst(block, spectra, reference_, reference_spectra_);
}

std::optional<EnergyShiftEstimate> EnergyShiftTracker::EstimateAgainst(const Eigen::VectorXd& block, uint64_t spectra,
                                                                       const Eigen::VectorXd& reference,
                                                                       double reference_spectra) const {
  if (!has_reference() || block.size() != channels_ || reference.size() != channels_) return std::nullopt;
  const int d = channels_;
  // Against expectations (reference_spectra 0) the whole spectrum is fitted, every line of every phase, each
  // against its own expected shape; the integer search then only needs a few channels either side. Against the
  // fixed reference mean, a window around the feature that follows the corrections, so the feature stays in it
  // however far the axis has drifted.
  const bool whole = reference_spectra == 0.0;
  const int h = whole ? std::min(half_width_, 8) : half_width_;
  const int centre = std::clamp(feature_channel_ + static_cast<int>(std::lround(corrections_)), 0, d - 1);
  const int lo = whole ? std::min(h + 2, d / 4) : std::max(0, centre - h);
  const int hi = whole ? d - 1 - lo : std::min(d - 1, centre + h);
  const int n = hi - lo + 1;
  const Eigen::VectorXd y = block.segment(lo, n);
  const double y_total = y.sum();
  if (!(y_total > 0.0)) return std::nullopt;
  const double max_reference = reference.maxCoeff();
  // A model's expectation can dip to or below zero where it undershoots an empty stretch: floored at a small
  // fraction of its mean level, so a stray count there does not get an enormous Poisson weight.
  const double tiny = whole ? 1e-3 * std::max(reference.mean(), 0.0) + 1e-12 : 1e-9 * max_reference;

  // Integer start: the lag of largest Poisson likelihood, the scale at its maximum (a = Σy / Σg).
  const int lag_centre = static_cast<int>(std::lround(corrections_));
  int best_lag = lag_centre;
  double best_ll = -std::numeric_limits<double>::infinity();
  for (int lag = lag_centre - h; lag <= lag_centre + h; ++lag) {
    double g_total = 0.0, ll = 0.0;
    for (int i = 0; i < n; ++i) g_total += std::max(reference(std::clamp(lo + i - lag, 0, d - 1)), tiny);
    const double a = y_total / g_total;
    for (int i = 0; i < n; ++i) {
      const double mu = a * std::max(reference(std::clamp(lo + i - lag, 0, d - 1)), tiny);
      ll += y(i) * std::log(mu) - mu;
    }
    if (ll > best_ll) {
      best_ll = ll;
      best_lag = lag;
    }
  }

  // Gauss–Newton on (a, δ) with Poisson weights 1/μ from the current iterate (IRLS: its fixed point solves
  // the Poisson likelihood equations Σ (y − μ)/μ · ∂μ/∂θ = 0).
  double delta = best_lag;
  double a = 0.0;
  {
    double g_total = 0.0;
    for (int i = 0; i < n; ++i) g_total += std::max(reference(std::clamp(lo + i - best_lag, 0, d - 1)), tiny);
    a = y_total / g_total;
  }
  Eigen::VectorXd g(n), dg(n), mu(n), w(n);
  Eigen::Matrix2d fisher;
  const auto evaluate = [&] {
    for (int i = 0; i < n; ++i) {
      const Taps taps = TapsAt(lo + i - delta, d);
      double value = 0.0, slope = 0.0;
      for (int k = 0; k < 4; ++k) {
        value += taps.weight[k] * reference(taps.index[k]);
        slope += taps.slope[k] * reference(taps.index[k]);
      }
      g(i) = std::max(value, tiny);
      dg(i) = -slope;  // ∂R(j − δ)/∂δ
      mu(i) = a * g(i);
      w(i) = 1.0 / std::max(mu(i), 1e-12);
    }
    fisher(0, 0) = (g.array().square() * w.array()).sum();
    fisher(0, 1) = fisher(1, 0) = a * (g.array() * dg.array() * w.array()).sum();
    fisher(1, 1) = a * a * (dg.array().square() * w.array()).sum();
  };
  bool converged = false;
  for (int iteration = 0; iteration < 50; ++iteration) {
    evaluate();
    const Eigen::ArrayXd r = (y - mu).array() * w.array();
    const Eigen::Vector2d score((g.array() * r).sum(), a * (dg.array() * r).sum());
    const Eigen::Vector2d step = fisher.ldlt().solve(score);
    if (!step.allFinite()) return std::nullopt;
    a += step(0);
    delta += std::clamp(step(1), -1.0, 1.0);  // a step of more than a channel leaves the quadratic regime
    if (!(a > 0.0) || std::fabs(delta - lag_centre) > h + 2) return std::nullopt;
    if (std::fabs(step(1)) < 1e-6 && std::fabs(step(0)) < 1e-7 * a) {
      converged = true;
      break;
    }
  }
  if (!converged) return std::nullopt;
  evaluate();

  // Sandwich: the block's Poisson noise gives F; the reference's, M = a² Gᵀ diag(R/N_ref) G with
  // G = Cᵀ W J (C the interpolation taps from reference channels to window channels).
  Eigen::MatrixXd gradient = Eigen::MatrixXd::Zero(d, 2);
  for (int i = 0; i < n; ++i) {
    const Taps taps = TapsAt(lo + i - delta, d);
    for (int k = 0; k < 4; ++k) {
      gradient(taps.index[k], 0) += taps.weight[k] * w(i) * g(i);
      gradient(taps.index[k], 1) += taps.weight[k] * w(i) * a * dg(i);
    }
  }
  const Eigen::Matrix2d reference_noise =
      reference_spectra > 0.0
          ? Eigen::Matrix2d(a * a * gradient.transpose() * (reference / reference_spectra).asDiagonal() * gradient)
          : Eigen::Matrix2d::Zero();
  const Eigen::Matrix2d inverse = fisher.inverse();
  const Eigen::Matrix2d covariance = inverse * (fisher + reference_noise) * inverse;
  if (!covariance.allFinite() || !(covariance(1, 1) > 0.0)) return std::nullopt;

  EnergyShiftEstimate e;
  e.spectra = spectra;
  e.shift_channels = delta - corrections_;
  e.standard_error_channels = std::sqrt(covariance(1, 1));
  e.scale = a;
  return e;
}

std::optional<EnergyShiftEvent> EnergyShiftTracker::Detect(const EnergyShiftEstimate& e) {
  const double variance = e.standard_error_channels * e.standard_error_channels;
  // The baseline's own uncertainty, from this block's: estimates against one reference at similar counts.
  const double baseline_variance = baseline_blocks_ > 0 ? variance / baseline_blocks_ : 0.0;
  const double change = e.shift_channels - baseline_;
  const double threshold =
      std::max(options_.min_shift_channels, options_.confidence_sigma * std::sqrt(variance + baseline_variance));
  if (std::fabs(change) <= threshold) {
    pending_ = 0;
    baseline_sum_ += e.shift_channels;
    baseline_blocks_ += 1.0;
    baseline_ = baseline_sum_ / baseline_blocks_;
    return std::nullopt;
  }
  const int sign = change > 0.0 ? 1 : -1;
  if (pending_ > 0 && sign != pending_sign_) pending_ = 0;
  if (pending_ == 0) {
    pending_onset_ = e.first_spectrum;
    pending_sign_ = sign;
    pending_shift_.resize(options_.confirm_blocks);
    pending_variance_.resize(options_.confirm_blocks);
  }
  pending_shift_(pending_) = e.shift_channels;
  pending_variance_(pending_) = variance;
  if (++pending_ < options_.confirm_blocks) return std::nullopt;

  // The first confirming block may straddle the step: the level is what follows it.
  const int skip = pending_ > 1 ? 1 : 0;
  const int used = pending_ - skip;
  const double level = pending_shift_.segment(skip, used).mean();
  const double level_variance = pending_variance_.segment(skip, used).sum() / (used * used);
  EnergyShiftEvent event;
  event.onset_spectrum = pending_onset_;
  event.detected_spectrum = spectra_seen_;
  event.magnitude_channels = level - baseline_;
  event.shift_channels = corrections_ + level;
  event.confidence = event.magnitude_channels / std::sqrt(level_variance + baseline_variance);
  baseline_ = level;
  baseline_blocks_ = used;
  baseline_sum_ = level * used;
  pending_ = 0;
  ++events_;
  return event;
}

void EnergyShiftTracker::ApplyCorrection(double delta_channels) {
  corrections_ += delta_channels;
  baseline_ -= delta_channels;
  baseline_sum_ -= delta_channels * baseline_blocks_;
  if (pending_ > 0) pending_shift_.head(pending_).array() -= delta_channels;
  if (last_) last_->shift_channels -= delta_channels;
}

}  // namespace specwatch
