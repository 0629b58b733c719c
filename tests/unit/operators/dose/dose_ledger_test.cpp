// DoseLedger against closed forms: uniform passes give p·D per position and W·H·p·D per run; alarms fire at the
// visit that reaches a threshold, once per position and level.
#include "operators/dose/dose_ledger.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

namespace specwatch {
namespace {

std::vector<ScanPosition> Line(uint32_t width, uint32_t y, uint32_t pass) {
  std::vector<ScanPosition> p(width);
  for (uint32_t x = 0; x < width; ++x) p[x] = ScanPosition{x, y, pass};
  return p;
}

}  // namespace

TEST_CASE("dose per spectrum: I tau / (e A)") {
  // 50 pA for 10 us on 1 A^2: 50e-12 * 10e-6 / 1.602176634e-19 = 3120.75 electrons.
  CHECK(DosePerSpectrum_e_per_A2(50.0, 10e-6, 1.0) == doctest::Approx(50e-12 * 10e-6 / 1.602176634e-19).epsilon(1e-12));
  CHECK(DosePerSpectrum_e_per_A2(50.0, 10e-6, 4.0) == doctest::Approx(3120.7548 / 4.0).epsilon(1e-6));
  CHECK(DosePerSpectrum_e_per_A2(0.0, 10e-6, 1.0) == 0.0);
  CHECK(DosePerSpectrum_e_per_A2(50.0, 0.0, 1.0) == 0.0);
  CHECK(DosePerSpectrum_e_per_A2(50.0, 10e-6, -1.0) == 0.0);
}

TEST_CASE("dose ledger: uniform passes, position and run totals, alarms exactly at the thresholds, once each") {
  const uint32_t w = 8, h = 4;
  const double d = 0.1 * 3.0;  // not exactly representable: sums of d must still reach k·d budgets
  DoseLedger ledger;
  DoseBudget budget;
  budget.position_e_per_A2 = 5 * d;  // warning at 0.8 · 5 d = 4 d, limit at 5 d
  budget.run_e_per_A2 = w * h * 3 * d;  // warning at 2.4 passes, limit at 3
  ledger.StartSeries(ScanShape{w, h}, budget);
  std::vector<std::vector<DoseAlarm>> by_pass(7);
  for (uint32_t pass = 0; pass < 7; ++pass) {
    for (uint32_t y = 0; y < h; ++y) {
      const auto line = Line(w, y, pass);
      std::vector<DoseAlarm> alarms;
      ledger.AddFrame(w, line, d, 1e-5, &alarms);
      for (auto& a : alarms) by_pass[pass].push_back(a);
      // Position alarms come per frame (one per level), naming the frame's whole line.
      for (const auto& a : alarms) {
        if (a.run) continue;
        CHECK(a.positions.size() == w);
        CHECK(a.positions[0].y == y);
        CHECK(a.doses_e_per_A2[0] == doctest::Approx((pass + 1) * d));
      }
    }
    for (uint32_t i = 0; i < w * h; ++i) CHECK(ledger.position_dose()[i] == doctest::Approx((pass + 1) * d).epsilon(1e-12));
    CHECK(ledger.run_dose_e_per_A2() == doctest::Approx(w * h * (pass + 1) * d).epsilon(1e-12));
  }
  auto count = [&](uint32_t pass, DoseLevel level, bool run) {
    size_t n = 0;
    for (const auto& a : by_pass[pass]) {
      if (a.level == level && a.run == run) n += run ? 1 : a.positions.size();
    }
    return n;
  };
  // Warning at the 4th visit (pass 3), limit at the 5th (pass 4), every position once; nothing before or after.
  for (uint32_t pass = 0; pass < 7; ++pass) {
    CAPTURE(pass);
    CHECK(count(pass, DoseLevel::kWarning, false) == (pass == 3 ? w * h : 0));
    CHECK(count(pass, DoseLevel::kLimit, false) == (pass == 4 ? w * h : 0));
    // Run: warning at 2.4 passes (pass 2), limit at 3 passes (the last frame of pass 2).
    CHECK(count(pass, DoseLevel::kWarning, true) == (pass == 2 ? 1 : 0));
    CHECK(count(pass, DoseLevel::kLimit, true) == (pass == 2 ? 1 : 0));
  }
  for (const auto& a : by_pass[2]) {
    if (!a.run) continue;
    CHECK(a.run_dose_e_per_A2 >= a.threshold_e_per_A2 * (1 - 1e-12));
    CHECK(a.threshold_e_per_A2 == doctest::Approx(a.level == DoseLevel::kWarning ? 0.8 * budget.run_e_per_A2
                                                                              : budget.run_e_per_A2));
  }
  CHECK(ledger.positions_over_warning() == w * h);
  CHECK(ledger.positions_over_limit() == w * h);
  CHECK(ledger.max_position_dose_e_per_A2() == doctest::Approx(7 * d));
  CHECK(ledger.dose_rate_e_per_A2_per_s() == doctest::Approx(d / 1e-5));
  CHECK(ledger.RemainingAt(0, 0) == 0.0);

  // A new, larger budget re-arms the alarms: positions already beyond its warning fire at once.
  budget.position_e_per_A2 = 8 * d;  // warning at 6.4 d: all (at 7 d) are beyond; limit at 8 d: none yet
  std::vector<DoseAlarm> now;
  ledger.SetBudget(budget, &now);
  size_t warned = 0, limited = 0;
  for (const auto& a : now) {
    if (a.run) continue;
    (a.level == DoseLevel::kWarning ? warned : limited) += a.positions.size();
  }
  CHECK(warned == w * h);
  CHECK(limited == 0);
  CHECK(ledger.RemainingAt(2, 1) == doctest::Approx(d));
}

TEST_CASE("dose ledger: revisits of a region, positions outside the scan, frames without acquisition data") {
  DoseLedger ledger;
  DoseBudget budget;
  budget.position_e_per_A2 = 2.5;
  ledger.StartSeries(ScanShape{4, 4}, budget);
  std::vector<DoseAlarm> alarms;
  // Position (1, 1) visited three times at 1 e/A^2: warning (2.0) at the 2nd, limit (2.5) at the 3rd.
  const std::vector<ScanPosition> one{{1, 1, 0}};
  ledger.AddFrame(1, one, 1.0, 0.0, &alarms);
  CHECK(alarms.empty());
  ledger.AddFrame(1, std::vector<ScanPosition>{{1, 1, 1}}, 1.0, 0.0, &alarms);
  REQUIRE(alarms.size() == 1);
  CHECK(alarms[0].level == DoseLevel::kWarning);
  CHECK(alarms[0].positions[0].pass == 1);
  alarms.clear();
  ledger.AddFrame(1, std::vector<ScanPosition>{{1, 1, 2}}, 1.0, 0.0, &alarms);
  REQUIRE(alarms.size() == 1);
  CHECK(alarms[0].level == DoseLevel::kLimit);
  alarms.clear();
  ledger.AddFrame(1, std::vector<ScanPosition>{{1, 1, 3}}, 1.0, 0.0, &alarms);
  CHECK(alarms.empty());  // once per level
  // Outside the scan: the run only.
  ledger.AddFrame(1, std::vector<ScanPosition>{{9, 0, 0}}, 1.0, 0.0, &alarms);
  CHECK(ledger.run_dose_e_per_A2() == doctest::Approx(5.0));
  CHECK(ledger.max_position_dose_e_per_A2() == doctest::Approx(4.0));
  // No acquisition data: counted, no dose.
  ledger.AddFrame(3, {}, 0.0, 0.0, &alarms);
  CHECK(ledger.spectra() == 8);
  CHECK(ledger.spectra_without_dose() == 3);
  CHECK(ledger.run_dose_e_per_A2() == doctest::Approx(5.0));
  // Unknown scan shape: run dose only.
  ledger.StartSeries(ScanShape{}, budget);
  ledger.AddFrame(2, std::vector<ScanPosition>{{0, 0, 0}, {1, 0, 0}}, 1.5, 0.0, &alarms);
  CHECK(ledger.run_dose_e_per_A2() == doctest::Approx(3.0));
  CHECK(ledger.position_dose().empty());
}

TEST_CASE("dose budget: validated") {
  DoseBudget b;
  b.warning_fraction = 1.0;
  CHECK_THROWS_AS(b.Validate(), ConfigError);
  b.warning_fraction = 0.8;
  b.position_e_per_A2 = -1;
  CHECK_THROWS_AS(b.Validate(), ConfigError);
  b.position_e_per_A2 = 100;
  CHECK_NOTHROW(b.Validate());
}

}  // namespace specwatch
