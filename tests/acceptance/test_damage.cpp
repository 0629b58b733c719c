// Issue 5's beam-damage acceptance tests on the simulator's ground truth, in-process: the frames go through the
// service's Session (session_driver.hpp), whose dose ledger gives each spectrum the dose its position had received
// and whose damage tracker compares it with the position's first visit.
#include "session_driver.hpp"
#include "tools/sim/dose.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <variant>
#include <vector>

namespace specwatch::acceptance {
namespace {

struct DamageRun {
  std::optional<DamageReport> warning;
  double warning_at_dose = 0.0;  ///< the position dose after the visit that raised it
  DamageReport final_report;
  std::vector<DamageGroup> groups;
};

DamageRun RunDamage(const sim::SimOptions& o) {
  SessionDriver driver(o, SessionConfig{});
  DamageRun run;
  auto record = [&run](const std::vector<SeriesEvent>& events) {
    for (const SeriesEvent& e : events) {
      const auto* d = std::get_if<DamageEvent>(&e.event);
      if (d == nullptr) continue;
      if (d->report.warning && !run.warning) {
        run.warning = d->report;
        // The position dose after the visit that raised it: the end of the visit group's dose window.
        run.warning_at_dose = d->report.group.dose_start + d->report.group.dose_width;
      }
      run.final_report = d->report;
    }
  };
  for (uint64_t k = 0; k < driver.frames().FrameCount(); ++k) record(driver.Step(k).step.events);
  record(driver.End());
  // final_report: the last damage event, the fit as of the series end (a warned series' last pass map carries it).
  run.groups = driver.session().damage_tracker().groups();
  return run;
}

}  // namespace

// Medium dose: 3-phase EDS (Fe2O3, NiCu, Al-silicate; damage halves the O line and adds a C line), 5000 counts
// per pure-phase spectrum, 2048 channels, 48 x 48 positions, 12 passes; D_c = 5 visits' dose.
TEST_CASE("beam damage: a warning before the dose reaches 1.5 D_c, and D_c estimated within 30 %") {
  sim::SimOptions o = Options(Modality::kEds, 2048, 3, 5000.0, 48, 12);
  o.seed = 61;
  o.beam_current_pA = 50.0;
  o.dwell_us = 10.0;
  const double d = sim::DosePerSpectrum_e_per_A2(o.beam_current_pA, o.dwell_us, o.pixel_A);
  o.critical_dose_e_per_A2 = 5.0 * d;
  const DamageRun run = RunDamage(o);
  REQUIRE(run.warning.has_value());
  const DamageReport& w = *run.warning;
  const CriticalDoseFit& f = run.final_report.fit;
  std::printf("damage: warning at visit %u (dose %.3g = %.2f D_c), group z %.1f; final D_c %.4g [%.4g, %.4g] (true %.4g, "
              "%.1f %% off), %d groups, %llu affected positions; top energy bins:",
              w.group.visit, run.warning_at_dose, run.warning_at_dose / o.critical_dose_e_per_A2, w.group.z,
              f.critical_dose_e_per_A2, f.lower_e_per_A2, f.upper_e_per_A2, o.critical_dose_e_per_A2,
              100 * (f.critical_dose_e_per_A2 / o.critical_dose_e_per_A2 - 1), f.groups,
              static_cast<unsigned long long>(run.final_report.affected_positions));
  for (const auto& e : run.final_report.energies) std::printf(" ch %d-%d (%.1f sd)", e.first_channel, e.last_channel, e.z);
  std::printf("\n");
  CHECK(run.warning_at_dose < 1.5 * o.critical_dose_e_per_A2);
  REQUIRE(f.ok);
  CHECK(f.critical_dose_e_per_A2 == doctest::Approx(o.critical_dose_e_per_A2).epsilon(0.30));
  CHECK(f.lower_e_per_A2 <= o.critical_dose_e_per_A2 * 1.3);
  CHECK(f.upper_e_per_A2 >= o.critical_dose_e_per_A2 * 0.7);
  // What changed: the O K line (0.525 keV) lost intensity; 20.48 keV over 2048 channels, 10 eV each.
  bool oxygen = false;
  for (const auto& e : run.final_report.energies) oxygen |= e.z < 0 && e.first_channel <= 52 && e.last_channel >= 52;
  CHECK(oxygen);
  CHECK(run.final_report.affected_positions > 0);
}

// Damage off, 20 passes, the energy axis drifting by 3 channels over the run: no warning (drift is a shift, and the
// tracker aligns each revisit and removes the remainder's shift components; what is left has mean 0 at any dose).
// At medium (5000 counts) and low dose (300 counts per spectrum: mostly 0 or 1 per channel).
TEST_CASE("no beam damage, 20 passes with energy drift: no damage warning") {
  for (const double counts : {5000.0, 300.0}) {
  CAPTURE(counts);
  sim::SimOptions o = Options(Modality::kEds, 2048, 3, counts, 40, 20);
  o.seed = 62;
  o.energy_drift_channels = 3.0;
  const DamageRun run = RunDamage(o);
  double worst = 0.0;
  for (const auto& g : run.groups) worst = std::max(worst, g.z);
  std::printf("no damage, drift 3 channels, %.0f counts: %zu visit groups, largest group z %.2f, warning %s\n", counts,
              run.groups.size(), worst, run.warning ? "YES" : "no");
  CHECK_FALSE(run.warning.has_value());
  CHECK(run.groups.size() == 19);
  CHECK(worst < 4.0);
  }
}

}  // namespace specwatch::acceptance

namespace specwatch::acceptance {

// A fixed-spot time series: one position (scan 1 x 1) visited 120 times, D_c = 30 visits, 20000 counts per spectrum
// (a spot is usually dwelt on longer): every visit is a group of one.
TEST_CASE("beam damage at a fixed spot: a warning before 1.5 D_c, D_c within 30 %") {
  sim::SimOptions o = Options(Modality::kEds, 2048, 1, 20000.0, 1, 120);
  o.seed = 63;
  o.dwell_us = 10.0;
  const double d = sim::DosePerSpectrum_e_per_A2(o.beam_current_pA, o.dwell_us, o.pixel_A);
  o.critical_dose_e_per_A2 = 30.0 * d;
  const DamageRun run = RunDamage(o);
  REQUIRE(run.warning.has_value());
  const CriticalDoseFit& f = run.final_report.fit;
  std::printf("fixed spot: warning at visit %u (%.2f D_c, z %.1f); final D_c %.4g [%.4g, %.4g], true %.4g (%.1f %% off)\n",
              run.warning->group.visit, run.warning_at_dose / o.critical_dose_e_per_A2, run.warning->group.z,
              f.critical_dose_e_per_A2, f.lower_e_per_A2, f.upper_e_per_A2, o.critical_dose_e_per_A2,
              100 * (f.critical_dose_e_per_A2 / o.critical_dose_e_per_A2 - 1));
  CHECK(run.warning_at_dose < 1.5 * o.critical_dose_e_per_A2);
  REQUIRE(f.ok);
  CHECK(f.critical_dose_e_per_A2 == doctest::Approx(o.critical_dose_e_per_A2).epsilon(0.30));
}

}  // namespace specwatch::acceptance
