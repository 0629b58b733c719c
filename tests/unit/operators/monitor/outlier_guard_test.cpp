// OutlierGuard: rare outliers are held out, common ones let through; the bound is median + sigma · 1.4826 · MAD.
#include "operators/monitor/outlier_guard.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

OutlierGuardOptions Small() {
  OutlierGuardOptions o;
  o.window_spectra = 1000;
  o.release_window_spectra = 200;
  o.min_samples = 200;
  o.refresh_spectra = 50;
  o.sigma = 10.0;
  o.max_fraction = 0.05;
  return o;
}

}  // namespace

TEST_CASE("outlier guard: the bound is the robust one of the recent scores, computed independently") {
  OutlierGuard guard(Small());
  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal(2.0f, 0.5f);
  std::vector<float> seen;
  for (int i = 0; i < 199; ++i) {
    const float z = normal(gen);
    seen.push_back(z);
    CHECK_FALSE(guard.Screen(z));
    CHECK(std::isinf(guard.bound()));  // nothing is held out before min_samples
  }
  const float z = normal(gen);
  seen.push_back(z);
  guard.Screen(z);
  std::vector<float> v = seen;
  std::nth_element(v.begin(), v.begin() + 100, v.end());
  const double median = v[100];
  for (float& x : v) x = std::abs(x - static_cast<float>(median));
  std::nth_element(v.begin(), v.begin() + 100, v.end());
  const double expected = median + 10.0 * 1.4826 * v[100];
  CHECK(guard.bound() == doctest::Approx(expected).epsilon(1e-6));
  // Gaussian z with σ = 0.5: the bound sits ~5 above the median.
  CHECK(guard.bound() == doctest::Approx(2.0 + 5.0).epsilon(0.1));
}

TEST_CASE("outlier guard: a rare outlier (0.3 %) is held out every time; a common one (10 %) is let through") {
  SUBCASE("rare") {
    OutlierGuard guard(Small());
    std::mt19937_64 gen(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    int held = 0, outliers = 0, nominal_held = 0;
    for (int i = 0; i < 20000; ++i) {
      const bool outlier = i >= 300 && i % 333 == 0;
      const float z = outlier ? 50.0f + normal(gen) : normal(gen);
      const bool h = guard.Screen(z);
      outliers += outlier;
      held += outlier && h;
      nominal_held += !outlier && h;
    }
    CHECK(held == outliers);
    CHECK(nominal_held == 0);
    CHECK(guard.released() == 0);
  }
  SUBCASE("common (a phase the model has not learnt, 10 % of the spectra from 300 to 2000): held out until they "
          "pass 5 % of the release window, then let through; rare again afterwards: held out again") {
    OutlierGuard guard(Small());
    std::mt19937_64 gen(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    int held = 0, outliers = 0, late_outliers = 0, late_held = 0;
    for (int i = 0; i < 5000; ++i) {
      const bool common = i >= 300 && i < 2000 && i % 10 == 0;
      const bool rare = i >= 2500 && i % 400 == 0;
      const float z = (common || rare) ? 50.0f + normal(gen) : normal(gen);
      const bool h = guard.Screen(z);
      held += common && h;
      outliers += common;
      late_outliers += rare;
      late_held += rare && h;
    }
    // 5 % of 200 is 10: the first 10 of the 170 common outliers are held out, the rest learnt.
    CHECK(held == 10);
    CHECK(guard.released() == static_cast<uint64_t>(outliers - held));
    CHECK(late_outliers == 6);
    CHECK(late_held == late_outliers);
  }
}

TEST_CASE("outlier guard: reset forgets the window; disabled holds nothing; options validated") {
  OutlierGuard guard(Small());
  for (int i = 0; i < 300; ++i) guard.Screen(static_cast<float>(i % 7));
  CHECK(std::isfinite(guard.bound()));
  guard.Reset();
  CHECK(std::isinf(guard.bound()));
  CHECK_FALSE(guard.Screen(1e6f));
  OutlierGuardOptions off = Small();
  off.enabled = false;
  OutlierGuard none(off);
  for (int i = 0; i < 300; ++i) none.Screen(static_cast<float>(i % 7));
  CHECK_FALSE(none.Screen(1e6f));
  OutlierGuardOptions bad = Small();
  bad.max_fraction = 0.0;
  CHECK_THROWS_AS(OutlierGuard{bad}, ConfigError);
  bad = Small();
  bad.min_samples = 5000;
  CHECK_THROWS_AS(OutlierGuard{bad}, ConfigError);
}

}  // namespace specwatch
