// The count sampler: Poisson draws, the alias table, and their combination (N ~ Poisson(Λ) spread over the
// channels by the alias table), compared with the closed forms they must reproduce. All tests use fixed
// seeds, so they are deterministic; the tolerances are stated in standard errors (5 σ unless noted).

#include "tools/sim/alias_table.hpp"
#include "tools/sim/random.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <initializer_list>
#include <numeric>
#include <vector>

using namespace specwatch::sim;

TEST_CASE("LogFactorial matches lgamma(k+1)") {
  for (uint64_t k : {0ull, 1ull, 2ull, 10ull, 255ull, 256ull, 257ull, 1000ull, 123456ull, 10000000ull}) {
    const double expected = std::lgamma(static_cast<double>(k) + 1.0);
    CHECK(LogFactorial(k) == doctest::Approx(expected).epsilon(1e-13));
  }
}

TEST_CASE("SamplePoisson: mean, variance and P(0) match Poisson(λ)") {
  // Standard error of the sample mean: sqrt(λ/M); of the sample variance: sqrt((λ + 2λ²)/M)
  // (fourth central moment of Poisson is λ + 3λ²).
  for (double lambda : {0.05, 0.7, 3.0, 9.99, 10.0, 47.5, 1000.0, 1e5}) {
    CAPTURE(lambda);
    Rng rng(1234 + static_cast<uint64_t>(lambda * 100));
    const int m = 200000;
    double sum = 0.0, sum2 = 0.0;
    int zeros = 0;
    for (int i = 0; i < m; ++i) {
      const double k = static_cast<double>(SamplePoisson(rng, lambda));
      sum += k;
      sum2 += k * k;
      zeros += k == 0.0;
    }
    const double mean = sum / m;
    const double var = (sum2 - m * mean * mean) / (m - 1);
    CHECK(std::fabs(mean - lambda) < 5.0 * std::sqrt(lambda / m));
    CHECK(std::fabs(var - lambda) < 5.0 * std::sqrt((lambda + 2.0 * lambda * lambda) / m));
    const double p0 = std::exp(-lambda);
    CHECK(std::fabs(zeros / static_cast<double>(m) - p0) < 5.0 * std::sqrt(p0 * (1.0 - p0) / m) + 1e-12);
  }
  Rng rng(1);
  CHECK(SamplePoisson(rng, 0.0) == 0);
  CHECK(SamplePoisson(rng, -1.0) == 0);
}

TEST_CASE("AliasTable: exact probabilities equal the normalised weights") {
  std::vector<double> w = {0.0, 1.0, 2.0, 0.0, 10.0, 0.5, 1e-6, 3.0, 0.0, 7.25};
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  AliasTable t(w);
  CHECK(t.Total() == doctest::Approx(total));
  double sum = 0.0;
  for (uint32_t j = 0; j < w.size(); ++j) {
    // Quantisation: thresholds to 2^-32, index mapping to n/2^32 relative.
    CHECK(std::fabs(t.Probability(j) - w[j] / total) < 1e-8);
    if (w[j] == 0.0) CHECK(t.Probability(j) == 0.0);
    sum += t.Probability(j);
  }
  CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("AliasTable: a single non-zero weight always draws that index") {
  std::vector<double> w(7, 0.0);
  w[4] = 3.0;
  AliasTable t(w);
  Rng rng(5);
  for (int i = 0; i < 10000; ++i) REQUIRE(t.Draw(rng) == 4);
}

TEST_CASE("Poisson count + alias spreading: per-channel mean = variance = expected, channels independent") {
  // An EDS-like expected spectrum: slope, two Gaussian lines and empty channels.
  const int n = 256;
  std::vector<double> mu(n);
  for (int j = 0; j < n; ++j) {
    mu[j] = (j < 10 ? 0.0 : 2.0 * std::exp(-j / 80.0)) + 30.0 * std::exp(-0.5 * std::pow((j - 100) / 3.0, 2)) +
            8.0 * std::exp(-0.5 * std::pow((j - 180) / 4.0, 2));
  }
  const double lambda = std::accumulate(mu.begin(), mu.end(), 0.0);
  AliasTable t(mu);
  Rng rng(99);
  const int m = 20000;
  std::vector<double> s1(n, 0.0), s2(n, 0.0);
  double cross = 0.0;  // channels 100 and 101 (both high): covariance must vanish
  std::vector<uint32_t> h(n);
  for (int i = 0; i < m; ++i) {
    std::fill(h.begin(), h.end(), 0u);
    t.DrawInto(rng, SamplePoisson(rng, lambda), h.data());
    for (int j = 0; j < n; ++j) {
      s1[j] += h[j];
      s2[j] += double(h[j]) * h[j];
    }
    cross += double(h[100]) * h[101];
  }
  double chi2 = 0.0, var_sum = 0.0, var_sd2 = 0.0, mu_sum = 0.0;
  int dof = 0;
  for (int j = 0; j < n; ++j) {
    const double mean = s1[j] / m;
    const double var = (s2[j] - m * mean * mean) / (m - 1);
    if (mu[j] == 0.0) {
      CHECK(s1[j] == 0.0);  // never a count where nothing is expected
      continue;
    }
    const double z = (mean - mu[j]) / std::sqrt(mu[j] / m);
    CHECK(std::fabs(z) < 5.0);
    chi2 += z * z;
    ++dof;
    var_sum += var;
    mu_sum += mu[j];
    var_sd2 += (mu[j] + 2.0 * mu[j] * mu[j]) / m;
  }
  // Σ z² ~ χ²(dof): within 5 standard deviations sqrt(2·dof).
  CHECK(std::fabs(chi2 - dof) < 5.0 * std::sqrt(2.0 * dof));
  // Poisson: Σ variances = Σ means, within 5 standard errors of the summed sample variances.
  CHECK(std::fabs(var_sum - mu_sum) < 5.0 * std::sqrt(var_sd2));
  // Independence: correlation of two neighbouring channels within 5/sqrt(M).
  const double m100 = s1[100] / m, m101 = s1[101] / m;
  const double cov = cross / m - m100 * m101;
  const double corr = cov / std::sqrt(mu[100] * mu[101]);
  CHECK(std::fabs(corr) < 5.0 / std::sqrt(double(m)));
}
