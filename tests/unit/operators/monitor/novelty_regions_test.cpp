// Novelty regions: known shapes, merges, connectivity, revisits and the cap; statistics against a flood fill.
#include "operators/monitor/novelty_regions.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace specwatch {
namespace {

/// A spectrum of D = 3 channels, distinct per call.
std::vector<float> Spectrum(float a) { return {a, 2.0f * a, 100.0f - a}; }

/// Adds the positions in order, one spectrum each, frame = index; counts the new-region results.
int AddAll(NoveltyRegions& regions, const std::vector<std::pair<uint32_t, uint32_t>>& positions, float base = 0) {
  int news = 0;
  uint64_t frame = 0;
  for (const auto& [x, y] : positions) {
    if (regions.Add({x, y, 0}, Spectrum(base + static_cast<float>(frame)), 1.0, frame).NewRegion()) ++news;
    ++frame;
  }
  return news;
}

}  // namespace

TEST_CASE("NoveltyRegionsOptions: Validate names the field") {
  CHECK_NOTHROW(NoveltyRegionsOptions{}.Validate());
  NoveltyRegionsOptions o;
  o.max_regions = 0;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("max_regions must be >= 1"), ConfigError);
  o = {};
  o.connectivity = 6;
  CHECK_THROWS_WITH_AS(NoveltyRegions{o}, doctest::Contains("connectivity must be 4 or 8"), ConfigError);
}

TEST_CASE("NoveltyRegions: two blobs are two regions, one new-region result each; area, centroid, box") {
  NoveltyRegions regions({}, {32, 32});
  // A 3 x 3 square at (2..4, 2..4) and an L at (10, 10), (10, 11), (10, 12), (11, 12), (12, 12).
  std::vector<std::pair<uint32_t, uint32_t>> square;
  for (uint32_t y = 2; y <= 4; ++y) {
    for (uint32_t x = 2; x <= 4; ++x) square.emplace_back(x, y);
  }
  const std::vector<std::pair<uint32_t, uint32_t>> ell = {{10, 10}, {10, 11}, {10, 12}, {11, 12}, {12, 12}};
  CHECK(AddAll(regions, square) == 1);
  CHECK(AddAll(regions, ell) == 1);
  const auto all = regions.Regions();
  REQUIRE(all.size() == 2);
  CHECK(all[0].id == 1);
  CHECK(all[0].area_positions == 9);
  CHECK(all[0].centroid_x == doctest::Approx(3.0));
  CHECK(all[0].centroid_y == doctest::Approx(3.0));
  CHECK((all[0].min_x == 2 && all[0].min_y == 2 && all[0].max_x == 4 && all[0].max_y == 4));
  CHECK(all[1].id == 2);
  CHECK(all[1].area_positions == 5);
  CHECK(all[1].centroid_x == doctest::Approx(53.0 / 5));
  CHECK(all[1].centroid_y == doctest::Approx(57.0 / 5));
  CHECK((all[1].min_x == 10 && all[1].min_y == 10 && all[1].max_x == 12 && all[1].max_y == 12));
  // The L's spectra were frames 0..4 of its AddAll: mean of Spectrum(0..4) = Spectrum(2).
  CHECK(all[1].mean_counts == std::vector<float>{2.0f, 4.0f, 98.0f});
  CHECK(regions.RegionAt(3, 3) == 1);
  CHECK(regions.RegionAt(11, 12) == 2);
  CHECK(regions.RegionAt(11, 11) == 0);
}

TEST_CASE("NoveltyRegions: a bridging pixel merges two regions into the older id with combined statistics") {
  NoveltyRegions regions;
  // Left blob: (0,0), (1,0); right blob: (3,0), (4,0), (4,1). The bridge (2,0) touches both.
  CHECK(regions.Add({3, 0, 0}, Spectrum(30), 7.0, 5).change == RegionChange::kNew);   // id 1 (older)
  CHECK(regions.Add({0, 0, 0}, Spectrum(10), 2.0, 6).change == RegionChange::kNew);   // id 2
  CHECK(regions.Add({1, 0, 0}, Spectrum(11), 3.0, 7).change == RegionChange::kGrew);
  CHECK(regions.Add({4, 0, 0}, Spectrum(40), 9.0, 8).change == RegionChange::kGrew);
  CHECK(regions.Add({4, 1, 1}, Spectrum(41), 1.0, 9).change == RegionChange::kGrew);
  regions.TakeChanged();
  const RegionAddResult bridge = regions.Add({2, 0, 1}, Spectrum(20), 4.0, 10);
  CHECK(bridge.change == RegionChange::kMerged);
  CHECK(bridge.region_id == 1);
  REQUIRE(regions.region_count() == 1);
  const NoveltyRegion r = *regions.Region(2);  // the absorbed id resolves to the survivor
  CHECK(r.id == 1);
  CHECK(r.area_positions == 6);
  CHECK(r.spectra == 6);
  // Direct computation over the six positions and spectra.
  CHECK(r.centroid_x == doctest::Approx((3 + 0 + 1 + 4 + 4 + 2) / 6.0));
  CHECK(r.centroid_y == doctest::Approx(1 / 6.0));
  const double a = (30 + 10 + 11 + 40 + 41 + 20) / 6.0;
  CHECK(r.mean_counts[0] == doctest::Approx(a).epsilon(1e-6));
  CHECK(r.mean_counts[1] == doctest::Approx(2 * a).epsilon(1e-6));
  CHECK(r.mean_counts[2] == doctest::Approx(100 - a).epsilon(1e-6));
  CHECK(r.max_score == 9.0);
  CHECK(r.first_frame == 5);
  CHECK(r.last_frame == 10);
  CHECK((r.min_x == 0 && r.max_x == 4 && r.min_y == 0 && r.max_y == 1));
  const RegionChanges changes = regions.TakeChanged();
  REQUIRE(changes.updated.size() == 1);
  CHECK(changes.updated[0].id == 1);
  REQUIRE(changes.merges.size() == 1);
  CHECK(changes.merges[0].absorbed_id == 2);
  CHECK(changes.merges[0].into_id == 1);
}

TEST_CASE("NoveltyRegions: diagonal neighbours join with 8-connectivity, not with 4") {
  const std::vector<std::pair<uint32_t, uint32_t>> diagonal = {{5, 5}, {6, 6}, {7, 5}, {4, 4}};
  NoveltyRegions eight;
  CHECK(AddAll(eight, diagonal) == 1);
  CHECK(eight.region_count() == 1);
  NoveltyRegionsOptions o;
  o.connectivity = 4;
  NoveltyRegions four(o);
  CHECK(AddAll(four, diagonal) == 4);
  CHECK(four.region_count() == 4);
  // An edge neighbour joins in both.
  CHECK(four.Add({5, 6, 0}, Spectrum(1), 1.0, 9).change == RegionChange::kMerged);  // touches (5,5) and (6,6)
  CHECK(four.region_count() == 3);
  // Positions at the scan's edge (x = 0, y = 0) have no neighbour below 0.
  CHECK(eight.Add({0, 0, 0}, Spectrum(1), 1.0, 9).NewRegion());
}

TEST_CASE("NoveltyRegions: a revisit adds a spectrum, not area, and never a new region") {
  NoveltyRegions regions;
  CHECK(regions.Add({8, 8, 0}, Spectrum(10), 5.0, 1).NewRegion());
  for (uint32_t pass = 1; pass <= 4; ++pass) {
    const RegionAddResult r = regions.Add({8, 8, pass}, Spectrum(10 + 10 * static_cast<float>(pass)), 5.0 + pass,
                                          1 + 100 * pass);
    CHECK(r.change == RegionChange::kRevisit);
    CHECK(r.region_id == 1);
  }
  const NoveltyRegion r = regions.Regions().at(0);
  CHECK(r.area_positions == 1);
  CHECK(r.spectra == 5);
  CHECK(r.mean_counts[0] == doctest::Approx(30.0));  // mean of 10, 20, 30, 40, 50
  CHECK(r.max_score == 9.0);
  CHECK(r.last_frame == 401);
  CHECK(regions.positions() == 1);
}

TEST_CASE("NoveltyRegions: beyond max_regions isolated positions are unassigned; existing regions still grow") {
  NoveltyRegionsOptions o;
  o.max_regions = 3;
  NoveltyRegions regions(o);
  const std::vector<std::pair<uint32_t, uint32_t>> isolated = {{0, 0}, {10, 0}, {20, 0}, {30, 0}, {40, 0}};
  CHECK(AddAll(regions, isolated) == 3);
  CHECK(regions.region_count() == 3);
  CHECK(regions.unassigned_spectra() == 2);
  CHECK(regions.RegionAt(30, 0) == 0);
  CHECK(regions.Add({1, 1, 0}, Spectrum(1), 1.0, 9).change == RegionChange::kGrew);
  CHECK(regions.Add({40, 0, 1}, Spectrum(1), 1.0, 9).change == RegionChange::kUnassigned);
  CHECK(regions.unassigned_spectra() == 3);
  // A merge frees a slot. (10,0) and (20,0) are 10 apart: bridge them pixel by pixel.
  for (uint32_t x = 11; x < 20; ++x) regions.Add({x, 0, 0}, Spectrum(1), 1.0, 9);
  CHECK(regions.region_count() == 2);
  CHECK(regions.Add({40, 0, 2}, Spectrum(1), 1.0, 9).NewRegion());
  CHECK(regions.Regions().back().id == 4);
}

TEST_CASE("NoveltyRegions: outside the scan shape or of another length: rejected; Reset forgets everything") {
  NoveltyRegions regions({}, {16, 8});
  CHECK(regions.Add({16, 0, 0}, Spectrum(1), 1.0, 0).change == RegionChange::kRejected);
  CHECK(regions.Add({0, 8, 0}, Spectrum(1), 1.0, 0).change == RegionChange::kRejected);
  CHECK(regions.Add({15, 7, 0}, Spectrum(1), 1.0, 0).NewRegion());
  CHECK(regions.channels() == 3);
  const std::vector<float> four = {1, 2, 3, 4};
  CHECK(regions.Add({14, 7, 0}, four, 1.0, 0).change == RegionChange::kRejected);
  CHECK(regions.rejected_spectra() == 3);
  CHECK(regions.TakeChanged().updated.size() == 1);
  CHECK(regions.TakeChanged().updated.empty());
  regions.Reset();  // unknown shape now: no bounds
  CHECK(regions.region_count() == 0);
  CHECK(regions.channels() == -1);
  CHECK(regions.TakeChanged().updated.empty());
  const RegionAddResult r = regions.Add({1000, 1000, 0}, four, 1.0, 0);
  CHECK(r.NewRegion());
  CHECK(r.region_id == 1);
}

TEST_CASE("NoveltyRegions: random novel positions with revisits equal a flood-fill labelling, stat by stat") {
  // Independent computation: the distinct positions are labelled by breadth-first flood fill (8-connectivity),
  // and each component's statistics computed directly from the spectra that fell in it.
  constexpr uint32_t kW = 40;
  constexpr uint32_t kH = 30;
  constexpr int kD = 5;
  std::mt19937_64 gen(31);
  std::uniform_int_distribution<uint32_t> ux(0, kW - 1);
  std::uniform_int_distribution<uint32_t> uy(0, kH - 1);
  std::uniform_real_distribution<float> counts(0.0f, 50.0f);
  std::normal_distribution<double> score(5.0, 1.0);
  struct Spec {
    uint32_t x, y;
    std::vector<float> c;
    double s;
    uint64_t frame;
  };
  std::vector<Spec> spectra;
  for (int i = 0; i < 500; ++i) {  // ~35% of 1200 positions: many components, many merges
    Spec s{ux(gen), uy(gen), std::vector<float>(kD), score(gen), static_cast<uint64_t>(i / 7)};
    for (float& v : s.c) v = counts(gen);
    spectra.push_back(s);
  }
  NoveltyRegions regions({}, {kW, kH});
  int news = 0;
  int merges = 0;
  for (const Spec& s : spectra) {
    const RegionAddResult r = regions.Add({s.x, s.y, 0}, s.c, s.s, s.frame);
    news += r.NewRegion();
    merges += r.change == RegionChange::kMerged;
    REQUIRE(r.region_id != 0);
  }
  CHECK(merges > 10);  // the test exercises merging

  std::vector<int> label(kW * kH, -1);
  std::vector<bool> novel(kW * kH, false);
  for (const Spec& s : spectra) novel[s.y * kW + s.x] = true;
  int components = 0;
  for (uint32_t start = 0; start < kW * kH; ++start) {
    if (!novel[start] || label[start] >= 0) continue;
    std::vector<uint32_t> queue = {start};
    label[start] = components;
    while (!queue.empty()) {
      const uint32_t p = queue.back();
      queue.pop_back();
      const int px = static_cast<int>(p % kW);
      const int py = static_cast<int>(p / kW);
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const int nx = px + dx;
          const int ny = py + dy;
          if (nx < 0 || ny < 0 || nx >= static_cast<int>(kW) || ny >= static_cast<int>(kH)) continue;
          const uint32_t n = static_cast<uint32_t>(ny) * kW + static_cast<uint32_t>(nx);
          if (novel[n] && label[n] < 0) {
            label[n] = components;
            queue.push_back(n);
          }
        }
      }
    }
    ++components;
  }
  const auto found = regions.Regions();
  REQUIRE(static_cast<int>(found.size()) == components);
  CHECK(news >= components);  // every component was started at least once (more when merges joined starts)

  std::set<int> labels_seen;
  for (const NoveltyRegion& r : found) {
    // The component of this region: the label of any of its positions.
    int lab = -1;
    for (uint32_t p = 0; p < kW * kH; ++p) {
      if (label[p] >= 0 && regions.RegionAt(p % kW, p / kW) == r.id) {
        if (lab < 0) lab = label[p];
        CHECK(label[p] == lab);  // one region = one component
      }
    }
    REQUIRE(lab >= 0);
    CHECK(labels_seen.insert(lab).second);
    uint64_t area = 0;
    double sx = 0, sy = 0;
    for (uint32_t p = 0; p < kW * kH; ++p) {
      if (label[p] != lab) continue;
      ++area;
      sx += p % kW;
      sy += p / kW;
    }
    std::vector<double> mean(kD, 0.0);
    uint64_t n = 0;
    double max_score = -1e300;
    uint64_t first = ~uint64_t{0}, last = 0;
    for (const Spec& s : spectra) {
      if (label[s.y * kW + s.x] != lab) continue;
      ++n;
      for (int j = 0; j < kD; ++j) mean[j] += s.c[j];
      max_score = std::max(max_score, s.s);
      first = std::min(first, s.frame);
      last = std::max(last, s.frame);
    }
    CHECK(r.area_positions == area);
    CHECK(r.spectra == n);
    CHECK(r.centroid_x == doctest::Approx(sx / area).epsilon(1e-12));
    CHECK(r.centroid_y == doctest::Approx(sy / area).epsilon(1e-12));
    for (int j = 0; j < kD; ++j) {
      // Float running mean: a few float roundings per spectrum.
      CHECK(r.mean_counts[j] == doctest::Approx(mean[j] / n).epsilon(1e-5));
    }
    CHECK(r.max_score == max_score);
    CHECK(r.first_frame == first);
    CHECK(r.last_frame == last);
  }
}

}  // namespace specwatch
