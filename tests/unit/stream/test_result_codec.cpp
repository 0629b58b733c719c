// stream/result_codec: what it writes, serialised and parsed back as a client would, says what the Session
// reported — field by field, payloads byte for byte — for every kind of event a run produces.
#include <doctest/doctest.h>

#include "operators/session/session.hpp"
#include "stream/result_codec.hpp"

#include <cstring>
#include <map>
#include <random>
#include <set>
#include <variant>

using namespace specwatch;

namespace {

constexpr int kChannels = 64;
constexpr uint32_t kWidth = 16, kHeight = 8;

// Two-phase Poisson spectra, one scan line per frame; positions in `novel_x` of line 5 get a line at 40..43.
BatchPtr MakeFrame(uint64_t number, std::mt19937& rng, bool novel) {
  std::uniform_real_distribution<double> a(0.0, 1.0);
  auto b = std::make_shared<SpectrumBatch>();
  b->meta.series_id = "codec";
  b->meta.frame_number = number;
  b->meta.acquisition_time_s = 0.01 * static_cast<double>(number);
  b->meta.scan_shape = ScanShape{kWidth, kHeight};
  b->meta.energy_axis = EnergyAxis{100.0, 2.0, "eV"};
  b->meta.beam_current_pA = 50;
  b->meta.dwell_s = 1e-5;
  b->meta.pixel_area_A2 = 1;
  b->counts.resize(kChannels, kWidth);
  b->positions.resize(kWidth);
  const uint32_t line = static_cast<uint32_t>(number % kHeight), pass = static_cast<uint32_t>(number / kHeight);
  for (uint32_t s = 0; s < kWidth; ++s) {
    const double w = a(rng);
    for (int c = 0; c < kChannels; ++c) {
      double mu = w * (4.0 + 40.0 * std::exp(-0.5 * std::pow((c - 15) / 3.0, 2))) +
                  (1 - w) * (4.0 + 40.0 * std::exp(-0.5 * std::pow((c - 28) / 3.0, 2)));
      if (novel && line == 5 && (s == 3 || s == 4) && c >= 40 && c < 44) mu += 80.0;
      b->counts(c, s) = static_cast<float>(std::poisson_distribution<int>(mu)(rng));
    }
    b->positions[s] = ScanPosition{s, line, pass};
  }
  return b;
}

wire::Envelope RoundTrip(const wire::Envelope& e) {
  std::string bytes;
  REQUIRE(e.SerializeToString(&bytes));
  wire::Envelope back;
  REQUIRE(back.ParseFromString(bytes));
  return back;
}

template <typename T>
std::vector<T> PayloadAs(const stream::Payload& p) {
  REQUIRE(p.bytes % sizeof(T) == 0);
  std::vector<T> v(p.bytes / sizeof(T));
  std::memcpy(v.data(), p.data, p.bytes);
  return v;
}

}  // namespace

TEST_CASE("every event the session reports reads back from its message as the session stated it") {
  SessionOptions o;
  o.pca.rank = 2;
  o.pca.block = 16;
  o.warmup_spectra = 64;
  o.weighting_options.calibration_spectra = 64;
  o.monitor.min_model_spectra = 256;
  o.monitor.detector.calibration_spectra = 1000;
  o.dose_budget.position_e_per_A2 = 1e6;  // 3.12e3 per visit: the warning (8e5) after ~256 passes; limit later
  o.advice.min_interval_s = 0;
  Session session(o);
  const stream::ResultCodec codec(/*omit_denoised_spectra=*/false);
  std::mt19937 rng(9);
  std::set<std::string> kinds;  // bodies seen
  uint64_t frames = 0;
  for (uint64_t k = 0; k < 8 * 300; ++k) {
    const BatchPtr b = MakeFrame(k, rng, session.Status().novelty_state == "monitoring");
    const FrameScoresPtr s = session.Score(*b);
    // The frame's own message: positions, scores, residuals and the reconstruction as they were computed.
    const stream::EncodedMessage d = codec.Denoised(*b, s);
    const wire::Envelope de = RoundTrip(*d.envelope);
    CHECK(d.topic == "denoised");
    CHECK(de.series_id() == "codec");
    const auto& den = de.denoised();
    CHECK(den.frame_number() == k);
    CHECK(den.spectrum_count() == kWidth);
    CHECK(den.positions(7).x() == 7);
    CHECK(den.positions(7).y() == b->positions[7].y);
    CHECK(den.rank() == s->Rank());
    CHECK(den.model_version() == s->ModelVersion());
    REQUIRE(den.residual_norm_size() == kWidth);
    CHECK(den.residual_norm(3) == s->result.residual_norm(3));
    CHECK(static_cast<Eigen::Index>(den.scores_size()) == s->result.scores.size());
    if (s->weighted) CHECK(den.deviance_z(5) == s->result.deviance_z(5));
    CHECK(PayloadAs<float>(d.payload) ==
          std::vector<float>(s->result.denoised.data(), s->result.denoised.data() + s->result.denoised.size()));
    ++frames;

    SessionStep step = session.Consume(b, s, 0.01 * static_cast<double>(k));
    std::vector<SeriesEvent> events = step.events;
    for (const ModelWork& w : step.model_work) {
      ModelStep m = session.Learn(w);
      events.insert(events.end(), m.events.begin(), m.events.end());
      session.Install(m);
    }
    for (const SeriesEvent& e : events) {
      const std::optional<stream::EncodedMessage> m = codec.Encode(e);
      if (std::holds_alternative<Notice>(e.event) || std::holds_alternative<DenoisedFrameEvent>(e.event) ||
          std::holds_alternative<ModelVersionEvent>(e.event) || std::holds_alternative<SnapshotDueEvent>(e.event)) {
        CHECK_FALSE(m.has_value());
        continue;
      }
      REQUIRE(m.has_value());
      const wire::Envelope w = RoundTrip(*m->envelope);
      CHECK(w.series_id() == e.series_id);
      if (const auto* c = std::get_if<CalibrationEvent>(&e.event)) {
        kinds.insert("calibration");
        CHECK(m->topic == "novelty");
        CHECK(w.novelty_calibration().state() == c->state);
        CHECK(w.novelty_calibration().reason() == c->reason);
        if (c->deviance) CHECK(w.novelty_calibration().deviance_threshold() == c->deviance->threshold);
      } else if (const auto* n = std::get_if<NoveltyEvent>(&e.event)) {
        kinds.insert("novelty");
        const auto& ne = w.novelty_event();
        CHECK(ne.frame_number() == n->frame_number);
        CHECK(ne.position().x() == n->hit.position.x);
        CHECK(ne.position().y() == n->hit.position.y);
        CHECK(ne.deviance_z() == n->hit.deviance_z);
        CHECK(ne.deviance_threshold() == n->deviance_threshold);
        CHECK(ne.region_id() == n->hit.region_id);
        CHECK(ne.retrospective() == n->retrospective);
        CHECK(ne.channel_count() == kChannels);
        CHECK(ne.energy_axis().dispersion() == 2.0);
        CHECK(PayloadAs<float>(m->payload) == n->spectra);
      } else if (const auto* r = std::get_if<RegionEvent>(&e.event)) {
        kinds.insert("region");
        CHECK(w.novelty_region().region_id() == r->region.id);
        CHECK(w.novelty_region().area_positions() == r->region.area_positions);
        CHECK(PayloadAs<float>(m->payload) == r->region.mean_counts);
      } else if (const auto* map = std::get_if<ResidualMapEvent>(&e.event)) {
        kinds.insert("residual_map");
        CHECK(m->topic == "residual_map");
        CHECK(w.residual_map().width() == kWidth);
        CHECK(w.residual_map().scan_pass() == map->map.pass);
        CHECK(w.residual_map().statistic() == map->map.statistic);
        CHECK(w.residual_map().outliers() == map->map.summary.outliers);
        // Byte for byte (positions not scored yet are NaN).
        REQUIRE(m->payload.bytes == map->map.values.size() * sizeof(float));
        CHECK(std::memcmp(m->payload.data, map->map.values.data(), m->payload.bytes) == 0);
      } else if (const auto* dm = std::get_if<DoseMapEvent>(&e.event)) {
        kinds.insert("dose_map");
        CHECK(m->topic == "dose");
        CHECK(w.dose_map().scan_pass() == dm->scan_pass);
        CHECK(w.dose_map().run_dose_e_per_a2() == dm->run_dose_e_per_A2);
        CHECK(w.dose_map().position_budget_e_per_a2() == 1e6);
        CHECK(PayloadAs<double>(m->payload) == dm->position_dose_e_per_A2);
      } else if (const auto* a = std::get_if<AdviceEvent>(&e.event)) {
        kinds.insert("advice");
        CHECK(m->topic == "advice");
        CHECK(w.advice().tile_codes() == a->tile_codes);
        CHECK(w.advice().version() == a->version);
        CHECK(w.advice().trigger() == (a->trigger == AdviceTrigger::kPass ? "pass" : "change"));
      } else if (const auto* al = std::get_if<DoseAlarmEvent>(&e.event)) {
        kinds.insert("dose_alarm");
        CHECK(w.dose_alarm().level() == ToString(al->alarm.level));
        CHECK(w.dose_alarm().positions_size() == static_cast<int>(al->alarm.positions.size()));
      } else if (const auto* rc = std::get_if<RankChangeEvent>(&e.event)) {
        kinds.insert("rank_change");
        CHECK(m->topic == "model");
        CHECK(w.rank_change().new_rank() == rc->new_rank);
      } else if (const auto* dr = std::get_if<DriftEvent>(&e.event)) {
        kinds.insert("drift");
        CHECK(w.drift_event().kind() == dr->report.kind);
        CHECK(w.drift_event().magnitude() == dr->report.magnitude);
      } else if (std::holds_alternative<DamageEvent>(e.event)) {
        kinds.insert("damage");
        CHECK(m->topic == "damage");
      }
    }
  }
  CHECK(frames == 8 * 300);
  for (const char* kind : {"calibration", "novelty", "region", "residual_map", "dose_map", "advice", "dose_alarm"}) {
    CAPTURE(kind);
    CHECK(kinds.count(kind) == 1);
  }
}

TEST_CASE("a retrospective novelty event says so, with the spectrum's own frame, index, position and time") {
  const stream::ResultCodec codec(/*omit_denoised_spectra=*/false);
  NoveltyEvent n;
  n.retrospective = true;
  n.frame_number = 17;
  n.acquisition_time_s = 0.25;
  n.hit.spectrum = 5;
  n.hit.position = ScanPosition{3, 4, 0};
  n.hit.by_deviance = true;
  n.hit.deviance_z = 12.5;
  n.deviance_threshold = 6.0;
  n.spectra.assign(6, 1.0f);
  const std::optional<stream::EncodedMessage> m = codec.Encode(SeriesEvent{"s", n});
  REQUIRE(m.has_value());
  const wire::NoveltyEvent e = RoundTrip(*m->envelope).novelty_event();
  CHECK(e.retrospective());
  CHECK(e.frame_number() == 17);
  CHECK(e.spectrum_index() == 5);
  CHECK(e.position().x() == 3);
  CHECK(e.position().y() == 4);
  CHECK(e.acquisition_time_s() == 0.25);
  CHECK(e.deviance_threshold() == 6.0);
  n.retrospective = false;
  CHECK_FALSE(RoundTrip(*codec.Encode(SeriesEvent{"s", n})->envelope).novelty_event().retrospective());
}

TEST_CASE("the status message states the facts it was given") {
  stream::StatusFacts f;
  f.state = "frozen";
  f.series_id = "s";
  f.frames_received = 7;
  f.spectra_rejected = 3;
  f.published = {{"denoised", 5}, {"novelty", 1}};
  f.session.novelty_state = "monitoring";
  f.session.budget.position_e_per_A2 = 12.5;
  const wire::Status s = stream::EncodeStatus(f);
  CHECK(s.state() == "frozen");
  CHECK(s.frames_received() == 7);
  CHECK(s.spectra_rejected() == 3);
  REQUIRE(s.published_size() == 2);
  CHECK(s.published(1).topic() == "novelty");
  CHECK(s.novelty_state() == "monitoring");
  CHECK(s.dose_position_budget_e_per_a2() == 12.5);
  const stream::EncodedMessage m = stream::StatusMessage(f);
  CHECK(m.topic == "status");
  CHECK(RoundTrip(*m.envelope).series_id() == "s");
  CHECK(RoundTrip(*m.envelope).status().frames_received() == 7);
}
