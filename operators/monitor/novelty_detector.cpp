#include "operators/monitor/novelty_detector.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace specwatch {
namespace {

// median + sigmas · 1.4826 · MAD of `values` (a copy is partially sorted); +inf when the MAD is 0, where a
// "robust sigma" says nothing and a threshold at the median would exclude half of everything.
double RobustUpperBound(std::vector<double> values, double sigmas) {
  if (values.empty()) return std::numeric_limits<double>::infinity();
  const auto mid = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), mid, values.end());
  const double median = *mid;
  for (double& v : values) v = std::abs(v - median);
  std::nth_element(values.begin(), mid, values.end());
  const double sigma = 1.4826 * *mid;
  return sigma > 0.0 ? median + sigmas * sigma : std::numeric_limits<double>::infinity();
}

}  // namespace

void NoveltyOptions::Validate() const {
  ValidateMember("tail", [&] { tail.Validate(); });
  RequireOption(false_alarm_rate > 0.0 && false_alarm_rate < 1.0 - tail.initial_quantile, "false_alarm_rate",
                "in (0, 1 - tail.initial_quantile)", false_alarm_rate);
  RequireOption(calibration_spectra >= 1000, "calibration_spectra", ">= 1000", calibration_spectra);
  RequireOption(exclusion_min_samples >= 100, "exclusion_min_samples", ">= 100", exclusion_min_samples);
  RequireOption(exclusion_sigma > 0.0, "exclusion_sigma", "> 0", exclusion_sigma);
  RequireOption(regime_window_spectra >= 1, "regime_window_spectra", ">= 1", regime_window_spectra);
  RequireOption(regime_fraction > 0.0 && regime_fraction <= 1.0, "regime_fraction", "in (0, 1]", regime_fraction);
  RequireOption(regime_min_span_spectra >= 0, "regime_min_span_spectra", ">= 0", regime_min_span_spectra);
  RequireOption(absorb_spectra >= 0, "absorb_spectra", ">= 0", absorb_spectra);
  RequireOption(hotelling_share > 0.0 && hotelling_share < 1.0, "hotelling_share", "in (0, 1)", hotelling_share);
}

const char* ToString(NoveltyState state) {
  switch (state) {
    case NoveltyState::kCalibrating: return "calibrating";
    case NoveltyState::kMonitoring: return "monitoring";
    case NoveltyState::kAbsorbing: return "absorbing";
  }
  return "?";
}

NoveltyDetector::NoveltyDetector(NoveltyOptions options) : options_(std::move(options)) {
  options_.Validate();
  Recalibrate();
}

void NoveltyDetector::Recalibrate() {
  state_ = NoveltyState::kCalibrating;
  z_samples_.clear();
  t2_samples_.clear();
  attempted_ = false;
  since_attempt_ = 0;
  exclusion_active_ = false;
  exclusion_refreshed_at_ = 0;
  calibration_problem_.clear();
  recent_novel_.clear();
  regime_since_.reset();
  absorb_left_ = 0;
}

uint64_t NoveltyDetector::needed() const {
  const auto every = static_cast<uint64_t>(std::max(1, options_.calibration_spectra / 4));
  if (!attempted_) return static_cast<uint64_t>(options_.calibration_spectra);
  return z_samples_.size() + (every > since_attempt_ ? every - since_attempt_ : 0);
}

double NoveltyDetector::progress() const {
  if (state_ != NoveltyState::kCalibrating) return 1.0;
  return std::min(1.0, static_cast<double>(collected()) / static_cast<double>(needed()));
}

std::optional<RegimeChange> NoveltyDetector::Observe(std::span<const float> z, std::span<const float> t2,
                                                     std::span<const uint8_t> in_reference,
                                                     std::span<NoveltyVerdict> verdicts) {
  const size_t m = z.size();
  if (verdicts.size() != m || (!in_reference.empty() && in_reference.size() != m) ||
      (t2.size() != m && !(t2.empty() && !options_.use_hotelling))) {
    throw std::invalid_argument("NoveltyDetector::Observe: z, t2, in_reference and verdicts sizes disagree");
  }
  std::optional<RegimeChange> change;
  const auto window = static_cast<uint64_t>(options_.regime_window_spectra);
  const auto needed_novel = static_cast<size_t>(std::ceil(options_.regime_fraction * static_cast<double>(window)));
  for (size_t i = 0; i < m; ++i) {
    const uint64_t index = index_++;
    const float zi = z[i];
    const float ti = options_.use_hotelling ? t2[i] : 0.0f;
    NoveltyVerdict verdict = NoveltyVerdict::kNominal;
    if (state_ == NoveltyState::kAbsorbing) {
      // Counted over every spectrum, scored or not: what matters is what the model learns.
      if (--absorb_left_ == 0) Recalibrate();
    } else if (std::isfinite(zi) && std::isfinite(ti)) {
      ++scored_;
      if (state_ == NoveltyState::kCalibrating) {
        verdict = Calibrate(zi, ti, in_reference.empty() || in_reference[i] != 0);
      } else if (zi > z_threshold_ || (options_.use_hotelling && ti > t2_threshold_)) {
        verdict = NoveltyVerdict::kNovel;
        ++novel_;
        recent_novel_.push_back(index);
      }
      if (state_ == NoveltyState::kMonitoring) {
        while (!recent_novel_.empty() && recent_novel_.front() + window <= index) recent_novel_.pop_front();
        // Persistent: the novel fraction has stayed at regime_fraction for regime_min_span_spectra, so a cause found
        // and corrected meanwhile (an energy step the model is shifted to follow, ClearRegimeWindow) does not pass
        // for a new phase. Measured from when the fraction was reached, not from the window's oldest novel
        // spectrum: old false alarms must not shorten the wait.
        const bool over = recent_novel_.size() >= needed_novel;
        if (!over) {
          regime_since_.reset();
        } else if (!regime_since_) {
          regime_since_ = index;
        }
        if (over && index - *regime_since_ >=
                        static_cast<uint64_t>(std::min(options_.regime_min_span_spectra, options_.regime_window_spectra / 2))) {
          change = RegimeChange{recent_novel_.front(),
                                static_cast<double>(recent_novel_.size()) / static_cast<double>(window),
                                options_.regime_window_spectra};
          ++regime_changes_;
          recent_novel_.clear();
          regime_since_.reset();
          state_ = NoveltyState::kAbsorbing;
          absorb_left_ = static_cast<uint64_t>(options_.absorb_spectra);
          if (absorb_left_ == 0) Recalibrate();
        }
      }
    }
    verdicts[i] = verdict;
  }
  return change;
}

NoveltyVerdict NoveltyDetector::Calibrate(float z, float t2, bool reference) {
  // Only by z: T² of a scan with phase domains is multi-modal (pure-phase pixels sit far out on one axis), so a
  // robust spread says nothing about its outliers, and excluding by it would keep whole phases from the model.
  if (exclusion_active_ && z > z_exclusion_) {
    ++excluded_;
    return NoveltyVerdict::kExcluded;
  }
  if (!reference) return NoveltyVerdict::kNominal;
  z_samples_.push_back(z);
  t2_samples_.push_back(t2);
  ++since_attempt_;
  // The cap when fits keep failing: the newest samples are the relevant ones.
  const auto cap = static_cast<size_t>(4) * static_cast<size_t>(options_.calibration_spectra);
  while (z_samples_.size() > cap) {
    z_samples_.pop_front();
    t2_samples_.pop_front();
  }
  // Exclusion statistics refreshed by sample count (not spectrum count): excluded spectra never change when
  // or from what they are computed.
  const auto every = static_cast<uint64_t>(options_.exclusion_min_samples);
  if (since_attempt_ >= exclusion_refreshed_at_ + every || (!exclusion_active_ && collected() >= every)) {
    RefreshExclusion();
  }
  if (collected() >= needed()) TryFit();
  return NoveltyVerdict::kNominal;
}

void NoveltyDetector::RefreshExclusion() {
  exclusion_refreshed_at_ = since_attempt_;
  exclusion_active_ = true;
  z_exclusion_ = RobustUpperBound(std::vector<double>(z_samples_.begin(), z_samples_.end()), options_.exclusion_sigma);
}

void NoveltyDetector::TryFit() {
  attempted_ = true;
  since_attempt_ = 0;
  exclusion_refreshed_at_ = 0;
  const double share = options_.use_hotelling ? options_.hotelling_share : 0.0;
  deviance_fit_ = FitTailThreshold(std::vector<double>(z_samples_.begin(), z_samples_.end()),
                                   options_.false_alarm_rate * (1.0 - share), options_.tail);
  if (options_.use_hotelling) {
    hotelling_fit_ = FitTailThreshold(std::vector<double>(t2_samples_.begin(), t2_samples_.end()),
                                      options_.false_alarm_rate * share, options_.tail);
  }
  calibration_problem_.clear();
  if (!deviance_fit_.ok) calibration_problem_ = "deviance_z tail fit: " + deviance_fit_.failure;
  if (options_.use_hotelling && !hotelling_fit_.ok) {
    if (!calibration_problem_.empty()) calibration_problem_ += "; ";
    calibration_problem_ += "hotelling_t2 tail fit: " + hotelling_fit_.failure;
  }
  if (!calibration_problem_.empty()) return;  // keep collecting
  z_threshold_ = deviance_fit_.threshold;
  t2_threshold_ = options_.use_hotelling ? hotelling_fit_.threshold : std::numeric_limits<double>::infinity();
  state_ = NoveltyState::kMonitoring;
  recent_novel_.clear();
  z_samples_.clear();
  t2_samples_.clear();
}

}  // namespace specwatch
