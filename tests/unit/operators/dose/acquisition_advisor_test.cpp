// AcquisitionAdvisor: skip where the budget is spent or damage began, revisit where novelty was seen and the budget
// allows a visit at higher dose, continue elsewhere.
#include "operators/dose/acquisition_advisor.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

namespace specwatch {
namespace {

// One visit of every position of a w x h scan at dose d, then `extra` more visits of the rectangle x0..x1, y0..y1.
void Scan(DoseLedger& ledger, uint32_t w, uint32_t h, double d, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1,
          int extra) {
  std::vector<DoseAlarm> alarms;
  for (uint32_t y = 0; y < h; ++y) {
    std::vector<ScanPosition> line;
    for (uint32_t x = 0; x < w; ++x) line.push_back({x, y, 0});
    ledger.AddFrame(w, line, d, 1e-5, &alarms);
  }
  for (int k = 0; k < extra; ++k) {
    std::vector<ScanPosition> roi;
    for (uint32_t y = y0; y <= y1; ++y) {
      for (uint32_t x = x0; x <= x1; ++x) roi.push_back({x, y, static_cast<uint32_t>(1 + k)});
    }
    ledger.AddFrame(roi.size(), roi, d, 1e-5, &alarms);
  }
}

}  // namespace

TEST_CASE("advisor: budget-spent tiles skip, novel tiles with budget revisit, the rest continue") {
  const uint32_t w = 20, h = 12;  // tiles of 8: 3 x 2, the last column and row smaller
  DoseLedger ledger;
  DoseBudget budget;
  budget.position_e_per_A2 = 4.0;  // 4 visits at d = 1
  ledger.StartSeries(ScanShape{w, h}, budget);
  Scan(ledger, w, h, 1.0, 0, 0, 5, 5, 3);  // tile (0, 0): positions 0..5 x 0..5 at 4 visits, spent
  AdviceOptions o;
  o.tile_px = 8;
  AcquisitionAdvisor advisor(o);
  advisor.StartSeries(ScanShape{w, h});
  advisor.MarkNovel({17, 9, 0});   // tile (2, 1): revisit (1 dose used, 3 left >= 2 x 1)
  advisor.MarkNovel({17, 10, 0});
  advisor.MarkNovel({3, 3, 0});    // tile (0, 0): novel, but spent -> skip
  AdviceMap map = advisor.Advise(ledger);
  REQUIRE(map.tiles_x == 3);
  REQUIRE(map.tiles_y == 2);
  CHECK(map.revisit_dose_e_per_A2 == doctest::Approx(2.0));
  CHECK(map.tiles[0].advice == TileAdvice::kSkip);
  CHECK(map.tiles[0].reason == "budget");
  CHECK(map.tiles[0].max_dose_e_per_A2 == doctest::Approx(4.0));
  CHECK(map.tiles[1 * 3 + 2].advice == TileAdvice::kRevisit);
  CHECK(map.tiles[1 * 3 + 2].novel_positions == 2);
  CHECK(map.tiles[1 * 3 + 2].remaining_e_per_A2 == doctest::Approx(3.0));
  CHECK(map.Count(TileAdvice::kContinue) == 4);
  // Damage skips, whatever the budget.
  advisor.MarkDamaged({10, 2, 1});
  map = advisor.Advise(ledger);
  CHECK(map.tiles[1].advice == TileAdvice::kSkip);
  CHECK(map.tiles[1].reason == "damage");
  // Too little budget left for a visit at twice the dose: continue, not revisit.
  budget.position_e_per_A2 = 2.5;
  std::vector<DoseAlarm> alarms;
  ledger.SetBudget(budget, &alarms);
  map = advisor.Advise(ledger);
  CHECK(map.tiles[1 * 3 + 2].advice == TileAdvice::kContinue);
  // The run budget spent: every tile skips.
  budget.position_e_per_A2 = 0;
  budget.run_e_per_A2 = ledger.run_dose_e_per_A2() + 0.5;
  ledger.SetBudget(budget, &alarms);
  map = advisor.Advise(ledger);
  CHECK(map.Count(TileAdvice::kSkip) == 6);
  CHECK(map.tiles[5].reason == "run_budget");
  // No position budget: never "budget"; novelty revisits.
  budget.run_e_per_A2 = 0;
  ledger.SetBudget(budget, &alarms);
  map = advisor.Advise(ledger);
  CHECK(map.tiles[0].advice == TileAdvice::kRevisit);
  CHECK(std::isinf(map.tiles[0].remaining_e_per_A2));
}

TEST_CASE("advisor: a new series forgets the marks; options validated") {
  AcquisitionAdvisor advisor(AdviceOptions{});
  advisor.StartSeries(ScanShape{16, 16});
  advisor.MarkNovel({1, 1, 0});
  DoseLedger ledger;
  ledger.StartSeries(ScanShape{16, 16}, DoseBudget{});
  CHECK(advisor.Advise(ledger).Count(TileAdvice::kRevisit) == 1);
  advisor.StartSeries(ScanShape{16, 16});
  CHECK(advisor.Advise(ledger).Count(TileAdvice::kRevisit) == 0);
  advisor.StartSeries(ScanShape{});
  CHECK(advisor.Advise(ledger).tiles.empty());
  AdviceOptions bad;
  bad.tile_px = 0;
  CHECK_THROWS_AS(AcquisitionAdvisor{bad}, ConfigError);
  bad = AdviceOptions{};
  bad.revisit_dose_factor = 0.5;
  CHECK_THROWS_AS(AcquisitionAdvisor{bad}, ConfigError);
}

}  // namespace specwatch
