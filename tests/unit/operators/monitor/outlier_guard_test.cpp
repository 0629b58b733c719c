// OutlierGuard: the provisional novelty threshold. Rare outliers are held out, common ones let through; the bound is
// the robust standardisation plus the larger of a Cornish–Fisher normal quantile and the extrapolated recent tail.
#include "operators/monitor/outlier_guard.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <cmath>
#include <random>
#include <string>
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

// The k-th order statistic at fraction q of n, k = floor(q n) (as the guard takes it).
double Quantile(std::vector<float> v, double q) {
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// The bound from its formula (outlier_guard.hpp), recomputed here from the scores.
double ExpectedBound(const std::vector<float>& seen, double alpha, double skewness, double sigma) {
  const double median = Quantile(seen, 0.5);
  std::vector<float> deviations = seen;
  for (float& x : deviations) x = std::abs(x - static_cast<float>(median));
  const double scale = std::max(1.4826 * Quantile(deviations, 0.5), 0.25);
  std::vector<float> below;
  for (float x : seen) {
    if (x < median + 10.0 * scale) below.push_back(x);  // tail_sigma
  }
  const double u90 = (Quantile(below, 0.90) - median) / scale;
  const double u99 = (Quantile(below, 0.99) - median) / scale;
  const double q = NormalUpperQuantile(alpha);
  const double normal = q + (q * q - 1.0) * skewness / 6.0;
  const double extrapolated = u99 + (u99 - u90) * std::log10(0.01 / alpha);
  return median + scale * std::min(std::max(normal, extrapolated), sigma);
}

TEST_CASE("outlier guard: the provisional bound is the formula's on the recent scores, computed independently") {
  OutlierGuardOptions o = Small();
  o.false_alarm_rate = 1e-4;
  OutlierGuard guard(o);
  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal(2.0f, 0.5f);
  std::vector<float> seen;
  for (int i = 0; i < 200; ++i) {
    CHECK(std::isinf(guard.bound()));  // nothing is held out before min_samples
    const float z = normal(gen);
    seen.push_back(z);
    CHECK_FALSE(guard.Screen(z));
  }
  CHECK(guard.bound() == doctest::Approx(ExpectedBound(seen, 1e-4, o.skewness, o.sigma)).epsilon(1e-5));
  // Gaussian z with σ = 0.5: q(1e-4) = 3.719 plus the Cornish–Fisher allowance, or the tail extrapolated: ~4.4 σ.
  CHECK(guard.bound() == doctest::Approx(2.0 + 0.5 * 4.4).epsilon(0.1));
  CHECK(NormalUpperQuantile(1e-4) == doctest::Approx(3.7190165).epsilon(1e-7));
  CHECK(NormalUpperQuantile(0.5) == doctest::Approx(0.0).scale(1.0).epsilon(1e-9));
  CHECK(NormalUpperQuantile(1e-12) == doctest::Approx(7.0344838).epsilon(1e-6));
}

TEST_CASE("outlier guard: the provisional threshold's false-alarm rate over 10^6 nominal scores is at most 2x the "
          "target, light and heavy tails, from the 64th score on") {
  struct Case {
    const char* name;
    std::function<float(std::mt19937_64&)> draw;
    double low;  // the rate is at least this fraction of alpha (the extrapolation is exact for exponential tails)
  };
  const std::vector<Case> cases = {
      {"normal", [](std::mt19937_64& g) { return std::normal_distribution<float>(0.3f, 1.2f)(g); }, 0.0},
      {"exponential", [](std::mt19937_64& g) { return std::exponential_distribution<float>(1.5f)(g) - 0.4f; }, 0.5},
      {"t(8)", [](std::mt19937_64& g) { return std::student_t_distribution<float>(8.0f)(g); }, 0.0},
  };
  for (const double alpha : {1e-3, 1e-4}) {
    for (const Case& c : cases) {
      OutlierGuardOptions o;  // the defaults, as the service runs them
      o.false_alarm_rate = alpha;
      OutlierGuard guard(o);
      std::mt19937_64 gen(11);
      const int n = 1000000;
      int above = 0;
      for (int i = 0; i < n; ++i) above += guard.Screen(c.draw(gen)) || guard.released() > 0;
      const double rate = static_cast<double>(above) / n;
      MESSAGE(std::string(c.name), " at alpha ", alpha, ": ", above, " of ", n, " held out (", rate / alpha, " x alpha)");
      CAPTURE(c.name);
      CAPTURE(alpha);
      CHECK(guard.released() == 0);
      CHECK(rate <= 2.0 * alpha);
      CHECK(rate >= c.low * alpha);
    }
  }
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
