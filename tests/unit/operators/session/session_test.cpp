// The Session, the one home of the per-frame science: Score against an independent call of the denoiser, the
// order and content of Consume's events against the scores of the same frames, the learn side's model work, and
// what the caller may do between them (skip learning, freeze, a new series with another channel count).
#include <doctest/doctest.h>

#include "operators/model/denoiser.hpp"
#include "operators/session/session.hpp"

#include <random>
#include <variant>

using namespace specwatch;

namespace {

constexpr uint32_t kWidth = 16;  // one frame = one scan line

// Poisson counts of a two-phase mixture (~1,000 counts per spectrum over 64 channels), scan line `line` of a
// kWidth x height scan, pass `pass`.
BatchPtr MakeFrame(const std::string& series, uint64_t number, uint32_t line, uint32_t pass, uint32_t height,
                   std::mt19937& rng, int channels = 64) {
  std::uniform_real_distribution<double> a(0.0, 1.0);
  auto b = std::make_shared<SpectrumBatch>();
  b->meta.series_id = series;
  b->meta.frame_number = number;
  b->meta.scan_shape = ScanShape{kWidth, height};
  b->meta.energy_axis = EnergyAxis{100.0, 2.0, "eV"};
  b->meta.beam_current_pA = 50;
  b->meta.dwell_s = 1e-5;
  b->meta.pixel_area_A2 = 1;
  b->counts.resize(channels, kWidth);
  b->positions.resize(kWidth);
  for (uint32_t s = 0; s < kWidth; ++s) {
    const double w = a(rng);
    for (int c = 0; c < channels; ++c) {
      const double p0 = 4.0 + 40.0 * std::exp(-0.5 * std::pow((c - channels * 0.25) / 3.0, 2));
      const double p1 = 4.0 + 40.0 * std::exp(-0.5 * std::pow((c - channels * 0.45) / 3.0, 2));
      b->counts(c, s) = static_cast<float>(std::poisson_distribution<int>(w * p0 + (1 - w) * p1)(rng));
    }
    b->positions[s] = ScanPosition{s, line, pass};
  }
  return b;
}

// Runs one frame as the service does; returns Consume's step.
SessionStep Run(Session& session, const BatchPtr& b, std::vector<SeriesEvent>* model_events = nullptr,
                bool learn = true) {
  SessionStep step = session.Consume(b, session.Score(*b), 0.0);
  for (ModelWork w : step.model_work) {
    if (w.kind == ModelWork::Kind::kFrame) w.learn = w.learn && learn;
    ModelStep m = session.Learn(w);
    if (model_events) model_events->insert(model_events->end(), m.events.begin(), m.events.end());
    session.Install(m);
  }
  return step;
}

SessionOptions SmallOptions() {
  SessionOptions o;
  o.pca.rank = 2;
  o.pca.oversample = 4;
  o.pca.block = 16;
  o.warmup_spectra = 64;
  o.weighting_options.calibration_spectra = 64;
  return o;
}

template <typename T>
std::vector<const T*> All(const std::vector<SeriesEvent>& events) {
  std::vector<const T*> out;
  for (const SeriesEvent& e : events) {
    if (const T* t = std::get_if<T>(&e.event)) out.push_back(t);
  }
  return out;
}

}  // namespace

TEST_CASE("Score: raw counts until the model is warm, then exactly the denoiser with the installed model") {
  Session session(SmallOptions());
  std::mt19937 rng(1);
  const BatchPtr first = MakeFrame("s", 0, 0, 0, 64, rng);
  const FrameScoresPtr cold = session.Score(*first);
  CHECK_FALSE(cold->Usable());
  CHECK(cold->result.denoised == first->counts);
  for (uint32_t k = 0; k < 8; ++k) Run(session, MakeFrame("s", k, k, 0, 64, rng));  // 128 spectra learnt
  CHECK(session.SpectraLearnt() == 128);
  const BatchPtr b = MakeFrame("s", 8, 8, 0, 64, rng);
  const FrameScoresPtr warm = session.Score(*b);
  REQUIRE(warm->Usable());
  CHECK(warm->model == session.Model());
  CHECK(warm->weighted);  // integer counts, weighting "auto": Poisson
  DenoiseResult independent;
  Denoise(*session.Model(), b->counts, &independent);
  CHECK(warm->result.denoised == independent.denoised);
  CHECK(warm->result.deviance_z == independent.deviance_z);
  CHECK(warm->Rank() == static_cast<uint32_t>(session.Model()->rank));
}

TEST_CASE("Consume: one denoised marker per frame; each pass's residual map holds the frames' scores, its dose map "
          "follows it") {
  SessionOptions options = SmallOptions();
  options.monitor.retrospective.enabled = false;  // the live scores only (the pass-end rescoring: below)
  Session session(options);
  std::mt19937 rng(2);
  constexpr uint32_t kHeight = 4;
  for (uint32_t k = 0; k < 8; ++k) Run(session, MakeFrame("warm", k, k % kHeight, k / kHeight, kHeight, rng));
  // A new series: two passes of 4 lines; the scores each frame was given, by position.
  std::vector<float> scores(kWidth * kHeight, -1.0f);
  std::vector<SeriesEvent> events;
  const SessionStep start = session.StartSeries(SeriesInfo{.id = "map", .channel_count = 64,
                                                           .scan_shape = ScanShape{kWidth, kHeight}});
  events.insert(events.end(), start.events.begin(), start.events.end());
  for (uint32_t k = 0; k < 2 * kHeight; ++k) {
    const BatchPtr b = MakeFrame("map", k, k % kHeight, k / kHeight, kHeight, rng);
    const FrameScoresPtr s = session.Score(*b);
    if (k < kHeight) {
      for (uint32_t i = 0; i < kWidth; ++i) scores[(k % kHeight) * kWidth + i] = s->result.deviance_z(i);
    }
    SessionStep step = session.Consume(b, s, 0.0);
    CHECK(All<DenoisedFrameEvent>(step.events).size() == 1);
    events.insert(events.end(), step.events.begin(), step.events.end());
    for (const ModelWork& w : step.model_work) session.Install(session.Learn(w));
  }
  const SessionStep end = session.EndSeries(SeriesEndInfo{"map", 8, 128});
  events.insert(events.end(), end.events.begin(), end.events.end());
  // The "warm" series' open pass was closed by the new series' start; then passes 0 and 1 of "map".
  std::vector<const ResidualMapEvent*> maps;
  std::vector<size_t> map_at, dose_at;
  for (size_t i = 0; i < events.size(); ++i) {
    if (const auto* m = std::get_if<ResidualMapEvent>(&events[i].event); m && events[i].series_id == "map") {
      maps.push_back(m);
      map_at.push_back(i);
    }
    if (std::holds_alternative<DoseMapEvent>(events[i].event) && events[i].series_id == "map") dose_at.push_back(i);
  }
  REQUIRE(maps.size() == 2);
  REQUIRE(dose_at.size() == 2);
  CHECK(maps[0]->map.pass == 0);
  CHECK(maps[0]->map.closed_by == "complete");
  CHECK(maps[1]->map.closed_by == "complete");
  CHECK(maps[0]->map.statistic == "deviance_z");
  CHECK(maps[0]->map.values == scores);
  for (size_t i = 0; i < 2; ++i) CHECK(dose_at[i] == map_at[i] + 1);
  const auto* dose = std::get_if<DoseMapEvent>(&events[dose_at[0]].event);
  // 50 pA for 10 us on 1 A^2: 3.12e3 e-/A^2 per spectrum, one visit per position in pass 0.
  const double d = DosePerSpectrum_e_per_A2(50, 1e-5, 1);
  for (double v : dose->position_dose_e_per_A2) CHECK(v == doctest::Approx(d));
  CHECK(All<DenoisedFrameEvent>(events).size() == 8);
}

TEST_CASE("pass end: the spectra seen before the model existed are scored again with the pass-end model; the map "
          "carries those scores and its summary is of what it carries") {
  Session session(SmallOptions());
  std::mt19937 rng(4);
  constexpr uint32_t kHeight = 8;
  std::vector<BatchPtr> frames;
  std::vector<SeriesEvent> events;
  const SessionStep start = session.StartSeries(SeriesInfo{.id = "late", .channel_count = 64,
                                                           .scan_shape = ScanShape{kWidth, kHeight}});
  std::vector<uint8_t> live_scored(kWidth * kHeight, 0);
  std::shared_ptr<const PcaModel> pass_end;
  for (uint32_t k = 0; k < kHeight; ++k) {
    const BatchPtr b = MakeFrame("late", k, k, 0, kHeight, rng);
    // The last line completes the pass: its map closes in that frame's Consume, before the frame is learnt.
    pass_end = session.Model();
    const FrameScoresPtr s = session.Score(*b);
    for (uint32_t i = 0; i < kWidth; ++i) live_scored[k * kWidth + i] = s->Usable() && s->weighted;
    frames.push_back(b);
    SessionStep step = session.Consume(b, s, 0.0);
    events.insert(events.end(), step.events.begin(), step.events.end());
    for (const ModelWork& w : step.model_work) session.Install(session.Learn(w));
  }
  REQUIRE_FALSE(live_scored[0]);  // the first frame came before any model
  const SessionStep end = session.EndSeries(SeriesEndInfo{"late", kHeight, kWidth * kHeight});
  events.insert(events.end(), end.events.begin(), end.events.end());
  const std::vector<const ResidualMapEvent*> maps = All<ResidualMapEvent>(events);
  REQUIRE(maps.size() == 1);
  const PassMap& map = maps[0]->map;
  // Every position unscored live holds its score under the pass-end model, computed here independently.
  DenoiseResult r;
  uint64_t rescored = 0;
  for (uint32_t k = 0; k < kHeight; ++k) {
    Denoise(*pass_end, frames[k]->counts, &r);
    for (uint32_t i = 0; i < kWidth; ++i) {
      if (live_scored[k * kWidth + i]) continue;
      CAPTURE(k);
      CAPTURE(i);
      CHECK(map.values[k * kWidth + i] == doctest::Approx(r.deviance_z(i)).epsilon(1e-5));
      ++rescored;
    }
  }
  CHECK(rescored >= kWidth);
  CHECK(map.positions_scored == kWidth * kHeight);
  const RobustSummary again = SummariseRobust(map.values, 5.0);
  CHECK(map.summary.median == again.median);
  CHECK(map.summary.count == kWidth * kHeight);
}

TEST_CASE("the caller may skip a frame's learning and freeze the model; a new channel count restarts the model and "
          "drops the subspace reference") {
  SessionOptions o = SmallOptions();
  o.monitor.min_model_spectra = 256;
  o.monitor.detector.calibration_spectra = 1000;
  o.subspace_check_spectra = 64;
  Session session(o);
  std::mt19937 rng(3);
  Run(session, MakeFrame("a", 0, 0, 0, 1000, rng));
  Run(session, MakeFrame("a", 1, 1, 0, 1000, rng), nullptr, /*learn=*/false);
  CHECK(session.SpectraLearnt() == kWidth);
  session.SetFrozen(true);
  const SessionStep frozen = Run(session, MakeFrame("a", 2, 2, 0, 1000, rng));
  CHECK(frozen.model_spectra_skipped == kWidth);
  CHECK(session.SpectraLearnt() == kWidth);
  session.SetFrozen(false);
  // Until the thresholds exist (256 learnt, then 1,000 calibration spectra) and the subspace reference is taken.
  std::vector<SeriesEvent> model_events;
  uint64_t k = 3;
  for (; k < 200 && session.Status().novelty_state != "monitoring"; ++k) {
    Run(session, MakeFrame("a", k, static_cast<uint32_t>(k), 0, 1000, rng), &model_events);
  }
  REQUIRE(session.Status().novelty_state == "monitoring");
  for (uint64_t j = 0; j < 8; ++j, ++k) {  // subspace checks run: no drift on a stationary stream
    Run(session, MakeFrame("a", k, static_cast<uint32_t>(k), 0, 1000, rng), &model_events);
  }
  CHECK(All<DriftEvent>(model_events).empty());
  REQUIRE(session.Status().subspace_angle_deg > 0.0);  // the reference was taken and checked against
  // Series "b": 48 channels. The model restarts; the old reference must not be compared with the new basis.
  CHECK_NOTHROW(for (uint64_t j = 0; j < 20; ++j) {
    Run(session, MakeFrame("b", j, static_cast<uint32_t>(j), 0, 1000, rng, 48), &model_events);
  });
  CHECK(session.Model()->mean.size() == 48);
  CHECK(All<DriftEvent>(model_events).empty());
}
