#include "operators/monitor/outlier_guard.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

namespace specwatch {

void OutlierGuardOptions::Validate() const {
  RequireOption(window_spectra >= 100, "window_spectra", ">= 100", window_spectra);
  RequireOption(min_samples >= 32 && min_samples <= window_spectra, "min_samples", "in [32, window_spectra]",
                min_samples);
  RequireOption(release_window_spectra >= 20, "release_window_spectra", ">= 20", release_window_spectra);
  RequireOption(refresh_spectra >= 1, "refresh_spectra", ">= 1", refresh_spectra);
  RequireOption(false_alarm_rate > 0.0 && false_alarm_rate < 0.05, "false_alarm_rate", "in (0, 0.05)",
                false_alarm_rate);
  RequireOption(skewness >= 0.0 && skewness <= 2.0, "skewness", "in [0, 2]", skewness);
  RequireOption(min_scale > 0.0, "min_scale", "> 0", min_scale);
  RequireOption(sigma > 0.0, "sigma", "> 0", sigma);
  RequireOption(tail_sigma > 3.0, "tail_sigma", "> 3", tail_sigma);
  RequireOption(max_fraction > 0.0 && max_fraction <= 1.0, "max_fraction", "in (0, 1]", max_fraction);
  RequireOption(release_run_spectra >= 2, "release_run_spectra", ">= 2", release_run_spectra);
}

double NormalUpperQuantile(double p) {
  if (!(p > 0.0 && p < 1.0)) return std::numeric_limits<double>::quiet_NaN();
  // Newton on Q(q) = erfc(q / √2) / 2 from the tail approximation q ≈ sqrt(−2 ln p); converges in a few steps
  // (to ~1e-12) for p in (1e-300, 1).
  double q = p < 0.5 ? std::sqrt(-2.0 * std::log(p)) - 0.8 : 0.0;
  for (int i = 0; i < 50; ++i) {
    const double tail = 0.5 * std::erfc(q / std::numbers::sqrt2);
    const double density = std::exp(-0.5 * q * q) / std::sqrt(2.0 * std::numbers::pi);
    if (!(density > 0.0)) break;
    const double step = (tail - p) / density;
    q += step;
    if (std::abs(step) < 1e-12 * std::max(1.0, std::abs(q))) break;
  }
  return q;
}

OutlierGuard::OutlierGuard(OutlierGuardOptions options)
    : options_(options), bound_(std::numeric_limits<double>::infinity()) {
  options_.Validate();
  Reset();
}

void OutlierGuard::Reset() {
  recent_.clear();
  above_recent_.clear();
  index_ = 0;
  run_ = 0;
  next_refresh_ = static_cast<uint64_t>(options_.min_samples);
  bound_ = std::numeric_limits<double>::infinity();
  location_ = 0;
  scale_ = 1;
  u90_ = u99_ = 0;
}

void OutlierGuard::Refresh() {
  next_refresh_ = index_ + std::min<uint64_t>(index_, static_cast<uint64_t>(options_.refresh_spectra));
  workspace_.assign(recent_.begin(), recent_.end());
  const auto at = [&](double q) {
    const auto k = std::min<size_t>(workspace_.size() - 1, static_cast<size_t>(q * static_cast<double>(workspace_.size())));
    std::nth_element(workspace_.begin(), workspace_.begin() + static_cast<std::ptrdiff_t>(k), workspace_.end());
    return static_cast<double>(workspace_[k]);
  };
  const double median = at(0.5);
  for (float& v : workspace_) v = std::abs(v - static_cast<float>(median));
  const double robust_sigma = 1.4826 * at(0.5);
  // A zero spread says nothing (unscored or identical scores): a bound at the median would hold out half of
  // everything.
  if (!(robust_sigma > 0.0)) {
    bound_ = std::numeric_limits<double>::infinity();
    return;
  }
  location_ = median;
  scale_ = std::max(robust_sigma, options_.min_scale);
  // The tail is read from the scores below tail_sigma: a new phase domain crossed in the window (hundreds of
  // spectra tens of σ out) must not pass for the nominal tail; it would lift the bound over every inclusion.
  const auto cut = static_cast<float>(location_ + options_.tail_sigma * scale_);
  workspace_.clear();
  for (float v : recent_) {
    if (v < cut) workspace_.push_back(v);
  }
  const double q90 = at(0.90);
  const double q99 = at(0.99);
  u90_ = (q90 - median) / scale_;
  u99_ = std::max((q99 - median) / scale_, u90_);
  const double alpha = options_.false_alarm_rate;
  const double q = NormalUpperQuantile(alpha);
  const double normal = q + (q * q - 1.0) * options_.skewness / 6.0;
  const double extrapolated = u99_ + (u99_ - u90_) * std::log10(0.01 / alpha);
  bound_ = location_ + scale_ * std::min(std::max(normal, extrapolated), options_.sigma);
}

void OutlierGuard::Push(float z) {
  ++index_;
  recent_.push_back(z);
  if (recent_.size() > static_cast<size_t>(options_.window_spectra)) recent_.pop_front();
  if (index_ >= next_refresh_) Refresh();
}

bool OutlierGuard::Common(bool above, uint64_t index) {
  const auto window = static_cast<uint64_t>(options_.release_window_spectra);
  while (!above_recent_.empty() && above_recent_.front() + window <= index) above_recent_.pop_front();
  if (!above) {
    run_ = 0;
    return false;
  }
  above_recent_.push_back(index);
  ++run_;
  // Counted against the full window from the start, so a young window does not trip the release early.
  const double fraction = static_cast<double>(above_recent_.size()) / static_cast<double>(window);
  return fraction > options_.max_fraction || run_ >= options_.release_run_spectra;
}

bool OutlierGuard::Track(float z, double threshold) {
  if (!options_.enabled) return false;
  const uint64_t index = index_;
  const bool above = z > threshold;
  Push(z);
  return Common(above, index);
}

bool OutlierGuard::Screen(float z) {
  if (!options_.enabled) return false;
  const uint64_t index = index_;
  // Screened against the bound from the scores before it: a spectrum never sets its own threshold.
  const bool above = z > bound_;
  Push(z);
  if (Common(above, index)) {
    ++released_total_;
    return false;
  }
  if (!above) return false;
  ++held_out_total_;
  return true;
}

double OutlierGuard::TailProbability(double z) const {
  if (std::isinf(bound_)) return 1.0;
  const double u = (z - location_) / scale_;
  const double decade = std::max(u99_ - u90_, 1e-6);
  return std::min(0.01, 0.01 * std::pow(10.0, -(u - u99_) / decade));
}

}  // namespace specwatch
