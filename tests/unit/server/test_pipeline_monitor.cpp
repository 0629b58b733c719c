// The monitor inside the flow graph: novelty events with their spectra, one per region, calibration messages,
// the learn mask (novel spectra never reach the model), the metrics, and a recalibration request.
#include <doctest/doctest.h>

#include "server/pipeline.hpp"
#include "tests/unit/server/pipeline_fixture.hpp"

#include <random>

using namespace specwatch;
using namespace specwatch::server;
using test::DrainQueue;

namespace {

constexpr int kChannels = 64;
constexpr uint32_t kWidth = 16;  // one frame = one scan line of 16 positions

// Poisson counts of a two-phase mixture (~400 counts per spectrum); `novel` positions get a strong line at
// channels 40..43 that neither phase has.
BatchPtr MakeFrame(uint64_t number, std::mt19937& rng, const std::vector<uint32_t>& novel_x = {}) {
  static const Eigen::MatrixXd phases = [] {
    Eigen::MatrixXd p(kChannels, 2);
    for (int c = 0; c < kChannels; ++c) {
      p(c, 0) = 4.0 + 3.0 * std::exp(-0.5 * std::pow((c - 15) / 3.0, 2));
      p(c, 1) = 4.0 + 3.0 * std::exp(-0.5 * std::pow((c - 28) / 3.0, 2));
    }
    return p;
  }();
  std::uniform_real_distribution<double> a(0.0, 1.0);
  auto batch = std::make_shared<SpectrumBatch>();
  batch->meta.series_id = "monitor";
  batch->meta.frame_number = number;
  batch->meta.scan_shape = ScanShape{kWidth, 1000};
  batch->meta.energy_axis = EnergyAxis{100.0, 2.0, "eV"};
  batch->counts.resize(kChannels, kWidth);
  batch->positions.resize(kWidth);
  for (uint32_t s = 0; s < kWidth; ++s) {
    const double w = a(rng);
    Eigen::VectorXd mu = w * phases.col(0) + (1.0 - w) * phases.col(1);
    if (std::find(novel_x.begin(), novel_x.end(), s) != novel_x.end()) mu.segment(40, 4).array() += 40.0;
    for (int c = 0; c < kChannels; ++c) {
      batch->counts(c, s) = static_cast<float>(std::poisson_distribution<int>(mu(c))(rng));
    }
    batch->positions[s] = ScanPosition{s, static_cast<uint32_t>(number), 0};
  }
  return batch;
}

}  // namespace

TEST_CASE("novel spectra: one event per region with raw, denoised and residual spectra; never learnt") {
  test::PipelineFixture f;
  f.options.weighting = Weighting::kAuto;  // integer counts: Poisson-weighted, so deviance_z is the score
  f.options.pca.rank = 2;
  f.options.warmup_spectra = 256;
  f.options.weighting_options.calibration_spectra = 128;
  f.options.monitor.novelty = true;
  f.options.monitor.min_model_spectra = 256;
  f.options.monitor.detector.calibration_spectra = 2000;
  f.options.monitor.detector.exclusion_min_samples = 500;
  f.options.max_frames_in_flight = 64;
  std::mt19937 rng(3);
  std::vector<OutMessage> published;
  // Keeps what was "published", releasing each message's in-flight slot as the publisher would.
  const auto keep = [&published](std::vector<OutMessage> messages) {
    for (auto& m : messages) {
      m.token.reset();
      published.push_back(std::move(m));
    }
  };
  Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
  WorkItem start;
  start.kind = WorkItem::Kind::kSeriesStart;
  start.series.id = "monitor";
  start.series.channel_count = kChannels;
  start.series.scan_shape = ScanShape{kWidth, 1000};
  p.Submit(start);
  auto submit = [&](uint64_t n, const std::vector<uint32_t>& novel_x) {
    WorkItem w;
    w.batch = MakeFrame(n, rng, novel_x);
    p.Submit(std::move(w));
    if (n % 8 == 7) {
      p.Drain();
      keep(DrainQueue(f.out));
    }
  };
  // Warm-up and calibration: 256 + 2000 spectra, then monitoring.
  uint64_t n = 0;
  for (; n < 160; ++n) submit(n, {});
  p.Drain();
  keep(DrainQueue(f.out));
  CHECK(p.SessionState().novelty_state == "monitoring");
  const double learnt_before = f.metrics.model.model_spectra.Value();
  const double novel_before = f.metrics.monitor.novelty_spectra.Value();  // a nominal false alarm, now and then
  // Line 160: two adjacent novel positions (x 3 and 4) -> one region, one event. Line 161: x 4 (below (4, 160):
  // the region grows, no event) and x 10 (not adjacent: a second region and event).
  submit(n++, {3, 4});
  submit(n++, {4, 10});
  for (int i = 0; i < 6; ++i) submit(n++, {});
  p.Drain();
  keep(DrainQueue(f.out));

  std::vector<const OutMessage*> events, regions, calibrations;
  for (const auto& m : published) {
    if (m.topic != "novelty") continue;
    if (m.envelope->has_novelty_event()) events.push_back(&m);
    if (m.envelope->has_novelty_region()) regions.push_back(&m);
    if (m.envelope->has_novelty_calibration()) calibrations.push_back(&m);
  }
  REQUIRE(calibrations.size() >= 2);
  CHECK(calibrations.front()->envelope->novelty_calibration().state() == "calibrating");
  CHECK(calibrations.front()->envelope->novelty_calibration().reason() == "series_start");
  CHECK(calibrations.back()->envelope->novelty_calibration().state() == "monitoring");
  CHECK(calibrations.back()->envelope->novelty_calibration().deviance_threshold() > 0.0);

  // Nominal spectra may give a false alarm now and then (1e-4 per spectrum: ~0.3 expected here); the three
  // injected positions must be flagged, and give exactly two events.
  std::vector<std::pair<uint32_t, uint32_t>> at;
  for (const auto* m : events) at.emplace_back(m->envelope->novelty_event().position().x(),
                                               m->envelope->novelty_event().position().y());
  CHECK(std::count(at.begin(), at.end(), std::make_pair(3u, 160u)) == 1);
  CHECK(std::count(at.begin(), at.end(), std::make_pair(10u, 161u)) == 1);
  CHECK(std::count(at.begin(), at.end(), std::make_pair(4u, 160u)) == 0);  // joined (3, 160)'s region
  CHECK(std::count(at.begin(), at.end(), std::make_pair(4u, 161u)) == 0);
  for (const auto* m : events) {
    const auto& e = m->envelope->novelty_event();
    if (e.position().y() < 160) continue;
    CHECK(e.deviance_z() > e.deviance_threshold());
    CHECK(e.channel_count() == kChannels);
    CHECK(e.contributions_size() == 8);
    CHECK(e.contributions(0).channel() >= 40);  // the injected line
    CHECK(e.contributions(0).channel() <= 43);
    CHECK(e.contributions(0).energy() == doctest::Approx(100.0 + 2.0 * e.contributions(0).channel()));
    REQUIRE(m->payload.bytes == 3 * kChannels * sizeof(float));
    const float* v = static_cast<const float*>(m->payload.data);
    for (int c = 0; c < kChannels; ++c) CHECK(v[2 * kChannels + c] == doctest::Approx(v[c] - v[kChannels + c]));
    CHECK(Eigen::Map<const Eigen::VectorXf>(v, kChannels).segment(40, 4).sum() > 100.0f);
  }
  // The first region grew to 3 positions.
  bool grown = false;
  for (const auto* m : regions) {
    const auto& r = m->envelope->novelty_region();
    if (r.area_positions() == 3 && r.spectra() == 3 && r.x_min() == 3 && r.y_max() == 161) grown = true;
    CHECK(m->payload.bytes == kChannels * sizeof(float));
  }
  CHECK(grown);
  // Flagged spectra were kept out of the model: it learnt every other spectrum.
  const double novel = f.metrics.monitor.novelty_spectra.Value();
  CHECK(novel >= 4);
  // Excluded: the novel spectra, and those the guard held out while calibrating (outlier_guard.hpp).
  CHECK(f.metrics.model.model_spectra_excluded.Value() >= novel);
  CHECK(f.metrics.model.model_spectra.Value() - learnt_before == doctest::Approx(8 * kWidth - (novel - novel_before)));
  CHECK(f.metrics.monitor.novelty_events.Value() == doctest::Approx(static_cast<double>(events.size())));
  CHECK(f.metrics.monitor.novelty_state.Value() == 2);

  // A recalibration request takes effect at the next frame.
  CHECK(p.RequestRecalibrate(std::nullopt));
  submit(n++, {});
  p.Drain();
  bool recalibrating = false;
  for (auto& m : DrainQueue(f.out)) {
    if (m.topic == "novelty" && m.envelope->has_novelty_calibration()) {
      recalibrating |= m.envelope->novelty_calibration().reason() == "request" &&
                       m.envelope->novelty_calibration().state() == "calibrating";
    }
  }
  CHECK(recalibrating);
  CHECK(p.SessionState().novelty_state == "calibrating");
  CHECK(p.InFlight() == 0);
}
