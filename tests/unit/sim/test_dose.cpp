// Dose and damage schedule against their closed forms and an independent numerical integration.

#include "tools/sim/dose.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <initializer_list>

using namespace specwatch::sim;

TEST_CASE("Dose per spectrum: D = I·τ/(e·A)") {
  const double e = 1.602176634e-19;
  // 50 pA for 10 µs on a 1 Å pixel: 50e-12·10e-6/e electrons on 1 Å².
  CHECK(DosePerSpectrum_e_per_A2(50.0, 10.0, 1.0) == doctest::Approx(50e-12 * 10e-6 / e).epsilon(1e-12));
  CHECK(DosePerSpectrum_e_per_A2(50.0, 10.0, 1.0) == doctest::Approx(3120.7545).epsilon(1e-7));
  CHECK(ElectronsPerSpectrum(1.0, 1.0) == doctest::Approx(6.2415091).epsilon(1e-7));
  // Area is the edge squared: a 2 Å pixel gets a quarter of the dose.
  CHECK(DosePerSpectrum_e_per_A2(50.0, 10.0, 2.0) == doctest::Approx(3120.7545 / 4.0).epsilon(1e-7));
  // 1 C/cm² = 624.15 e⁻/Å²: 1e-16 cm² per Å².
  CHECK(DosePerSpectrum_e_per_A2(1e12 * 1e-16, 1e6, 1.0) == doctest::Approx(624.15).epsilon(1e-5));
}

TEST_CASE("Intact weight = dwell average of exp(-D/Dc) over the visit (Simpson, 2000 intervals)") {
  for (double d_over_dc : {1e-4, 0.05, 0.3, 1.0, 4.0}) {
    const double dc = 1000.0, d = d_over_dc * dc;
    for (uint32_t p : {0u, 1u, 2u, 7u, 20u}) {
      const int n = 2000;
      const double a = p * d, h = d / n;
      double s = std::exp(-a / dc) + std::exp(-(a + d) / dc);
      for (int i = 1; i < n; ++i) s += (i % 2 ? 4.0 : 2.0) * std::exp(-(a + i * h) / dc);
      const double mean = s * h / 3.0 / d;
      CAPTURE(d_over_dc);
      CAPTURE(p);
      CHECK(IntactWeight(p, d, dc) == doctest::Approx(mean).epsilon(1e-10));
    }
  }
  CHECK(IntactWeight(3, 100.0, 0.0) == 1.0);  // damage off
  CHECK(IntactWeight(3, 0.0, 100.0) == 1.0);  // no dose
}
