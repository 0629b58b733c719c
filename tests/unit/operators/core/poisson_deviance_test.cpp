#include "operators/core/poisson_deviance.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

/// Independent reference: pmf from lgamma in long double, summed over x in [0, μ + 40 sqrt(μ) + 60].
void Moments(double mu, double* mean, double* variance) {
  const long double m = mu;
  const auto hi = static_cast<int>(mu + 40.0 * std::sqrt(mu) + 60.0);
  const auto lo = std::max(0, static_cast<int>(mu - 40.0 * std::sqrt(mu)));
  long double s0 = 0, s1 = 0, s2 = 0;
  for (int x = lo; x <= hi; ++x) {
    const long double p = std::exp(x * std::log(m) - m - std::lgamma(static_cast<long double>(x) + 1));
    const long double d = x == 0 ? 2 * m : 2 * (x * std::log(x / m) - (x - m));
    s0 += p;
    s1 += p * d;
    s2 += p * d * d;
  }
  *mean = static_cast<double>(s1 / s0);
  *variance = static_cast<double>(s2 / s0 - (s1 / s0) * (s1 / s0));
}

double UnitDeviance(double x, double mu) { return x <= 0 ? 2 * mu : 2 * (x * std::log(x / mu) - (x - mu)); }

TEST_CASE("Poisson deviance moments: per-octave polynomials within 2e-5 of direct summation on [2e-5, 1e4], "
          "series above") {
  double worst_f = 0, worst_g = 0;
  // A spacing incommensurate with the octaves and the fit's nodes.
  for (int i = 0; i <= 1500; ++i) {
    const double mu = 2e-5 * std::pow(5e8, i / 1500.0) * (1.0 + 0.0037 * (i % 7));
    double f, g;
    Moments(mu, &f, &g);
    worst_f = std::max(worst_f, std::abs(PoissonDevianceMean(mu) / f - 1.0));
    worst_g = std::max(worst_g, std::abs(PoissonDevianceVariance(mu) / g - 1.0));
  }
  MESSAGE("largest relative error on [2e-5, 1e4]: f ", worst_f, ", g ", worst_g);
  CHECK(worst_f < 2e-5);
  CHECK(worst_g < 2e-5);
  for (double mu : {1e-6, 5e-6, 7e4, 2e5, 1e6, 5e6}) {  // below the grid (direct sum) and above it (asymptotic series)
    double f, g;
    Moments(mu, &f, &g);
    CAPTURE(mu);
    CHECK(std::abs(PoissonDevianceMean(mu) / f - 1.0) < 1e-4);
    CHECK(std::abs(PoissonDevianceVariance(mu) / g - 1.0) < 1e-4);
  }
  for (double mu : {1e-3, 0.3, 7.0, 900.0}) {
    double f, g, f_ref, g_ref;
    PoissonDevianceMomentsExact(mu, &f, &g);
    Moments(mu, &f_ref, &g_ref);
    CHECK(f == doctest::Approx(f_ref).epsilon(1e-9));
    CHECK(g == doctest::Approx(g_ref).epsilon(1e-9));
  }
  // The shapes that matter: far below the nominal χ²(1) at low counts, the Bartlett-corrected 1 + 1/(6μ) high.
  CHECK(PoissonDevianceMean(0.05) < 0.35);
  CHECK(PoissonDevianceMean(1000.0) == doctest::Approx(1.0 + 1.0 / 6000.0).epsilon(1e-6));
  CHECK(PoissonDevianceVariance(1000.0) == doctest::Approx(2.0).epsilon(1e-3));
  CHECK(PoissonDevianceMean(0.0) == 0.0);
  CHECK(PoissonDevianceVariance(-1.0) == 0.0);
}

TEST_CASE("SumPoissonDevianceMoments: the sum of the per-channel moments") {
  std::mt19937_64 gen(1);
  std::uniform_real_distribution<float> log_mu(-2.0f, 4.5f);
  std::vector<float> mu(1001);
  double f = 0, g = 0;
  for (float& m : mu) {
    m = std::pow(10.0f, log_mu(gen));
    f += PoissonDevianceMean(m);
    g += PoissonDevianceVariance(m);
  }
  double sf, sg;
  SumPoissonDevianceMoments(mu, &sf, &sg);
  CHECK(sf == doctest::Approx(f).epsilon(1e-5));
  CHECK(sg == doctest::Approx(g).epsilon(1e-5));
}

TEST_CASE("ScorePoissonDeviance: z of Poisson spectra from a known mean has mean 0 and sd 1 at any dose") {
  // 1024 channels whose means vary 10-fold about the level; 3000 spectra per dose. Standard errors: 0.018 on the
  // mean, 0.013 on the sd. The nominal (Dev − D)/sqrt(2D) is checked to be far off at low dose, so this test
  // would notice the moments being replaced by their χ² limits.
  const int d = 1024, spectra = 3000;
  std::mt19937_64 gen(2);
  for (const double level : {0.05, 1.0, 50.0}) {
    Eigen::VectorXf mu(d);
    for (int j = 0; j < d; ++j) mu(j) = static_cast<float>(level * (0.2 + 1.8 * (0.5 + 0.5 * std::sin(0.05 * j))));
    std::vector<std::poisson_distribution<int>> draw;
    for (int j = 0; j < d; ++j) draw.emplace_back(mu(j));
    Eigen::VectorXf x(d);
    DevianceWorkspace workspace;
    double sum = 0, sum2 = 0, naive_sum = 0;
    for (int i = 0; i < spectra; ++i) {
      for (int j = 0; j < d; ++j) x(j) = static_cast<float>(draw[j](gen));
      const DevianceScore s = ScorePoissonDeviance(x, mu, &workspace);
      sum += s.z;
      sum2 += s.z * s.z;
      naive_sum += (s.deviance - d) / std::sqrt(2.0 * d);
      if (i == 0) {  // the deviance itself against a double computation
        double dev = 0;
        for (int j = 0; j < d; ++j) dev += UnitDeviance(x(j), mu(j));
        CHECK(s.deviance == doctest::Approx(dev).epsilon(1e-4));
        CHECK(s.z == doctest::Approx((s.deviance - s.expected) / std::sqrt(s.variance)));
      }
    }
    const double mean = sum / spectra;
    const double sd = std::sqrt(sum2 / spectra - mean * mean);
    MESSAGE("level ", level, " counts/channel: z mean ", mean, ", sd ", sd, "; nominal chi2 z mean ",
            naive_sum / spectra);
    CAPTURE(level);
    CHECK(std::abs(mean) < 0.05);
    CHECK(std::abs(sd - 1.0) < 0.1);
    if (level <= 1.0) CHECK(std::abs(naive_sum / spectra) > 1.0);  // -16 at 0.05, +1.2 at 1 count/channel
  }
}

TEST_CASE("ScorePoissonDeviance: reconstructions at or below zero are floored") {
  Eigen::VectorXf x(3), mu(3);
  x << 0, 2, 5;
  mu << -1, 0, 5;
  const DevianceScore s = ScorePoissonDeviance(x, mu);
  const double floor = kDevianceFloor;
  const double dev = UnitDeviance(0, floor) + UnitDeviance(2, floor) + UnitDeviance(5, 5);
  CHECK(s.deviance == doctest::Approx(dev).epsilon(1e-5));
  CHECK(s.expected == doctest::Approx(2 * PoissonDevianceMean(floor) + PoissonDevianceMean(5)).epsilon(1e-5));
  CHECK(std::isfinite(s.z));
}

TEST_CASE("TopDevianceChannels: the channels of a missing line come first, with their sign") {
  const int d = 512;
  Eigen::VectorXf mu = Eigen::VectorXf::Constant(d, 20.0f);
  std::mt19937_64 gen(3);
  std::poisson_distribution<int> draw(20.0);
  Eigen::VectorXf x(d);
  for (int j = 0; j < d; ++j) x(j) = static_cast<float>(draw(gen));
  for (int j = 300; j < 304; ++j) x(j) = 90.0f;  // a line the model lacks
  x(100) = 0.0f;                                 // a channel far below its expectation
  const auto top = TopDevianceChannels(x, mu, 6);
  REQUIRE(top.size() == 6);
  for (int k = 0; k < 4; ++k) {
    CHECK(top[k].channel >= 300);
    CHECK(top[k].channel < 304);
    CHECK(top[k].sign == 1);
  }
  CHECK(top[4].channel == 100);
  CHECK(top[4].sign == -1);
  for (size_t k = 0; k < top.size(); ++k) {
    const double want = UnitDeviance(x(top[k].channel), 20.0) - PoissonDevianceMean(20.0);
    CHECK(top[k].excess == doctest::Approx(want).epsilon(1e-4));
    if (k > 0) CHECK(top[k - 1].excess >= top[k].excess);
  }
  CHECK(TopDevianceChannels(x, mu, 0).empty());
  CHECK(TopDevianceChannels(x.head(3), mu.head(3), 10).size() == 3);
  // A per-channel floor, as the score uses: a reconstruction at 0 where 3 counts came is scored against the floor.
  x(7) = 3.0f;
  Eigen::VectorXf rec = x.cwiseMax(1.0f);  // a reconstruction that explains every other channel
  rec(7) = 0.0f;
  const Eigen::ArrayXf lower = Eigen::ArrayXf::Constant(d, 0.5f);
  const auto floored = TopDevianceChannels(x, rec, 1, &lower);
  REQUIRE(floored.size() == 1);
  CHECK(floored[0].channel == 7);
  CHECK(floored[0].expected == 0.5f);
  CHECK(floored[0].excess == doctest::Approx(UnitDeviance(3.0, 0.5) - PoissonDevianceMean(0.5)).epsilon(1e-4));
  CHECK(TopDevianceChannels(x, rec, 1)[0].expected == kDevianceFloor);  // without it: the absolute floor
}

}  // namespace
}  // namespace specwatch
