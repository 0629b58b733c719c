// Issue 15: the first pass over a new sample is monitored. One pass of an EDS map (3 phases, 2,048 channels,
// 1,000 counts per spectrum, a Pt inclusion on 0.2 % of the pixels), through the service's Session in-process,
// every frame learnt (model_updates "all"): how many inclusion pixels are flagged in the pass they first appear,
// how many clean pixels are flagged, and from which spectrum on a threshold is in force. FIRST_PASS_TRACE=1 prints
// the provisional threshold, the flagged spectra per frame and each inclusion pixel's score.
#include "tests/acceptance/operando_support.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace specwatch {
namespace {

using acceptance::OperandoConfig;
using acceptance::OperandoLoop;
using acceptance::OperandoRecord;
using acceptance::Options;

struct FirstPass {
  uint64_t inclusion_pixels = 0, inclusion_flagged = 0;
  uint64_t inclusion_live = 0;           ///< of the flagged, flagged live (the rest at the pass end)
  uint64_t warm_up_inclusions = 0, warm_up_flagged = 0;  ///< inclusion pixels among the first model's block
  uint64_t retrospective_events = 0;
  uint64_t clean_retrospective = 0;      ///< clean pixels novel only at the pass end
  uint64_t clean_pixels = 0, clean_flagged = 0;
  uint64_t first_threshold_spectrum = UINT64_MAX;  ///< first spectrum scored against a threshold in force
  int rank = 0;
  std::vector<uint64_t> false_alarm_spectra;
  std::string inclusions;  ///< diagnostic: spectrum:z:flagged:threshold of each inclusion pixel
};

FirstPass Run(uint32_t side, uint64_t seed, int min_component_support = SubspaceOptions{}.min_component_support) {
  sim::SimOptions o = Options(Modality::kEds, 2048, 3, 1000.0, side, 1);
  o.inclusion_fraction = 0.002;
  o.seed = seed;
  OperandoConfig config;
  config.pca.min_component_support = min_component_support;
  OperandoLoop loop(o, config);
  const auto warm_up = static_cast<uint64_t>(WeightingOptions{}.calibration_spectra);
  OperandoRecord r;
  FirstPass f;
  const uint64_t frames = loop.frames().FrameCount();
  std::vector<double> threshold_at;
  for (uint64_t k = 0; k < frames; ++k) {
    const bool had_threshold = loop.Threshold() > 0.0;
    threshold_at.push_back(loop.Threshold());
    if (std::getenv("FIRST_PASS_TRACE") && k % 4 == 0) {
      const OutlierGuard& g = loop.monitor().guard();
      std::printf("trace %ux%u frame %llu: bound %.2f location %.2f scale %.2f rank %d state %s\n", side, side,
                  static_cast<unsigned long long>(k), g.bound(), g.location(), g.scale(), loop.Rank(),
                  ToString(loop.monitor().detector().state()));
      const auto m = loop.Model();
      std::printf("   n %.0f sigma %.3f tau %.1f s/tau:", m->spectra_seen, m->noise_sigma, m->rank_threshold);
      for (Eigen::Index c = 0; c < m->singular_values.size(); ++c) {
        std::printf(" %.2f", m->singular_values(c) / m->rank_threshold);
      }
      std::printf("\n");
    }
    const uint64_t before = r.novel.size();
    loop.Run(k, k + 1, &r);
    if (std::getenv("FIRST_PASS_TRACE")) {
      uint64_t flagged = 0;
      for (uint64_t j = before; j < r.novel.size(); ++j) flagged += r.novel[j];
      if (flagged > 0) {
        std::printf("flagged %ux%u frame %llu: %llu, state %s, bound %.2f, detector threshold %.2f, rank %d\n",
                    side, side, static_cast<unsigned long long>(k), static_cast<unsigned long long>(flagged),
                    ToString(loop.monitor().detector().state()), loop.monitor().guard().bound(),
                    loop.monitor().detector().deviance_fit().threshold, loop.Rank());
      }
    }
    if (had_threshold) f.first_threshold_spectrum = std::min(f.first_threshold_spectrum, before);
  }
  loop.End(&r);
  f.retrospective_events = r.retrospective_events;
  for (const NoveltyEvent& e : r.retrospective) {
    // A retrospective event names its spectrum as it came: frame, index within it, position, time.
    const sim::FrameInfo info = loop.frames().sim().Frame(e.frame_number);
    const sim::SpectrumPosition p = loop.frames().sim().Position(info.start_index + e.hit.spectrum);
    CHECK(e.hit.position.x == p.x);
    CHECK(e.hit.position.y == p.y);
    CHECK(e.acquisition_time_s == doctest::Approx(static_cast<double>(info.start_index) * o.DwellUs() * 1e-6));
    CHECK(e.hit.deviance_z > e.deviance_threshold);
  }
  REQUIRE(r.maps.size() == 1);  // one pass
  const ResidualMapEvent& map = r.maps.front();
  const sim::Simulator& sim = loop.frames().sim();
  for (uint64_t k = 0; k < r.novel.size(); ++k) {
    const uint64_t pixel = acceptance::PixelOf(sim.Position(k), o.scan_width);
    const bool inclusion = sim.GetScene().InInclusion(pixel);
    // Flagged live, or scored again at the pass end (the map's value is not the live score: one pass, one
    // spectrum per position) and novel then, against the threshold in force.
    const float value = map.map.values[pixel];
    const bool rescored = value != r.z[k];
    const bool late = !r.novel[k] && rescored && map.novelty_threshold > 0 && value > map.novelty_threshold;
    const bool flagged = r.novel[k] || late;
    (inclusion ? f.inclusion_pixels : f.clean_pixels)++;
    (inclusion ? f.inclusion_flagged : f.clean_flagged) += flagged;
    if (inclusion) f.inclusion_live += r.novel[k];
    if (inclusion && k < warm_up) {
      ++f.warm_up_inclusions;
      f.warm_up_flagged += flagged;
    }
    if (!inclusion) f.clean_retrospective += late;
    if (!inclusion && flagged) f.false_alarm_spectra.push_back(k);
    if (inclusion) {
      char b[96];
      std::snprintf(b, sizeof b, "%llu:%.1f:%d:%.1f ", static_cast<unsigned long long>(k), r.z[k], r.novel[k],
                    threshold_at[k / o.scan_width]);
      f.inclusions += b;
    }
  }
  f.rank = loop.Rank();
  return f;
}

void Print(const char* what, uint32_t side, const FirstPass& f) {
  std::string bins;
  for (uint64_t s : f.false_alarm_spectra) bins += std::to_string(s / 1024) + " ";
  std::printf("first pass %ux%u %s: %llu of %llu inclusion pixels flagged (%llu live), %llu of %llu clean (%.2g per "
              "clean pixel; %llu at the pass end), %llu retrospective events, threshold from spectrum %llu, rank %d; "
              "false alarms by 1024-spectrum bin: %s\n",
              side, side, what, static_cast<unsigned long long>(f.inclusion_flagged),
              static_cast<unsigned long long>(f.inclusion_pixels), static_cast<unsigned long long>(f.inclusion_live),
              static_cast<unsigned long long>(f.clean_flagged),
              static_cast<unsigned long long>(f.clean_pixels),
              static_cast<double>(f.clean_flagged) / static_cast<double>(f.clean_pixels),
              static_cast<unsigned long long>(f.clean_retrospective),
              static_cast<unsigned long long>(f.retrospective_events),
              static_cast<unsigned long long>(f.first_threshold_spectrum), f.rank, bins.c_str());
}

}  // namespace

// Measured (4 seeds, 1,000 counts, 0.2 % inclusion, every frame learnt), with the provisional threshold and the
// pass-end rescoring of issue 15 (live only in brackets):
//   64²   31 of 32 inclusion pixels flagged (30 live), 2.2e-3 false alarms per clean pixel (worst seed 2.9e-3)
//   128²  132 of 132 (111 live), 7.6e-4 (1.3e-3)
//   256²  521 of 524 (498 live), 2.4e-4 (4.4e-4)
// and rank 2 at the pass end in all 12 runs (before the weights' imbalance refresh: 8, the cap, in 4 of the 8 runs
// of 128² and 256²; docs/science.md §2).
// Before it (main at 770408d): 0 inclusion pixels flagged at any size; the first threshold came at spectrum 53,248
// of 65,536 on 256². What stays flagged wrongly is a phase domain's first few pixels (a run of 6 lets the rest
// through); what is missed, inclusions scanned while the scores' tail was inflated by a domain being learnt.
TEST_CASE("first pass: a threshold from spectrum 512; inclusion pixels flagged in the pass they appear, few clean "
          "pixels flagged, 64x64 to 256x256") {
  struct Target {
    uint32_t side;
    double recall;        // at least, over the seeds
    double false_alarms;  // at most, per clean pixel, each seed
  };
  for (const Target t : {Target{64, 0.95, 4e-3}, Target{128, 0.95, 1.5e-3}, Target{256, 0.95, 1e-3}}) {
    uint64_t inclusion = 0, flagged = 0, live = 0;
    for (const uint64_t seed : {41u, 7u, 13u, 29u}) {
      const FirstPass f = Run(t.side, seed);
      Print(("seed " + std::to_string(seed)).c_str(), t.side, f);
      if (std::getenv("FIRST_PASS_TRACE")) std::printf("  inclusions: %s\n", f.inclusions.c_str());
      CAPTURE(t.side);
      CAPTURE(seed);
      CHECK(f.first_threshold_spectrum <= 512);
      CHECK(f.rank == 2);  // 3 phases: 2 components after centring; the inclusion held out, the rank not crept
      CHECK(static_cast<double>(f.clean_flagged) / static_cast<double>(f.clean_pixels) <= t.false_alarms);
      inclusion += f.inclusion_pixels;
      flagged += f.inclusion_flagged;
      live += f.inclusion_live;
    }
    CAPTURE(t.side);
    REQUIRE(inclusion > 0);
    CHECK(static_cast<double>(flagged) / static_cast<double>(inclusion) >= t.recall);
    if (t.side >= 128) CHECK(flagged > live);  // the pass end found some the live thresholds missed
  }
}

}  // namespace specwatch

namespace specwatch {

// Inclusions among the spectra the first model is fitted on (the first 256, scanned before any score exists) are
// held out of the first fit (first_fit_screen.hpp) and found at the pass end. Learnt by it (the screen off), they
// are explained by the model: lost. The seeds are those of 1..60 whose inclusion is crossed by the first 4 lines.
// Measured: 26 of 26 such pixels found with the screen, 20 of 26 without (seed 14: 6 of 6 against 0).
TEST_CASE("first pass: inclusions crossed before the first model exists are found at the pass end") {
  uint64_t warm_up = 0, found = 0, found_unscreened = 0;
  for (const uint64_t seed : {14u, 16u, 24u, 32u, 33u, 54u}) {
    const FirstPass f = Run(64, seed);
    const FirstPass unscreened = Run(64, seed, 0);
    Print(("seed " + std::to_string(seed)).c_str(), 64, f);
    std::printf("  inclusion pixels in the first 256 spectra: %llu, flagged %llu (%llu without the first fit's "
                "screen)\n",
                static_cast<unsigned long long>(f.warm_up_inclusions),
                static_cast<unsigned long long>(f.warm_up_flagged),
                static_cast<unsigned long long>(unscreened.warm_up_flagged));
    CAPTURE(seed);
    CHECK(f.warm_up_inclusions > 0);
    CHECK(static_cast<double>(f.clean_flagged) / static_cast<double>(f.clean_pixels) <= 4e-3);
    warm_up += f.warm_up_inclusions;
    found += f.warm_up_flagged;
    found_unscreened += unscreened.warm_up_flagged;
  }
  CHECK(found == warm_up);
  CHECK(found_unscreened < found);  // the screen is what finds them
}

}  // namespace specwatch
