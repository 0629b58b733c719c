// EnergyShiftTracker against Poisson data drawn from a known spectrum (a Gaussian line on a smooth background,
// integrated over each channel at the true shift).
#include "operators/core/config_error.hpp"
#include "operators/monitor/energy_shift.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

constexpr int kChannels = 512;
constexpr double kPeakChannel = 200.0;
constexpr double kPeakSigma = 3.0;  // channels

/// Expected counts per spectrum with the axis shifted by `shift` (features at channel j + shift): a Gaussian
/// line of `peak_counts`, integrated over each channel exactly (erf), on a falling background sampled at the
/// channel centre.
Eigen::VectorXd Spectrum(double shift, double peak_counts, double background = 0.2) {
  Eigen::VectorXd mu(kChannels);
  const double c = kPeakChannel + shift;
  for (int j = 0; j < kChannels; ++j) {
    const double upper = (j + 0.5 - c) / (kPeakSigma * std::sqrt(2.0));
    const double lower = (j - 0.5 - c) / (kPeakSigma * std::sqrt(2.0));
    const double line = 0.5 * peak_counts * (std::erf(upper) - std::erf(lower));
    mu(j) = line + background * (std::exp(-(j - shift) / 150.0) + 0.1);
  }
  return mu;
}

Eigen::VectorXd Poisson(const Eigen::VectorXd& mean, std::mt19937_64& gen) {
  Eigen::VectorXd x(mean.size());
  for (Eigen::Index j = 0; j < mean.size(); ++j) x(j) = std::poisson_distribution<int64_t>(mean(j))(gen);
  return x;
}

struct Moments {
  double mean = 0, sd = 0, mean_se = 0;
};

}  // namespace

TEST_CASE("EnergyShiftOptions: out-of-range fields are rejected by name") {
  const auto message = [](EnergyShiftOptions o) {
    try {
      o.Validate(kChannels);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(message({}).empty());
  EnergyShiftOptions o;
  o.block_spectra = 0;
  CHECK(message(o).find("block_spectra must be") != std::string::npos);
  o = {};
  o.feature_channel = kChannels;
  CHECK(message(o).find("feature_channel") != std::string::npos);
  o = {};
  o.confidence_sigma = 0;
  CHECK(message(o).find("confidence_sigma must be") != std::string::npos);
  o = {};
  o.confirm_blocks = 0;
  CHECK(message(o).find("confirm_blocks must be") != std::string::npos);
  o = {};
  o.window_half_width_channels = 1;
  CHECK(message(o).find("window_half_width_channels") != std::string::npos);
  CHECK_THROWS_AS(EnergyShiftTracker(kChannels, o), ConfigError);
}

TEST_CASE("EnergyShiftTracker: shift estimates are unbiased and scatter as their standard error says") {
  // 20 counts per spectrum in the line: σ_δ ≈ 0.04 channel per 512-spectrum block. 300 seeds per shift: the
  // mean is known to ~0.003 channel, the sample sd to ~4% (1/sqrt(2·300)).
  constexpr int kSeeds = 300;
  constexpr double kPeakCounts = 20.0;
  const Eigen::VectorXd reference_mean = Spectrum(0.0, kPeakCounts) * 2048.0;
  for (double shift : {0.1, 0.5, 3.0}) {
    CAPTURE(shift);
    const Eigen::VectorXd block_mean = Spectrum(shift, kPeakCounts) * 512.0;
    std::mt19937_64 gen(1234 + static_cast<uint64_t>(shift * 10));
    std::vector<double> estimates, errors;
    for (int seed = 0; seed < kSeeds; ++seed) {
      EnergyShiftTracker tracker(kChannels, {});
      tracker.Add(Poisson(reference_mean, gen), 2048);
      REQUIRE(tracker.has_reference());
      CHECK(tracker.feature_channel() == doctest::Approx(kPeakChannel).epsilon(1.01 / kPeakChannel));
      tracker.Add(Poisson(block_mean, gen), 512);
      REQUIRE(tracker.last_estimate().has_value());
      estimates.push_back(tracker.last_estimate()->shift_channels);
      errors.push_back(tracker.last_estimate()->standard_error_channels);
    }
    Moments m;
    for (double e : estimates) m.mean += e / kSeeds;
    for (double e : estimates) m.sd += (e - m.mean) * (e - m.mean) / (kSeeds - 1);
    m.sd = std::sqrt(m.sd);
    double se2 = 0.0;
    for (double e : errors) se2 += e * e / kSeeds;
    const double se = std::sqrt(se2);
    MESSAGE("shift " << shift << ": mean " << m.mean << ", sd " << m.sd << ", standard error " << se);
    CHECK(std::fabs(m.mean - shift) < 0.03);
    CHECK(m.sd / se == doctest::Approx(1.0).epsilon(0.3));
    CHECK(se > 0.02);  // the test is at the counts it claims: the estimates are not trivially exact
  }
}

TEST_CASE("EnergyShiftTracker: a 0.5-channel step is detected, once, within 2000 spectra; a correction re-zeroes") {
  // 100 counts per spectrum in the line; frames of 64 spectra, so a frame can straddle the step (its sum is
  // then Poisson with the mixed mean, as the sum of its spectra would be).
  constexpr double kPeakCounts = 100.0;
  const Eigen::VectorXd flat = Spectrum(0.0, kPeakCounts), stepped = Spectrum(0.5, kPeakCounts);
  const Eigen::VectorXd stepped2 = Spectrum(1.0, kPeakCounts);
  for (uint64_t onset : {2048u + 512u * 6u + 1u, 2048u + 512u * 6u + 200u, 2048u + 512u * 6u + 450u, 9000u}) {
    CAPTURE(onset);
    std::mt19937_64 gen(onset);
    EnergyShiftTracker tracker(kChannels, {});
    std::vector<EnergyShiftEvent> events;
    const uint64_t second_onset = onset + 10000;
    for (uint64_t first = 0; first < onset + 20000; first += 64) {
      Eigen::VectorXd mean = Eigen::VectorXd::Zero(kChannels);
      for (uint64_t i = first; i < first + 64; ++i) {
        mean += i < onset ? flat : (i < second_onset ? stepped : stepped2);
      }
      if (auto event = tracker.Add(Poisson(mean, gen), 64)) {
        events.push_back(*event);
        // The caller shifts the model to the new level, and tells the tracker.
        tracker.ApplyCorrection(event->shift_channels - tracker.corrections_channels());
        CHECK(tracker.baseline_channels() == doctest::Approx(0.0).epsilon(1e-12));
      }
    }
    REQUIRE(events.size() == 2);
    const EnergyShiftEvent& e = events[0];
    CHECK(e.detected_spectrum - onset <= 2000);
    // The first confirming block began at most a block before the step (it straddles it), or, when the block
    // holding the step had too little of it to exceed the threshold, with the next block.
    CHECK(e.onset_spectrum + 512 > onset);
    CHECK(e.onset_spectrum < onset + 512);
    CHECK(std::fabs(e.magnitude_channels - 0.5) < 0.1);
    CHECK(std::fabs(e.shift_channels - 0.5) < 0.1);
    CHECK(e.confidence > 5.0);
    // After the correction the estimates are relative to the shifted model; the second step adds 0.5 more.
    const EnergyShiftEvent& f = events[1];
    CHECK(f.detected_spectrum - second_onset <= 2000);
    CHECK(std::fabs(f.magnitude_channels - 0.5) < 0.1);
    CHECK(std::fabs(f.shift_channels - 1.0) < 0.1);
    CHECK(std::fabs(tracker.corrections_channels() - 1.0) < 0.1);
    CHECK(std::fabs(tracker.total_shift_channels() - 1.0) < 0.1);
    CHECK(std::fabs(tracker.last_estimate()->shift_channels) < 0.1);
  }
}

TEST_CASE("EnergyShiftTracker: 10^6 stationary spectra give no event; a lax threshold on the same data does") {
  // 8 counts per spectrum in the line: σ_δ ≈ 0.07 channel per block, so 5σ (not min_shift 0.2) is the
  // threshold that matters. Block sums are drawn as Poisson directly (the sum of 512 spectra).
  constexpr double kPeakCounts = 8.0;
  const Eigen::VectorXd block_mean = Spectrum(0.0, kPeakCounts) * 512.0;
  std::mt19937_64 gen(77);
  EnergyShiftTracker strict(kChannels, {});
  EnergyShiftOptions lax_options;
  lax_options.min_shift_channels = 0.0;
  lax_options.confidence_sigma = 1.0;
  lax_options.confirm_blocks = 1;
  EnergyShiftTracker lax(kChannels, lax_options);
  uint64_t strict_events = 0, lax_events = 0;
  double z_max = 0.0, se_sum = 0.0;
  int blocks = 0;
  for (uint64_t seen = 0; seen < 1000000; seen += 512) {
    const Eigen::VectorXd counts = Poisson(block_mean, gen);
    strict_events += strict.Add(counts, 512).has_value();
    lax_events += lax.Add(counts, 512).has_value();
    if (strict.last_estimate() && seen >= 2048) {
      const auto& e = *strict.last_estimate();
      z_max = std::max(z_max, std::fabs(e.shift_channels / e.standard_error_channels));
      se_sum += e.standard_error_channels;
      ++blocks;
    }
  }
  MESSAGE("blocks " << blocks << ", mean standard error " << se_sum / blocks << ", largest |z| " << z_max
                    << ", lax events " << lax_events);
  CHECK(strict.failed_blocks() == 0);
  CHECK(strict_events == 0);
  CHECK(5.0 * se_sum / blocks > 0.2);  // the confidence threshold, not min_shift, is what holds them
  // |z| > 1 about a third of the time: a detector that never fires would pass the first check, not this one.
  CHECK(lax_events > blocks / 10);
}

}  // namespace specwatch
