#include "operators/monitor/outlier_guard.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace specwatch {

void OutlierGuardOptions::Validate() const {
  RequireOption(window_spectra >= 100, "window_spectra", ">= 100", window_spectra);
  RequireOption(min_samples >= 50 && min_samples <= window_spectra, "min_samples", "in [50, window_spectra]",
                min_samples);
  RequireOption(release_window_spectra >= 20, "release_window_spectra", ">= 20", release_window_spectra);
  RequireOption(refresh_spectra >= 1, "refresh_spectra", ">= 1", refresh_spectra);
  RequireOption(sigma > 0.0, "sigma", "> 0", sigma);
  RequireOption(max_fraction > 0.0 && max_fraction <= 1.0, "max_fraction", "in (0, 1]", max_fraction);
}

OutlierGuard::OutlierGuard(OutlierGuardOptions options)
    : options_(options), bound_(std::numeric_limits<double>::infinity()) {
  options_.Validate();
}

void OutlierGuard::Reset() {
  recent_.clear();
  above_recent_.clear();
  index_ = 0;
  since_refresh_ = 0;
  bound_ = std::numeric_limits<double>::infinity();
}

void OutlierGuard::Refresh() {
  since_refresh_ = 0;
  workspace_.assign(recent_.begin(), recent_.end());
  const auto mid = workspace_.begin() + static_cast<std::ptrdiff_t>(workspace_.size() / 2);
  std::nth_element(workspace_.begin(), mid, workspace_.end());
  const double median = *mid;
  for (float& v : workspace_) v = std::abs(v - static_cast<float>(median));
  std::nth_element(workspace_.begin(), mid, workspace_.end());
  const double robust_sigma = 1.4826 * *mid;
  // A zero spread says nothing: a bound at the median would hold out half of everything.
  bound_ = robust_sigma > 0.0 ? median + options_.sigma * robust_sigma : std::numeric_limits<double>::infinity();
}

bool OutlierGuard::Screen(float z) {
  if (!options_.enabled) return false;
  const uint64_t index = index_++;
  recent_.push_back(z);
  if (recent_.size() > static_cast<size_t>(options_.window_spectra)) recent_.pop_front();
  const auto window = static_cast<uint64_t>(options_.release_window_spectra);
  while (!above_recent_.empty() && above_recent_.front() + window <= index) above_recent_.pop_front();
  if (recent_.size() >= static_cast<size_t>(options_.min_samples) &&
      (++since_refresh_ >= static_cast<uint64_t>(options_.refresh_spectra) || std::isinf(bound_))) {
    Refresh();
  }
  if (!(z > bound_)) return false;
  above_recent_.push_back(index);
  // Counted against the full window from the start, so a young window does not trip the release early.
  const double fraction = static_cast<double>(above_recent_.size()) / static_cast<double>(window);
  if (fraction > options_.max_fraction) {
    ++released_total_;
    return false;
  }
  ++held_out_total_;
  return true;
}

}  // namespace specwatch
