#include "operators/core/config_error.hpp"
#include "operators/monitor/tail_threshold.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace specwatch {
namespace {

/// A distribution with a closed-form survival function, to judge a fitted threshold by its true exceedance.
struct Source {
  std::string name;
  std::function<double(std::mt19937_64&)> draw;
  std::function<double(double)> survival;  // P(X > x)
};

double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

std::vector<Source> Sources() {
  std::vector<Source> s;
  s.push_back({"exponential", [](std::mt19937_64& g) { return std::exponential_distribution<double>(1.0)(g); },
               [](double x) { return x <= 0 ? 1.0 : std::exp(-x); }});
  // Gumbel domain, but not exactly exponential at any finite level.
  s.push_back({"max of 5 Gaussians",
               [](std::mt19937_64& g) {
                 std::normal_distribution<double> n;
                 double m = n(g);
                 for (int i = 1; i < 5; ++i) m = std::max(m, n(g));
                 return m;
               },
               [](double x) { return -std::expm1(5.0 * std::log1p(-0.5 * std::erfc(x / std::sqrt(2.0)))); }});
  const double shape = 0.25;
  s.push_back({"GPD shape 0.25",
               [shape](std::mt19937_64& g) {
                 const double u = std::uniform_real_distribution<double>(0.0, 1.0)(g);
                 return (std::pow(1.0 - u, -shape) - 1.0) / shape;
               },
               [shape](double x) { return x <= 0 ? 1.0 : std::pow(1.0 + shape * x, -1.0 / shape); }});
  // Student t with 3 degrees of freedom: shape 1/3, closed-form CDF.
  s.push_back({"Student t3", [](std::mt19937_64& g) { return std::student_t_distribution<double>(3.0)(g); },
               [](double x) {
                 const double t = x / std::sqrt(3.0);
                 const double cdf = 0.5 + (t / (1.0 + t * t) + std::atan(t)) / M_PI;
                 return x > 0 ? (std::atan(1.0 / t) - t / (1.0 + t * t)) / M_PI : 1.0 - cdf;
               }});
  return s;
}

/// x with survival(x) = p, by bisection on a bracket that grows until it holds.
double Quantile(const Source& source, double p) {
  double lo = 0.0, hi = 1.0;
  while (source.survival(hi) > p) hi *= 2.0;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (source.survival(mid) > p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

TEST_CASE("FitTailThreshold: the fitted threshold's true exceedance probability is within 2x of alpha = 1e-4") {
  // 20,000 samples, alpha = 1e-4: the threshold extrapolates from the 400 peaks above the 98th percentile to two
  // expected exceedances. The GPD shape from 400 peaks has a standard error near 0.05, which alone moves the
  // exceedance by a factor ~1.5-2 at one sigma: within 2x "in most seeds" is what the data allow.
  // Contaminated: 0.2 % of the samples (40) replaced by values 2-4 times the true 1e-7 quantile, as a rare phase's
  // scores are: trimmed, they must not move the threshold out of that band either.
  const double alpha = 1e-4;
  const int seeds = 20;
  for (const Source& source : Sources()) {
    for (const bool contaminated : {false, true}) {
      int within = 0, all_trimmed = 0;
      double worst = 1.0;
      const double far = Quantile(source, 1e-7);
      for (int seed = 0; seed < seeds; ++seed) {
        std::mt19937_64 gen(1000 + seed);
        std::vector<double> x(20000);
        for (double& v : x) v = source.draw(gen);
        if (contaminated) {
          std::uniform_real_distribution<double> spread(2.0, 4.0);
          for (size_t i = 0; i < 40; ++i) x[i * 497 + 3] = far * spread(gen);
        }
        const TailFit fit = FitTailThreshold(x, alpha);
        REQUIRE(fit.ok);
        const double ratio = source.survival(fit.threshold) / alpha;
        worst = std::max(worst, std::max(ratio, 1.0 / ratio));
        if (ratio >= 0.5 && ratio <= 2.0) ++within;
        if (fit.trimmed >= 36) ++all_trimmed;  // an anomaly just above the genuine maximum may pass as plausible
        if (!contaminated) CHECK(fit.trimmed <= 10);  // clean data: at most a few of the 20,000 trimmed
      }
      MESSAGE((source.name + (contaminated ? " + 0.2% contamination" : "")), ": within 2x in ", within, " of ", seeds,
              " seeds (worst factor ", worst, ")",
              (contaminated ? ", >= 36 of the 40 trimmed in " + std::to_string(all_trimmed) : std::string()));
      CAPTURE(source.name);
      CAPTURE(contaminated);
      // Contaminated: the default trim_p_value (1e-4) trims what is implausible at that level only. At 1e-2 the
      // contaminated cases were all within 5x, but on the service's real deviance z (a tail heavier than the
      // bulk's) the same rule trimmed the genuine top and fitted a bounded tail: 6x the target false-alarm rate
      // (docs/novelty_and_drift.md). The price here: a left-over anomaly or two in some seeds.
      CHECK(within >= (contaminated ? 12 : 13));
      CHECK(worst < (contaminated ? 15.0 : 5.0));
      if (contaminated) CHECK(all_trimmed == seeds);
    }
  }
}

TEST_CASE("FitTailThreshold: recovers the shape and scale of a GPD tail") {
  // Above u, a GPD(σ, γ) is again a GPD with the same γ and σ_u = σ + γ u. 100,000 samples: 2,000 peaks,
  // standard error of γ ≈ (1 + γ)/sqrt(2000) ≈ 0.03.
  const double shape = 0.25;
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> x(100000);
  for (double& v : x) v = (std::pow(1.0 - unit(gen), -shape) - 1.0) / shape;
  const TailFit fit = FitTailThreshold(x, 1e-4);
  REQUIRE(fit.ok);
  CHECK(std::abs(fit.shape - shape) < 0.1);
  CHECK(std::abs(fit.scale / (1.0 + shape * fit.initial_threshold) - 1.0) < 0.1);
  CHECK(fit.peaks == doctest::Approx(2000).epsilon(0.01));
  CHECK_FALSE(fit.exponential_fallback);
  // The fit's own tail probability is alpha at the threshold, and N_t / n at u.
  CHECK(fit.TailProbability(fit.threshold) == doctest::Approx(1e-4).epsilon(1e-6));
  CHECK(fit.TailProbability(fit.initial_threshold) == doctest::Approx(0.02).epsilon(0.01));
  CHECK(fit.TailProbability(fit.threshold * 2) < 1e-4);
}

TEST_CASE("FitTailThreshold: a bounded tail fits a negative shape; an exponential one a shape near 0") {
  std::mt19937_64 gen(6);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> uniform(50000), exponential(50000);
  for (double& v : uniform) v = unit(gen);
  for (double& v : exponential) v = -std::log(unit(gen));
  const TailFit bounded = FitTailThreshold(uniform, 1e-4);
  const TailFit exp_fit = FitTailThreshold(exponential, 1e-4);
  REQUIRE(bounded.ok);
  REQUIRE(exp_fit.ok);
  CHECK(bounded.shape < -0.3);   // uniform: γ = −1, held at the −0.5 bound
  CHECK(bounded.threshold < 1.01);  // the shape bound keeps the endpoint a little beyond 1
  CHECK(std::abs(exp_fit.shape) < 0.1);
  CHECK(exp_fit.threshold == doctest::Approx(-std::log(1e-4)).epsilon(0.1));
}

TEST_CASE("FitTailThreshold: failures are reported, not thrown") {
  const std::vector<double> constant(5000, 3.0);
  TailFit fit = FitTailThreshold(constant, 1e-4);
  CHECK_FALSE(fit.ok);
  CHECK_FALSE(fit.failure.empty());
  CHECK(fit.TailProbability(10.0) == 0.0);

  std::mt19937_64 gen(7);
  std::exponential_distribution<double> e;
  std::vector<double> few(500);
  for (double& v : few) v = e(gen);
  fit = FitTailThreshold(few, 1e-4);  // 10 peaks
  CHECK_FALSE(fit.ok);
  CHECK(fit.failure.find("peaks") != std::string::npos);

  std::vector<double> many(20000);
  for (double& v : many) v = e(gen);
  fit = FitTailThreshold(many, 0.05);  // alpha above the 2 % of peaks
  CHECK_FALSE(fit.ok);
  CHECK(fit.failure.find("alpha") != std::string::npos);
  many.push_back(std::nan(""));
  many.push_back(INFINITY);
  fit = FitTailThreshold(many, 1e-4);
  CHECK(fit.ok);
  CHECK(fit.samples == 20000);
}

TEST_CASE("TailFitOptions: Validate names the field") {
  TailFitOptions o;
  CHECK_NOTHROW(o.Validate());
  o.initial_quantile = 1.0;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("initial_quantile must be in [0.5, 1)"), ConfigError);
  o = {};
  o.max_trim_fraction = 0.02;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("max_trim_fraction"), ConfigError);
  o = {};
  o.trim_p_value = 0;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("trim_p_value must be"), ConfigError);
  o = {};
  o.min_peaks = 3;
  CHECK_THROWS_AS(o.Validate(), ConfigError);
}

}  // namespace
}  // namespace specwatch
