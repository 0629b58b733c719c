#include "operators/monitor/change_detection.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

namespace specwatch {
namespace {

double Median(std::vector<double> v) {
  const size_t n = v.size();
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n / 2), v.end());
  const double upper = v[n / 2];
  if (n % 2 == 1) return upper;
  return 0.5 * (upper + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n / 2)));
}

}  // namespace

double SiegmundArl(double k, double h, double mean_sd) {
  const double b = h + 1.166;
  const double delta = mean_sd - k;
  // The closed form cancels catastrophically near δ = 0, where it tends to b²; the series is used there.
  const double x = 2.0 * delta * b;
  if (std::abs(x) < 1e-4) return b * b * (1.0 - x / 3.0);
  return (std::exp(-x) + x - 1.0) / (2.0 * delta * delta);
}

double SiegmundArlTwoSided(double k, double h, double mean_sd) {
  return 1.0 / (1.0 / SiegmundArl(k, h, mean_sd) + 1.0 / SiegmundArl(k, h, -mean_sd));
}

double CusumHForArl(double k, double arl_blocks) {
  // The ARL grows monotonically with h; bisection on [0, hi] after doubling hi until it suffices.
  double lo = 0.0;
  double hi = 1.0;
  while (SiegmundArlTwoSided(k, hi, 0.0) < arl_blocks && hi < 1e6) hi *= 2.0;
  if (SiegmundArlTwoSided(k, lo, 0.0) >= arl_blocks) return 0.0;
  while (hi - lo > 1e-6) {
    const double mid = 0.5 * (lo + hi);
    (SiegmundArlTwoSided(k, mid, 0.0) >= arl_blocks ? hi : lo) = mid;
  }
  return hi;
}

double BlockCusumOptions::DecisionInterval() const {
  if (h_sd > 0.0) return h_sd;
  return CusumHForArl(k_sd, in_control_arl_spectra / block_spectra);
}

void BlockCusumOptions::Validate() const {
  RequireOption(block_spectra >= 1, "block_spectra", ">= 1", block_spectra);
  RequireOption(calibration_blocks >= 8, "calibration_blocks", ">= 8", calibration_blocks);
  RequireOption(k_sd >= 0.0 && std::isfinite(k_sd), "k_sd", ">= 0 and finite", k_sd);
  RequireOption(h_sd >= 0.0 && std::isfinite(h_sd), "h_sd", ">= 0 (0: from in_control_arl_spectra) and finite", h_sd);
  RequireOption(h_sd > 0.0 || (in_control_arl_spectra >= block_spectra && std::isfinite(in_control_arl_spectra)),
                "in_control_arl_spectra", ">= block_spectra and finite", in_control_arl_spectra);
}

BlockCusum::BlockCusum(BlockCusumOptions options, double clip)
    : options_(options), clip_(clip > 0.0 ? clip : std::numeric_limits<double>::infinity()) {
  options_.Validate();
  h_ = options_.DecisionInterval();
  calibration_.reserve(static_cast<size_t>(options_.calibration_blocks));
}

void BlockCusum::Reset() {
  block_sum_ = 0;
  block_count_ = 0;
  calibrated_ = false;
  calibration_.clear();
  mean_ = sd_ = 0;
  up_ = Side{};
  down_ = Side{};
  blocks_ = 0;
  skipped_ = 0;
}

void BlockCusum::SetBaseline(double mean, double sd) {
  mean_ = mean;
  sd_ = sd;
  calibrated_ = true;
  calibration_.clear();
  up_ = Side{};
  down_ = Side{};
}

std::vector<ChangeAlarm> BlockCusum::Add(std::span<const float> scores, uint64_t first_spectrum) {
  std::vector<ChangeAlarm> alarms;
  const double clip = clip_;
  for (size_t i = 0; i < scores.size(); ++i) {
    const double z = scores[i];
    if (!std::isfinite(z)) {
      ++skipped_;
      continue;
    }
    const uint64_t index = first_spectrum + i;
    if (block_count_ == 0) block_first_ = index;
    block_last_ = index;
    block_sum_ += std::clamp(z, -clip, clip);
    if (++block_count_ == options_.block_spectra) CloseBlock(alarms);
  }
  return alarms;
}

void BlockCusum::Step(Side& side, double increment, double block_mean, uint64_t block_first) {
  const double next = side.s + increment;
  if (next <= 0.0) {
    side = Side{};
    return;
  }
  if (side.blocks == 0) side.onset = block_first;
  side.s = next;
  ++side.blocks;
  side.sum += block_mean;
}

void BlockCusum::CloseBlock(std::vector<ChangeAlarm>& alarms) {
  const double m = block_sum_ / block_count_;
  const uint64_t first = block_first_;
  const uint64_t last = block_last_;
  block_sum_ = 0;
  block_count_ = 0;
  ++blocks_;

  if (!calibrated_) {
    calibration_.push_back(m);
    if (static_cast<int>(calibration_.size()) == options_.calibration_blocks) Calibrate();
    return;
  }
  const double u = (m - mean_) / sd_;
  const double k = options_.k_sd;
  Step(up_, u - k, m, first);
  Step(down_, -u - k, m, first);
  Side* side = nullptr;
  ChangeDirection direction = ChangeDirection::kUp;
  // Both sides cannot exceed h on one block unless h < k is absurdly small; the larger one wins then.
  if (up_.s > h_ && up_.s >= down_.s) {
    side = &up_;
  } else if (down_.s > h_) {
    side = &down_;
    direction = ChangeDirection::kDown;
  }
  if (side == nullptr) return;

  ChangeAlarm alarm;
  alarm.direction = direction;
  alarm.onset_spectrum = side->onset;
  alarm.detected_spectrum = last;
  alarm.magnitude = side->sum / static_cast<double>(side->blocks) - mean_;
  alarm.statistic_sd = side->s;
  alarm.baseline_mean = mean_;
  alarm.baseline_sd = sd_;
  alarms.push_back(alarm);
  // The new level is the baseline from now on: learn it afresh.
  up_ = Side{};
  down_ = Side{};
  calibrated_ = false;
  calibration_.clear();
}

void BlockCusum::Calibrate() {
  const std::vector<double>& c = calibration_;
  const double median = Median(c);
  std::vector<double> deviation(c.size());
  for (size_t i = 0; i < c.size(); ++i) deviation[i] = std::abs(c[i] - median);
  const double robust_sd = 1.4826 * Median(deviation);

  // Reweighting step: plain mean and sd of the block means within 3.5 robust sd (the truncation biases a
  // Gaussian sd by 0.3%, far below the ±9% sampling error of 64 blocks). A zero MAD (over half the blocks
  // equal) keeps them all.
  double sum = 0;
  double sum2 = 0;
  int n = 0;
  for (const double v : c) {
    if (robust_sd > 0 && std::abs(v - median) > 3.5 * robust_sd) continue;
    sum += v;
    ++n;
  }
  mean_ = sum / n;
  for (const double v : c) {
    if (robust_sd > 0 && std::abs(v - median) > 3.5 * robust_sd) continue;
    sum2 += (v - mean_) * (v - mean_);
  }
  sd_ = n > 1 ? std::sqrt(sum2 / (n - 1)) : 0.0;
  sd_ = std::max(sd_, 1e-9 * std::max(1.0, std::abs(mean_)));
  calibrated_ = true;
  calibration_.clear();
  up_ = Side{};
  down_ = Side{};
}

}  // namespace specwatch
