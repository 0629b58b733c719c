// Spectral models against reference physics: detector resolution, Bragg angles, line positions, and the
// structural properties the simulator relies on (non-negative, distinct phases, a distinct inclusion).

#include "tools/sim/simulator.hpp"
#include "tools/sim/spectral_models.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <numeric>

using namespace specwatch;
using namespace specwatch::sim;

namespace {

SimOptions Base(Modality m) {
  SimOptions o;
  o.modality = m;
  o.channels = 2048;
  o.scan_width = 8;
  o.scan_height = 8;
  o.phases = 5;
  o.inclusion_fraction = 0.05;
  o.grow_phase = true;
  o.passes = 3;
  o.critical_dose_e_per_A2 = 1000.0;
  o.endpoint = "tcp://127.0.0.1:1";
  return o;
}

/// Axis value of the maximum of `s` within [lo, hi] (axis units), refined by a 3-point parabola.
double PeakPosition(const Simulator& sim, const std::vector<double>& s, double lo, double hi) {
  const auto& a = sim.Axis();
  int best = -1;
  for (int j = 1; j + 1 < static_cast<int>(s.size()); ++j) {
    const double e = a.offset + a.dispersion * j;
    if (e < lo || e > hi) continue;
    if (best < 0 || s[j] > s[best]) best = j;
  }
  REQUIRE(best > 0);
  const double l = std::log(s[best - 1]), c = std::log(s[best]), r = std::log(s[best + 1]);
  const double delta = (l - r) / (2.0 * (l - 2.0 * c + r));
  return a.offset + a.dispersion * (best + delta);
}

}  // namespace

TEST_CASE("EDS resolution: 130 eV at Mn Ka, ~60 eV at O Ka, growing with energy") {
  CHECK(EdsFwhm_keV(5.8988) == doctest::Approx(0.130).epsilon(1e-9));
  CHECK(EdsFwhm_keV(0.525) > 0.050);
  CHECK(EdsFwhm_keV(0.525) < 0.070);
  CHECK(EdsFwhm_keV(10.0) > EdsFwhm_keV(8.0));
  // Fano-limited SDD: FWHM² − FWHM_Mn² = 2.455 eV·ΔE.
  const double f = EdsFwhm_keV(9.442) * 1000.0;
  CHECK(f * f - 130.0 * 130.0 == doctest::Approx(2.455 * (9442.0 - 5898.8)).epsilon(1e-9));
}

TEST_CASE("Bragg angles with Cu Ka1 match tabulated values") {
  CHECK(BraggTwoTheta_deg(5.4309 / std::sqrt(3.0), kCuKalpha1_A) == doctest::Approx(28.443).epsilon(2e-4));  // Si 111
  CHECK(BraggTwoTheta_deg(3.1652 / std::sqrt(2.0), kCuKalpha1_A) == doctest::Approx(40.262).epsilon(2e-4));  // W 110
  CHECK(BraggTwoTheta_deg(4.0495 / std::sqrt(3.0), kCuKalpha1_A) == doctest::Approx(38.472).epsilon(2e-4));  // Al 111
  CHECK(std::isnan(BraggTwoTheta_deg(0.5, kCuKalpha1_A)));
}

TEST_CASE("Line and peak positions in the simulated spectra") {
  // Tolerance: a quarter channel plus the asymmetry of neighbouring lines.
  {
    Simulator sim(Base(Modality::kEds));
    const double ch = sim.Axis().dispersion;
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(0, false), 6.2, 6.6) == doctest::Approx(6.404).epsilon(0.25 * ch / 6.4));   // Fe Ka
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(1, false), 7.3, 7.7) == doctest::Approx(7.478).epsilon(0.25 * ch / 7.4));   // Ni Ka
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(1, false), 7.9, 8.2) == doctest::Approx(8.048).epsilon(0.25 * ch / 8.0));   // Cu Ka
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(2, false), 1.6, 1.8) == doctest::Approx(1.740).epsilon(0.25 * ch / 1.7));   // Si Ka
    const int inc = sim.GetScene().InclusionIndex();
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(inc, false), 9.2, 9.7) == doctest::Approx(9.442).epsilon(0.25 * ch / 9.4));  // Pt La
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(inc, false), 1.95, 2.15) == doctest::Approx(2.048).epsilon(0.25 * ch / 2.0));  // Pt Ma
  }
  {
    Simulator sim(Base(Modality::kXrd));
    // Si 111: the unresolved Ka2 component (half intensity, +0.07 deg) pulls the maximum up by ~0.016 deg.
    const double si111 = PeakPosition(sim, sim.PhaseSpectrum(0, false), 28.0, 29.0);
    CHECK(si111 > 28.443);
    CHECK(si111 < 28.443 + 0.03);
  }
  {
    Simulator sim(Base(Modality::kRaman));
    CHECK(PeakPosition(sim, sim.PhaseSpectrum(0, false), 500.0, 540.0) == doctest::Approx(520.7).epsilon(0.5 / 520.0));
  }
  {
    Simulator sim(Base(Modality::kEels));
    CHECK(std::fabs(PeakPosition(sim, sim.PhaseSpectrum(0, false), -5.0, 5.0)) < 0.1);  // ZLP at 0 eV
  }
}

TEST_CASE("EELS: ZLP only when the axis includes 0 eV; core-loss axis keeps the edges") {
  SimOptions o = Base(Modality::kEels);
  o.energy_offset = 400.0;
  o.dispersion = 0.25;
  Simulator sim(o);
  const auto s = sim.PhaseSpectrum(0, false);  // Fe2O3: O K at 532, Fe L3 at 709.5 eV
  auto at = [&](double e) { return s[static_cast<size_t>(std::lround((e - 400.0) / 0.25))]; };
  CHECK(at(540.0) > 1.5 * at(525.0));   // O K edge jump
  CHECK(at(709.5) > 3.0 * at(700.0));   // Fe L3 white line above the pre-edge background
  CHECK(at(709.5) > at(722.6));         // L3 > L2 (ratio 5.5)
  CHECK(at(450.0) > at(520.0));         // power-law background falls with energy
  CHECK(std::accumulate(s.begin(), s.end(), 0.0) == doctest::Approx(o.mean_counts));
}

TEST_CASE("Every catalogue phase: finite, non-negative, normalised, distinct, and damage changes it") {
  for (Modality m : {Modality::kEels, Modality::kEds, Modality::kXrd, Modality::kRaman}) {
    CAPTURE(static_cast<int>(m));
    Simulator sim(Base(m));
    const int phases = static_cast<int>(sim.Phases().size());
    REQUIRE(phases == 7);
    std::vector<std::vector<double>> spectra;
    for (int p = 0; p < phases; ++p) {
      const auto s = sim.PhaseSpectrum(p, false);
      const auto d = sim.PhaseSpectrum(p, true);
      for (double v : s) REQUIRE((std::isfinite(v) && v >= 0.0));
      for (double v : d) REQUIRE((std::isfinite(v) && v >= 0.0));
      CHECK(std::accumulate(s.begin(), s.end(), 0.0) == doctest::Approx(1000.0).epsilon(1e-9));
      double diff = 0.0;
      for (size_t j = 0; j < s.size(); ++j) diff += std::fabs(s[j] - d[j]);
      CHECK(diff > 0.0005 * 1000.0);  // EELS: the ZLP and plasmons, which damage leaves alone, hold most counts
      spectra.push_back(s);
    }
    for (int a = 0; a < phases; ++a) {
      for (int b = a + 1; b < phases; ++b) {
        double l1 = 0.0;
        for (size_t j = 0; j < spectra[a].size(); ++j) l1 += std::fabs(spectra[a][j] - spectra[b][j]);
        CHECK(l1 > 0.02 * 1000.0);
      }
    }
    // The inclusion has a feature no base phase has: some channel where it exceeds 3x every base phase.
    const int inc = sim.GetScene().InclusionIndex();
    double best = 0.0;
    for (size_t j = 0; j < spectra[inc].size(); ++j) {
      double base_max = 1e-12;
      for (int p = 0; p < sim.GetScene().BasePhaseCount(); ++p) base_max = std::max(base_max, spectra[p][j]);
      best = std::max(best, spectra[inc][j] / base_max);
    }
    CHECK(best > 3.0);
  }
}
