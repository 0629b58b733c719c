#include "tools/sim/scene.hpp"

#include "tools/sim/random.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>

namespace specwatch::sim {

namespace {
constexpr uint64_t kLayoutStream = 0x4C41594F5554ull;     // "LAYOUT"
constexpr uint64_t kInclusionStream = 0x494E434C5553ull;  // "INCLUS"
constexpr uint64_t kGrowStream = 0x47524F57ull;           // "GROW"
}  // namespace

Scene::Scene(const SceneOptions& options) : options_(options) {
  if (options_.width == 0 || options_.height == 0) throw std::invalid_argument("scan: width and height must be > 0");
  if (options_.base_phases < 1) throw std::invalid_argument("phases: must be >= 1");
  if (!(options_.inclusion_fraction >= 0.0 && options_.inclusion_fraction <= 0.5)) {
    throw std::invalid_argument("inclusion: fraction must be in [0, 0.5]");
  }
  const uint32_t w = options_.width;
  const uint32_t h = options_.height;
  const uint64_t pixels = Pixels();
  const int base = options_.base_phases;
  phase_count_ = base;
  if (options_.inclusion_fraction > 0.0) inclusion_index_ = phase_count_++;
  if (options_.grow) grow_index_ = phase_count_++;

  // Seeds by Mitchell's best-candidate sampling: well spread, so every region has a fair size.
  Rng rng(MixSeed(options_.seed, kLayoutStream));
  for (int k = 0; k < base; ++k) {
    std::pair<double, double> best{0.0, 0.0};
    double best_d = -1.0;
    for (int c = 0; c < 16; ++c) {
      const std::pair<double, double> cand{rng.Uniform() * w, rng.Uniform() * h};
      double d = std::numeric_limits<double>::infinity();
      for (const auto& s : seeds_) d = std::min(d, std::hypot(cand.first - s.first, cand.second - s.second));
      if (seeds_.empty()) d = 0.0;
      if (d > best_d) {
        best_d = d;
        best = cand;
      }
    }
    seeds_.push_back(best);
  }

  // Soft Voronoi: weight 1 for the nearest seed, falling smoothly to 0 at 2·width beyond it, so region
  // interiors are pure and boundaries mix over ~2·width pixels.
  boundary_width_ = std::max(1.0, 0.04 * std::min(w, h));
  static_.assign(pixels * phase_count_, 0.0);
  std::vector<double> d(base);
  for (uint32_t y = 0; y < h; ++y) {
    for (uint32_t x = 0; x < w; ++x) {
      double dmin = std::numeric_limits<double>::infinity();
      for (int k = 0; k < base; ++k) {
        d[k] = std::hypot(x + 0.5 - seeds_[k].first, y + 0.5 - seeds_[k].second);
        dmin = std::min(dmin, d[k]);
      }
      double* a = &static_[(uint64_t{y} * w + x) * phase_count_];
      double sum = 0.0;
      for (int k = 0; k < base; ++k) {
        const double t = std::clamp((d[k] - dmin) / (2.0 * boundary_width_), 0.0, 1.0);
        a[k] = 1.0 - t * t * (3.0 - 2.0 * t);
        sum += a[k];
      }
      for (int k = 0; k < base; ++k) a[k] /= sum;
    }
  }

  // Inclusion: small clusters (3..9 pixels, grown at random from a seed pixel) until exactly
  // round(fraction·pixels) pixels (at least 1) are in the mask.
  inclusion_mask_.assign(pixels, 0);
  if (inclusion_index_ >= 0) {
    const uint64_t target =
        std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(options_.inclusion_fraction * static_cast<double>(pixels))));
    Rng irng(MixSeed(options_.seed, kInclusionStream));
    std::vector<uint64_t> cluster, frontier;
    uint64_t guard = 0;
    while (inclusion_pixels_ < target && guard++ < 100 * pixels + 1000) {
      const uint64_t start = (uint64_t{irng.Below(h)} * w) + irng.Below(w);
      if (inclusion_mask_[start]) continue;
      const uint64_t size = std::min<uint64_t>(3 + irng.Below(7), target - inclusion_pixels_);
      cluster.assign(1, start);
      inclusion_mask_[start] = 1;
      ++inclusion_pixels_;
      while (cluster.size() < size) {
        frontier.clear();
        for (uint64_t p : cluster) {
          const uint32_t px = static_cast<uint32_t>(p % w), py = static_cast<uint32_t>(p / w);
          if (px > 0 && !inclusion_mask_[p - 1]) frontier.push_back(p - 1);
          if (px + 1 < w && !inclusion_mask_[p + 1]) frontier.push_back(p + 1);
          if (py > 0 && !inclusion_mask_[p - w]) frontier.push_back(p - w);
          if (py + 1 < h && !inclusion_mask_[p + w]) frontier.push_back(p + w);
        }
        if (frontier.empty()) break;
        const uint64_t next = frontier[irng.Below(static_cast<uint32_t>(frontier.size()))];
        inclusion_mask_[next] = 1;
        ++inclusion_pixels_;
        cluster.push_back(next);
      }
    }
    const double ai = options_.inclusion_abundance;
    for (uint64_t p = 0; p < pixels; ++p) {
      if (!inclusion_mask_[p]) continue;
      double* a = &static_[p * phase_count_];
      for (int k = 0; k < base; ++k) a[k] *= (1.0 - ai);
      a[inclusion_index_] = ai;
    }
  }

  if (grow_index_ >= 0) {
    Rng grng(MixSeed(options_.seed, kGrowStream));
    grow_cx_ = (0.2 + 0.6 * grng.Uniform()) * w;
    grow_cy_ = (0.2 + 0.6 * grng.Uniform()) * h;
    grow_rmax_ = std::sqrt(0.25 * static_cast<double>(pixels) / std::numbers::pi);
    grow_edge_ = std::max(1.0, 0.03 * std::min(w, h));
  }
}

double Scene::GrowRadius(uint32_t pass) const {
  if (grow_index_ < 0 || options_.passes < 2) return 0.0;
  return grow_rmax_ * static_cast<double>(std::min(pass, options_.passes - 1)) / (options_.passes - 1);
}

double Scene::GrowAbundance(uint32_t x, uint32_t y, uint32_t pass) const {
  const double r_p = GrowRadius(pass);
  if (r_p <= 0.0) return 0.0;
  const double r = std::hypot(x + 0.5 - grow_cx_, y + 0.5 - grow_cy_);
  return 0.5 * (1.0 - std::tanh((r - r_p) / grow_edge_));
}

void Scene::Abundances(uint32_t x, uint32_t y, uint32_t pass, std::span<double> out) const {
  const double* a = &static_[(uint64_t{y} * options_.width + x) * phase_count_];
  std::copy(a, a + phase_count_, out.begin());
  if (grow_index_ >= 0) {
    const double g = GrowAbundance(x, y, pass);
    for (int k = 0; k < phase_count_; ++k) out[k] *= (1.0 - g);
    out[grow_index_] = g;
  }
}

}  // namespace specwatch::sim
