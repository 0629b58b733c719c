// The first fit's outlier screen (first_fit_screen.hpp): a model's first block holds out the few spectra that
// carry a component alone (an inclusion crossed by the first scan lines), and nothing else; a phase of a few dozen
// spectra is kept. Poisson spectra of Gaussian-peak phases, 1,000 counts, the way the service's model sees them.
#include "operators/core/poisson_weighting.hpp"
#include "operators/model/denoiser.hpp"
#include "operators/model/first_fit_screen.hpp"
#include "operators/model/streaming_model.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace specwatch {
namespace {

constexpr int kChannels = 512;
constexpr double kCounts = 1000.0;

/// Phase k's expected spectrum (sum 1): a flat background and two peaks; `inclusion` adds a strong peak at a
/// channel no phase has (a Pt line in a sample without Pt).
Eigen::VectorXd Shape(int k, bool inclusion = false) {
  const Eigen::ArrayXd e = Eigen::ArrayXd::LinSpaced(kChannels, 0.0, 1.0);
  Eigen::ArrayXd s = 0.2 + 3.0 * (-(e - 0.1 - 0.15 * k).square() / 2e-4).exp() +
                     1.5 * (-(e - 0.55 - 0.1 * k).square() / 2e-4).exp();
  if (inclusion) s += 6.0 * (-(e - 0.93).square() / 1e-4).exp();
  return (s / s.sum()).matrix();
}

/// n spectra in contiguous domains of `phases` phases (each spectrum its domain's phase mixed 10 % with the
/// next), the spectra at `inclusions` an inclusion over its domain; `sizes` (optional) the domains' sizes.
Eigen::MatrixXf Block(int n, int phases, const std::vector<int>& inclusions, std::mt19937_64& gen,
                      std::vector<int> sizes = {}) {
  if (sizes.empty()) sizes.assign(static_cast<size_t>(phases), n / phases);
  sizes.back() += n - std::accumulate(sizes.begin(), sizes.end(), 0);
  std::uniform_real_distribution<double> mix(0.0, 0.1);
  Eigen::MatrixXf x(kChannels, n);
  int i = 0;
  for (int k = 0; k < phases; ++k) {
    for (int j = 0; j < sizes[static_cast<size_t>(k)]; ++j, ++i) {
      const double m = mix(gen);
      const bool inclusion = std::find(inclusions.begin(), inclusions.end(), i) != inclusions.end();
      const Eigen::VectorXd expected =
          kCounts * ((1.0 - m) * Shape(k, inclusion) + m * Shape((k + 1) % phases, inclusion));
      for (int c = 0; c < kChannels; ++c) {
        x(c, i) = static_cast<float>(std::poisson_distribution<int>(expected(c))(gen));
      }
    }
  }
  return x;
}

/// The block weighted as the model weights it (poisson_weighting.hpp), its scale calibrated on the block itself.
Eigen::MatrixXf Weighted(const Eigen::MatrixXf& x) {
  WeightingOptions o;
  o.calibration_spectra = static_cast<int>(x.cols());
  PoissonWeighting weighting(static_cast<int>(x.rows()), o);
  REQUIRE(weighting.Calibrate(x));
  Eigen::MatrixXf w;
  ApplyWeights(x, weighting.channel_scale(), SpectrumTotals(x), &w);
  return w;
}

SubspaceOptions Options() {
  SubspaceOptions o;
  o.auto_rank = true;
  return o;
}

}  // namespace

TEST_CASE("ScreenFirstBlock: the inclusion spectra of a first block, and nothing else, are held out") {
  for (const uint64_t seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
    std::mt19937_64 gen(seed);
    // One to three inclusions, at the start, the middle and the end of the block, in different domains.
    std::vector<int> inclusions = {17, 140, 250};
    inclusions.resize(1 + seed % 3);
    const FirstFitScreen screen = ScreenFirstBlock(Weighted(Block(256, 3, inclusions, gen)), Options());
    CAPTURE(seed);
    CHECK(screen.held_out == static_cast<int>(inclusions.size()));
    for (const int i : inclusions) CHECK(screen.keep[static_cast<size_t>(i)] == 0);
    CHECK(std::count(screen.keep.begin(), screen.keep.end(), 0) == screen.held_out);
    CHECK(screen.rank == 2);  // 3 phases: 2 components after centring
    CHECK(screen.max_leverage <= 0.1);
  }
}

TEST_CASE("ScreenFirstBlock: a phase of two dozen spectra is a component, kept; a block without inclusions keeps "
          "everything") {
  std::mt19937_64 gen(8);
  const FirstFitScreen small_phase =
      ScreenFirstBlock(Weighted(Block(256, 4, {}, gen, {100, 100, 32, 24})), Options());
  CHECK(small_phase.held_out == 0);
  CHECK(small_phase.rank == 3);
  const FirstFitScreen clean = ScreenFirstBlock(Weighted(Block(256, 3, {}, gen)), Options());
  CHECK(clean.held_out == 0);
  CHECK(clean.rank == 2);
}

TEST_CASE("ScreenFirstBlock: off with min_component_support 0, and on blocks too small to tell support") {
  std::mt19937_64 gen(9);
  SubspaceOptions off = Options();
  off.min_component_support = 0;
  const Eigen::MatrixXf block = Weighted(Block(256, 3, {17}, gen));
  CHECK(ScreenFirstBlock(block, off).held_out == 0);
  CHECK(ScreenFirstBlock(block.leftCols(39), Options()).held_out == 0);  // < 4 × 10 spectra
  CHECK(ScreenFirstBlock(block.leftCols(40), Options()).held_out == 1);
}

TEST_CASE("StreamingModel: the first fit does not learn the inclusions of its calibration block as a component, so "
          "they (scored again at the pass end) and fresh ones stay novel; without the screen they are explained") {
  WeightingOptions weighting;
  weighting.calibration_spectra = 256;
  struct Scores {
    uint64_t held_out;
    double own;    // the lowest z of the block's own inclusion spectra
    double fresh;  // the lowest z of fresh inclusion spectra
    double clean;  // the block's median z
  };
  auto run = [&](int support) {
    std::mt19937_64 gen(3);
    SubspaceOptions o = Options();
    o.min_component_support = support;
    StreamingModel model(kChannels, o, weighting);
    const Eigen::MatrixXf block = Block(256, 3, {60, 61}, gen);
    model.Add(block);
    model.Flush();
    DenoiseResult r;
    Denoise(*model.Model(), block, &r);
    Scores s{model.first_fit_held_out(), std::min(r.deviance_z(60), r.deviance_z(61)), 0.0, 0.0};
    std::vector<float> z(r.deviance_z.data(), r.deviance_z.data() + r.deviance_z.size());
    std::nth_element(z.begin(), z.begin() + 128, z.end());
    s.clean = z[128];
    std::mt19937_64 fresh(11);
    Denoise(*model.Model(), Block(4, 1, {0, 1, 2, 3}, fresh), &r);
    s.fresh = r.deviance_z.minCoeff();
    return s;
  };
  const Scores screened = run(10);
  const Scores absorbed = run(0);
  CAPTURE(absorbed.own);
  CAPTURE(absorbed.fresh);
  CHECK(screened.held_out == 2);
  CHECK(screened.own > 20.0);  // unexplained: novel against any threshold
  CHECK(screened.fresh > 20.0);
  CHECK(std::abs(screened.clean) < 1.0);
  CHECK(absorbed.held_out == 0);
  CHECK(absorbed.own < 5.0);  // learnt: nothing to find at the pass end
  CHECK(absorbed.fresh < screened.fresh / 2);
}

}  // namespace specwatch
