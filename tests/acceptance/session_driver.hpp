#pragma once
/// The acceptance tests feed the simulator's frames to the Session the service runs (operators/session), in one
/// thread and in order: Score, Consume, then Learn and Install for each of the step's model work, as the flow graph
/// does (server/pipeline.cpp) — only the threads differ. The driver has no science of its own: it builds each
/// frame's batch as the decoder would (header facts from the simulator) and hands out the steps.

#include "acceptance_support.hpp"
#include "operators/session/session.hpp"

#include <memory>
#include <string>
#include <vector>

namespace specwatch::acceptance {

/// The service's science options, plus how often the model learns (the service's when_idle mode learns from a
/// subsample when updates cannot keep up).
struct SessionConfig : SessionOptions {
  uint64_t learn_every = 1;  ///< learn frames k with k % learn_every == 0 (1: all, model_updates "all")
};

/// What one frame gave.
struct FrameRun {
  uint64_t frame = 0;
  uint64_t first_spectrum = 0;        ///< series index of its first spectrum
  BatchPtr batch;
  FrameScoresPtr scores;
  SessionStep step;                   ///< Consume's result
  std::vector<SeriesEvent> model_events;  ///< what its model work gave (subspace drift, rank changes, ...)
  bool monitoring_before = false;     ///< the novelty detector was monitoring when the frame came
};

class SessionDriver {
 public:
  SessionDriver(const sim::SimOptions& sim, SessionConfig config)
      : frames_(sim), config_(config), session_(config) {}

  SimFrames& frames() { return frames_; }
  const sim::Simulator& sim() const { return frames_.sim(); }
  Session& session() { return session_; }

  /// Frame k as the decoder hands it over: counts, positions, the simulator's header facts.
  BatchPtr Batch(uint64_t k) {
    const sim::Simulator& s = frames_.sim();
    const sim::SimOptions& o = s.Options();
    const sim::FrameInfo info = s.Frame(k);
    auto b = std::make_shared<SpectrumBatch>();
    b->meta.series_id = o.SeriesId();
    b->meta.frame_number = k;
    b->meta.receive_index = k;
    b->meta.acquisition_time_s = static_cast<double>(info.start_index) * o.DwellUs() * 1e-6;
    b->meta.modality = o.modality;
    b->meta.energy_axis = s.Axis();
    b->meta.dwell_s = o.DwellUs() * 1e-6;
    b->meta.beam_current_pA = o.beam_current_pA;
    b->meta.pixel_area_A2 = o.pixel_A * o.pixel_A;
    b->meta.scan_shape = ScanShape{o.scan_width, o.scan_height};
    b->meta.integer_counts = o.payload != sim::PayloadKind::kFloat32;
    b->counts = frames_.Frame(k);
    b->positions.resize(info.spectrum_count);
    for (uint32_t i = 0; i < info.spectrum_count; ++i) {
      const auto p = s.Position(info.start_index + i);
      b->positions[i] = ScanPosition{p.x, p.y, p.pass};
    }
    return b;
  }

  /// Frame k through the session.
  FrameRun Step(uint64_t k) {
    FrameRun r;
    r.frame = k;
    r.first_spectrum = frames_.sim().Frame(k).start_index;
    r.batch = Batch(k);
    r.monitoring_before = session_.Status().novelty_state == "monitoring";
    r.scores = session_.Score(*r.batch);
    r.step = session_.Consume(r.batch, r.scores, r.batch->meta.acquisition_time_s);
    for (ModelWork& w : r.step.model_work) {
      if (w.kind == ModelWork::Kind::kFrame && k % config_.learn_every != 0) w.learn = false;
      if (w.kind == ModelWork::Kind::kFrame && !w.learn && !w.HasMonitorOps()) continue;
      ModelStep m = session_.Learn(w);
      for (SeriesEvent& e : m.events) r.model_events.push_back(std::move(e));
      session_.Install(m);
    }
    return r;
  }

  /// The series' end: its last pass map (and the damage fit with it) and the model's flush.
  std::vector<SeriesEvent> End() {
    SessionStep step = session_.EndSeries(SeriesEndInfo{frames_.sim().Options().SeriesId(), 0, 0});
    std::vector<SeriesEvent> events = std::move(step.events);
    for (const ModelWork& w : step.model_work) {
      ModelStep m = session_.Learn(w);
      for (SeriesEvent& e : m.events) events.push_back(std::move(e));
      session_.Install(m);
    }
    return events;
  }

 private:
  SimFrames frames_;
  SessionConfig config_;
  Session session_;
};

}  // namespace specwatch::acceptance
