#include "tools/sim/random.hpp"

#include <array>

namespace specwatch::sim {

namespace {

constexpr int kLogFactorialTable = 256;

const std::array<double, kLogFactorialTable>& LogFactorialTable() {
  static const std::array<double, kLogFactorialTable> table = [] {
    std::array<double, kLogFactorialTable> t{};
    t[0] = 0.0;
    for (int k = 1; k < kLogFactorialTable; ++k) t[k] = t[k - 1] + std::log(static_cast<double>(k));
    return t;
  }();
  return table;
}

}  // namespace

double LogFactorial(uint64_t k) {
  if (k < kLogFactorialTable) return LogFactorialTable()[k];
  // Stirling: ln k! = (k+1/2) ln(k+1) - (k+1) + ln(2π)/2 + 1/(12(k+1)) - 1/(360(k+1)^3) + 1/(1260(k+1)^5)
  const double x = static_cast<double>(k) + 1.0;
  const double ix = 1.0 / x;
  const double ix2 = ix * ix;
  return (x - 0.5) * std::log(x) - x + 0.91893853320467274178 +
         ix * (1.0 / 12.0 - ix2 * (1.0 / 360.0 - ix2 / 1260.0));
}

uint64_t SamplePoisson(Rng& rng, double mean) {
  if (!(mean > 0.0)) return 0;
  if (mean < 10.0) {
    // Inversion: walk the CDF. Expected mean+1 steps.
    const double u = rng.Uniform();
    double p = std::exp(-mean);
    double cdf = p;
    uint64_t k = 0;
    while (u >= cdf) {
      ++k;
      p *= mean / static_cast<double>(k);
      cdf += p;
      if (p < 1e-300 && k > mean) break;  // u rounded above the representable CDF
    }
    return k;
  }
  // PTRS (W. Hörmann, "The transformed rejection method for generating Poisson random variables", 1993),
  // as in numpy's random_poisson_ptrs.
  const double slam = std::sqrt(mean);
  const double loglam = std::log(mean);
  const double b = 0.931 + 2.53 * slam;
  const double a = -0.059 + 0.02483 * b;
  const double invalpha = 1.1239 + 1.1328 / (b - 3.4);
  const double vr = 0.9277 - 3.6224 / (b - 2.0);
  for (;;) {
    const double u = rng.Uniform() - 0.5;
    const double v = rng.UniformOpen();
    const double us = 0.5 - std::fabs(u);
    const double kf = std::floor((2.0 * a / us + b) * u + mean + 0.43);
    if (us >= 0.07 && v <= vr) return static_cast<uint64_t>(kf);
    if (kf < 0.0 || (us < 0.013 && v > us)) continue;
    const auto k = static_cast<uint64_t>(kf);
    if (std::log(v) + std::log(invalpha) - std::log(a / (us * us) + b) <=
        -mean + kf * loglam - LogFactorial(k)) {
      return k;
    }
  }
}

}  // namespace specwatch::sim
