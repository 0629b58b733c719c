// Residual maps of scan passes: layout, pass boundaries, robust summary against direct computations.
#include "operators/monitor/residual_map.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

/// Raster positions k = start .. start + n - 1 on a w x h scan, counting across passes.
std::vector<ScanPosition> Raster(uint64_t start, int n, uint32_t w, uint32_t h) {
  std::vector<ScanPosition> p;
  for (int i = 0; i < n; ++i) {
    const uint64_t k = start + static_cast<uint64_t>(i);
    const uint64_t in_pass = k % (uint64_t{w} * h);
    p.push_back({static_cast<uint32_t>(in_pass % w), static_cast<uint32_t>(in_pass / w),
                 static_cast<uint32_t>(k / (uint64_t{w} * h))});
  }
  return p;
}

ResidualFrame Frame(const ScanShape& shape, uint64_t number, const std::vector<ScanPosition>& positions,
                    const std::vector<float>& values) {
  ResidualFrame f;
  f.shape = shape;
  f.frame_number = number;
  f.positions = positions;
  f.values = values;
  f.statistic = "deviance_z";
  f.model_version = number + 1;
  return f;
}

}  // namespace

TEST_CASE("robust summary: median, 1.4826 MAD and the values at or above median + k sigma") {
  // 1..9 and an outlier: median 5.5, |x - 5.5| = 4.5 3.5 2.5 1.5 .5 .5 1.5 2.5 3.5 94.5 -> MAD 2.5.
  std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 100, NAN};
  const RobustSummary s = SummariseRobust(v, 5.0);
  CHECK(s.count == 10);
  CHECK(s.median == doctest::Approx(5.5));
  CHECK(s.robust_sigma == doctest::Approx(1.4826 * 2.5));
  CHECK(s.outlier_threshold == doctest::Approx(5.5 + 5 * 1.4826 * 2.5));
  CHECK(s.outliers == 1);
  CHECK(s.max == doctest::Approx(100));
  // Gaussian data: the robust sigma estimates the standard deviation.
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(2.0f, 3.0f);
  std::vector<float> g(20001);
  for (float& x : g) x = normal(gen);
  const RobustSummary gs = SummariseRobust(g, 5.0);
  CHECK(gs.median == doctest::Approx(2.0).epsilon(0.05));
  CHECK(gs.robust_sigma == doctest::Approx(3.0).epsilon(0.03));
  CHECK(gs.outliers == 0);
  // Constant data: sigma 0, no outliers by definition.
  const std::vector<float> c(10, 1.0f);
  CHECK(SummariseRobust(c, 5.0).outliers == 0);
  CHECK(SummariseRobust(std::vector<float>{}, 5.0).count == 0);
}

TEST_CASE("a raster pass is laid out row-major and handed out when complete; frames may straddle passes") {
  const ScanShape shape{4, 3};
  ResidualMapper mapper;
  std::vector<PassMap> maps;
  // 30 spectra (2.5 passes) in frames of 7: spectrum k has value k.
  for (uint64_t start = 0, number = 0; start < 30; start += 7, ++number) {
    const int n = static_cast<int>(std::min<uint64_t>(7, 30 - start));
    std::vector<float> values;
    for (int i = 0; i < n; ++i) values.push_back(static_cast<float>(start + i));
    for (auto& m : mapper.Add(Frame(shape, number, Raster(start, n, 4, 3), values))) maps.push_back(std::move(m));
  }
  REQUIRE(maps.size() == 2);
  for (uint32_t pass = 0; pass < 2; ++pass) {
    const PassMap& m = maps[pass];
    CHECK(m.pass == pass);
    CHECK(m.closed_by == "complete");
    CHECK(m.statistic == "deviance_z");
    CHECK(m.positions_scored == 12);
    CHECK(m.spectra == 12);
    REQUIRE(m.values.size() == 12);
    for (uint32_t y = 0; y < 3; ++y) {
      for (uint32_t x = 0; x < 4; ++x) CHECK(m.values[y * 4 + x] == doctest::Approx(pass * 12 + y * 4 + x));
    }
    CHECK(m.summary.median == doctest::Approx(pass * 12 + 5.5));
  }
  CHECK(maps[0].first_frame == 0);
  CHECK(maps[0].last_frame == 1);  // spectrum 11 is in frame 1 (7..13)
  CHECK(maps[1].first_frame == 1);
  // The third pass is half done: the series end hands it out with NaN where nothing came.
  auto rest = mapper.Close("series_end");
  REQUIRE(rest);
  CHECK(rest->pass == 2);
  CHECK(rest->closed_by == "series_end");
  CHECK(rest->positions_scored == 6);
  CHECK(std::isnan(rest->values[11]));
  CHECK(rest->values[5] == doctest::Approx(29));
  CHECK_FALSE(mapper.Close("series_end"));
}

TEST_CASE("lost frames: the next pass closes the incomplete one; unscored and outside spectra are counted") {
  const ScanShape shape{4, 2};
  ResidualMapper mapper;
  const std::vector<float> ones(4, 1.0f);
  CHECK(mapper.Add(Frame(shape, 0, Raster(0, 4, 4, 2), {})).empty());       // warm-up: no values
  // frame 1 (positions 4..7) lost; frame 2 starts pass 1
  auto maps = mapper.Add(Frame(shape, 2, Raster(8, 4, 4, 2), ones));
  REQUIRE(maps.size() == 1);
  CHECK(maps[0].pass == 0);
  CHECK(maps[0].closed_by == "next_pass");
  CHECK(maps[0].positions_scored == 0);
  CHECK(maps[0].spectra_unscored == 4);
  CHECK(maps[0].statistic.empty());
  // explicit positions: one outside the scan, one revisit with a larger value, an earlier pass ignored
  const std::vector<ScanPosition> explicit_positions = {{9, 0, 1}, {1, 0, 1}, {0, 0, 0}, {3, 1, 1}};
  const std::vector<float> values = {5.0f, 7.0f, 100.0f, 2.0f};
  CHECK(mapper.Add(Frame(shape, 3, explicit_positions, values)).empty());
  auto m = mapper.Close("shutdown");
  REQUIRE(m);
  CHECK(m->pass == 1);
  CHECK(m->spectra == 7);  // 4 + 3 of the explicit frame (the pass-0 one is ignored)
  CHECK(m->spectra_outside == 1);
  CHECK(m->values[1] == doctest::Approx(7.0f));  // max(1, 7)
  CHECK(m->values[7] == doctest::Approx(2.0f));
  CHECK(m->positions_scored == 5);
}

TEST_CASE("no (or a too large) scan shape, no map; a new shape closes the open pass") {
  ResidualMapper mapper;
  const std::vector<float> v(3, 1.0f);
  CHECK(mapper.Add(Frame(ScanShape{}, 0, Raster(0, 3, 3, 1), v)).empty());
  CHECK(mapper.spectra_unmapped() == 3);
  ResidualMapper small(5.0, 100);
  CHECK(small.Add(Frame(ScanShape{20, 20}, 0, Raster(0, 3, 20, 20), v)).empty());  // 400 > 100 positions
  CHECK(small.spectra_unmapped() == 3);
  CHECK_FALSE(small.open());
  CHECK_FALSE(mapper.open());
  CHECK(mapper.Add(Frame(ScanShape{8, 8}, 1, Raster(0, 3, 8, 8), v)).empty());
  auto maps = mapper.Add(Frame(ScanShape{4, 4}, 2, Raster(0, 3, 4, 4), v));
  REQUIRE(maps.size() == 1);
  CHECK(maps[0].closed_by == "scan_shape");
  CHECK(mapper.open());
}

}  // namespace specwatch

namespace specwatch {

TEST_CASE("novel positions are counted once per position and pass, revisits included") {
  const ScanShape shape{3, 2};
  ResidualMapper mapper;
  // Pass 0 with a revisit of (1, 0) inside the pass: positions 0..5, then (1, 0) again. Flagged: the first visit
  // of (1, 0), its revisit, and (2, 1) -> 2 distinct novel positions.
  std::vector<ScanPosition> positions = Raster(0, 6, 3, 2);
  positions.insert(positions.begin() + 3, ScanPosition{1, 0, 0});
  const std::vector<float> values(positions.size(), 1.0f);
  std::vector<uint8_t> novel(positions.size(), 0);
  novel[1] = 1;  // (1, 0)
  novel[3] = 1;  // (1, 0) again
  novel[6] = 1;  // (2, 1)
  ResidualFrame f = Frame(shape, 0, positions, values);
  f.novel = novel;
  auto maps = mapper.Add(f);
  REQUIRE(maps.size() == 1);
  CHECK(maps[0].novel_positions == 2);
  // The next pass starts from zero; a frame without flags counts none.
  const auto next = Raster(6, 6, 3, 2);
  maps = mapper.Add(Frame(shape, 1, next, std::vector<float>(6, 1.0f)));
  REQUIRE(maps.size() == 1);
  CHECK(maps[0].novel_positions == 0);
}

}  // namespace specwatch
