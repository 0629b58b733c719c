#pragma once
/// Issue 4's acceptance tests feed the simulator's frames to the service's Session (session_driver.hpp) and record
/// what it reported, per spectrum and per event. No per-frame science here: a change to the Session changes what
/// these tests see and what the service does alike.

#include "session_driver.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace specwatch::acceptance {

using OperandoConfig = SessionConfig;

/// The scene pixel of a scan position (row-major).
inline uint64_t PixelOf(const sim::SpectrumPosition& p, uint32_t width) { return uint64_t{p.y} * width + p.x; }

/// Everything a run reported, and per spectrum whether it was flagged.
struct OperandoRecord {
  std::vector<NoveltyHit> events;
  std::vector<uint64_t> event_spectrum;      ///< series spectrum index of each event
  std::vector<DriftReport> drifts;           ///< in order; subspace ones included
  std::vector<uint8_t> novel;                ///< per spectrum of the series
  std::vector<uint8_t> monitored;            ///< per spectrum: the detector was monitoring when it came
  std::vector<float> z, t2;                  ///< per spectrum: deviance_z and Hotelling T² (0 unscored)
  uint64_t first_monitored_spectrum = UINT64_MAX;
  uint64_t regions_reported = 0;
  uint64_t retrospective_events = 0;         ///< novelty events marked retrospective (pass ends)
  std::vector<NoveltyEvent> retrospective;   ///< those events, without their spectra
  std::vector<ResidualMapEvent> maps;        ///< pass maps, in order (with their pass-end rescoring)
  double total_shift_applied = 0;            ///< sum of the model shifts (energy correction)
  int DriftCount(const std::string& kind) const {
    int n = 0;
    for (const auto& d : drifts) n += d.kind == kind;
    return n;
  }
};

class OperandoLoop {
 public:
  OperandoLoop(const sim::SimOptions& sim, OperandoConfig config) : driver_(sim, std::move(config)) {}

  SimFrames& frames() { return driver_.frames(); }
  int Rank() { return driver_.session().Model()->rank; }
  std::shared_ptr<const PcaModel> Model() { return driver_.session().Model(); }
  /// The deviance threshold in force now (0: none), as the status reports it.
  double Threshold() { return driver_.session().Status().novelty_threshold; }
  const OperandoMonitor& monitor() { return *driver_.session().monitor(); }

  /// The series' end (its last pass map with the pass-end rescoring), appended to `record`.
  void End(OperandoRecord* record) {
    for (const SeriesEvent& e : driver_.End()) Record(e, 0, record);
  }

  /// Runs frames [first, last) and appends to `record`.
  void Run(uint64_t first, uint64_t last, OperandoRecord* record) {
    for (uint64_t k = first; k < last; ++k) {
      const FrameRun r = driver_.Step(k);
      const uint64_t base = r.first_spectrum;
      const Eigen::Index m = r.batch->counts.cols();
      record->novel.resize(base + m, 0);
      record->monitored.resize(base + m, 0);
      record->z.resize(base + m, 0.0f);
      record->t2.resize(base + m, 0.0f);
      const bool scored = r.scores->weighted && r.scores->result.scores.rows() > 0;
      for (Eigen::Index i = 0; i < m; ++i) {
        record->novel[base + i] = r.step.novel ? (*r.step.novel)[static_cast<size_t>(i)] : 0;
        record->monitored[base + i] = r.monitoring_before;
        if (scored) {
          record->z[base + i] = r.scores->result.deviance_z(i);
          record->t2[base + i] = r.scores->result.hotelling_t2(i);
        }
      }
      if (r.monitoring_before) record->first_monitored_spectrum = std::min(record->first_monitored_spectrum, base);
      for (const std::vector<SeriesEvent>* events : {&r.step.events, &r.model_events}) {
        for (const SeriesEvent& e : *events) Record(e, base, record);
      }
      for (const ModelWork& w : r.step.model_work) {
        if (w.shift_model_channels != 0.0 && driver_.session().Model()->spectra_seen > 0) {
          record->total_shift_applied += w.shift_model_channels;
        }
      }
    }
  }

 private:
  static void Record(const SeriesEvent& e, uint64_t base, OperandoRecord* record) {
    if (const auto* n = std::get_if<NoveltyEvent>(&e.event)) {
      if (n->retrospective) {
        ++record->retrospective_events;
        NoveltyEvent kept = *n;
        kept.spectra.clear();
        record->retrospective.push_back(std::move(kept));
        return;
      }
      record->events.push_back(n->hit);
      record->event_spectrum.push_back(base + n->hit.spectrum);
    } else if (const auto* map = std::get_if<ResidualMapEvent>(&e.event)) {
      record->maps.push_back(*map);
    } else if (std::holds_alternative<RegionEvent>(e.event)) {
      ++record->regions_reported;
    } else if (const auto* d = std::get_if<DriftEvent>(&e.event)) {
      record->drifts.push_back(d->report);
    }
  }

  SessionDriver driver_;
};

}  // namespace specwatch::acceptance
