// Phase layout: abundances are fractions (sum to 1), the inclusion mask has the requested size in small
// clusters, the grow phase grows, and the layout is a function of the seed.

#include "tools/sim/scene.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

using namespace specwatch::sim;

namespace {

SceneOptions Opt() {
  SceneOptions o;
  o.width = 64;
  o.height = 48;
  o.base_phases = 4;
  o.inclusion_fraction = 0.01;
  o.grow = true;
  o.passes = 5;
  o.seed = 7;
  return o;
}

/// Sizes of the 4-connected components of the mask.
std::vector<int> Components(const Scene& s) {
  const uint32_t w = s.Width(), h = s.Height();
  std::vector<int> label(s.Pixels(), 0), sizes;
  std::vector<uint64_t> stack;
  for (uint64_t p = 0; p < s.Pixels(); ++p) {
    if (!s.InInclusion(p) || label[p]) continue;
    int size = 0;
    stack.assign(1, p);
    label[p] = 1;
    while (!stack.empty()) {
      const uint64_t q = stack.back();
      stack.pop_back();
      ++size;
      const uint32_t x = q % w, y = static_cast<uint32_t>(q / w);
      const uint64_t nb[4] = {x > 0 ? q - 1 : q, x + 1 < w ? q + 1 : q, y > 0 ? q - w : q, y + 1 < h ? q + w : q};
      for (uint64_t r : nb) {
        if (r != q && s.InInclusion(r) && !label[r]) {
          label[r] = 1;
          stack.push_back(r);
        }
      }
    }
    sizes.push_back(size);
  }
  return sizes;
}

}  // namespace

TEST_CASE("Abundances are in [0,1] and sum to 1 at every pixel and pass") {
  Scene s(Opt());
  REQUIRE(s.PhaseCount() == 6);
  std::vector<double> a(s.PhaseCount());
  for (uint32_t pass = 0; pass < 5; ++pass) {
    for (uint32_t y = 0; y < s.Height(); ++y) {
      for (uint32_t x = 0; x < s.Width(); ++x) {
        s.Abundances(x, y, pass, a);
        double sum = 0.0;
        for (double v : a) {
          REQUIRE(v >= 0.0);
          REQUIRE(v <= 1.0);
          sum += v;
        }
        REQUIRE(std::fabs(sum - 1.0) < 1e-12);
      }
    }
  }
}

TEST_CASE("Every base phase has a pure region and mixes smoothly at boundaries") {
  SceneOptions o = Opt();
  o.inclusion_fraction = 0.0;
  o.grow = false;
  Scene s(o);
  int mixed = 0;
  for (int p = 0; p < o.base_phases; ++p) {
    bool pure = false;
    for (uint64_t px = 0; px < s.Pixels(); ++px) pure |= s.StaticAbundance(px, p) == 1.0;
    CHECK(pure);
  }
  for (uint64_t px = 0; px < s.Pixels(); ++px) {
    double m = 0.0;
    for (int p = 0; p < o.base_phases; ++p) m = std::max(m, s.StaticAbundance(px, p));
    mixed += m < 0.99;
  }
  CHECK(mixed > 0);                      // boundaries mix
  CHECK(mixed < 0.5 * s.Pixels());       // but most of the scan is pure
}

TEST_CASE("Inclusion mask: exactly round(fraction * pixels) pixels, in small clusters") {
  for (double f : {0.0005, 0.001, 0.01, 0.05, 0.2}) {
    CAPTURE(f);
    SceneOptions o = Opt();
    o.inclusion_fraction = f;
    Scene s(o);
    const uint64_t expected = std::max<uint64_t>(1, std::llround(f * s.Pixels()));
    uint64_t count = 0;
    for (uint64_t p = 0; p < s.Pixels(); ++p) count += s.InInclusion(p);
    CHECK(count == expected);
    CHECK(s.InclusionPixelCount() == expected);
    if (f <= 0.01) {
      // Clusters of 3..9 pixels; touching clusters may merge, so bound the mean size, not each one.
      const auto sizes = Components(s);
      double mean = 0.0;
      for (int z : sizes) mean += z;
      mean /= sizes.size();
      CHECK(mean <= 12.0);
    }
    // Inside the mask the inclusion phase has its abundance, outside none.
    for (uint64_t p = 0; p < s.Pixels(); ++p) {
      REQUIRE(s.StaticAbundance(p, s.InclusionIndex()) == (s.InInclusion(p) ? s.InclusionAbundance() : 0.0));
    }
  }
}

TEST_CASE("Grow phase: absent in pass 0, grows monotonically to about a quarter of the scan") {
  Scene s(Opt());
  double prev = -1.0;
  for (uint32_t pass = 0; pass < 5; ++pass) {
    double area = 0.0;
    for (uint32_t y = 0; y < s.Height(); ++y)
      for (uint32_t x = 0; x < s.Width(); ++x) area += s.GrowAbundance(x, y, pass);
    area /= s.Pixels();
    if (pass == 0) CHECK(area == 0.0);
    CHECK(area > prev);
    prev = area;
  }
  CHECK(prev > 0.15);  // π R_max² = 0.25·pixels, less what falls outside the scan
  CHECK(prev < 0.30);
}

TEST_CASE("Layout is a function of the seed") {
  Scene a(Opt()), b(Opt());
  SceneOptions o = Opt();
  o.seed = 8;
  Scene c(o);
  bool same_ab = true, same_ac = true;
  for (uint64_t p = 0; p < a.Pixels(); ++p) {
    for (int k = 0; k < a.PhaseCount(); ++k) {
      same_ab &= a.StaticAbundance(p, k) == b.StaticAbundance(p, k);
      same_ac &= a.StaticAbundance(p, k) == c.StaticAbundance(p, k);
    }
  }
  CHECK(same_ab);
  CHECK_FALSE(same_ac);
}

TEST_CASE("Invalid scene options throw") {
  SceneOptions o = Opt();
  o.width = 0;
  CHECK_THROWS_AS(Scene{o}, std::invalid_argument);
  o = Opt();
  o.inclusion_fraction = 0.7;
  CHECK_THROWS_AS(Scene{o}, std::invalid_argument);
}
