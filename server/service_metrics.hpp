#pragma once
/// The service's Prometheus metrics, in groups per stage, built once from an injected registry; each part gets
/// the groups it counts in, by reference. prometheus-cpp counters, gauges and histograms are thread-safe.

#include "stream/frame_decoder.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <map>
#include <mutex>
#include <string>

namespace specwatch::server {

/// The stages a frame passes (label `stage` of specwatch_stage_latency_seconds, specwatch_stage_errors_total and
/// specwatch_stage_cpu_seconds_total; docs/architecture.md walks them). end_to_end is a latency only: receipt to
/// publish.
enum class Stage { kDecode, kScore, kSession, kLearn, kEncode, kPublish, kEndToEnd };
inline constexpr std::array<const char*, 7> kStageLabels = {"decode", "score",   "session",   "learn",
                                                            "encode", "publish", "end_to_end"};

/// The receiver: what arrived, what was rejected (by the decoder, or by a failing stage: stage_error).
class IntakeMetrics {
 public:
  explicit IntakeMetrics(prometheus::Registry& registry);

  prometheus::Counter& frames_received;
  prometheus::Counter& spectra_received;
  prometheus::Counter& frames_dropped;     ///< frames missing from the detector's numbering
  prometheus::Counter& sequence_gaps;      ///< gap events (one per jump in frame numbers)
  prometheus::Counter& series_started;
  prometheus::Histogram& input_lag;  ///< receipt (Unix) minus the frame's acquisition time: backlog upstream

  prometheus::Counter& FramesRejected(stream::RejectReason r) { return *frames_rejected_.at(r); }
  prometheus::Counter& SpectraRejected(stream::RejectReason r) { return *spectra_rejected_.at(r); }

 private:
  std::map<stream::RejectReason, prometheus::Counter*> frames_rejected_;
  std::map<stream::RejectReason, prometheus::Counter*> spectra_rejected_;
};

/// The learn stage: the model.
class ModelMetrics {
 public:
  explicit ModelMetrics(prometheus::Registry& registry);

  prometheus::Counter& model_spectra;      ///< spectra the model learnt from
  prometheus::Counter& model_spectra_skipped;  ///< spectra not learnt (update busy, frozen or warm-up done)
  prometheus::Gauge& model_rank;
  prometheus::Gauge& model_version;
  prometheus::Counter& model_weight_refreshes;  ///< Poisson weights recomputed, model re-expressed
  prometheus::Counter& model_rank_changes;  ///< "model" events: the rank changed between two versions
  prometheus::Counter& model_spectra_excluded;  ///< flagged novel (or provisional outliers): never learnt
};

/// Novelty, drift and residual maps (the session and encode stages).
class MonitorMetrics {
 public:
  explicit MonitorMetrics(prometheus::Registry& registry);

  prometheus::Gauge& residual_map_outliers; ///< positions >= 5 robust sigma in the last residual map
  prometheus::Counter& novelty_spectra;   ///< spectra flagged novel (rate(): the novelty rate)
  prometheus::Counter& novelty_events;    ///< novelty events published (one per new region)
  prometheus::Gauge& novelty_state;       ///< 0 off or waiting, 1 calibrating, 2 monitoring, 3 absorbing
  prometheus::Gauge& novelty_threshold;   ///< on deviance_z; 0 while not calibrated
  prometheus::Gauge& energy_shift_channels;  ///< total energy-axis shift of the series
  prometheus::Gauge& energy_shift_axis;   ///< the same in energy-axis units (eV for EELS and EDS)
  prometheus::Gauge& subspace_angle;      ///< largest principal angle to the reference basis, degrees

  /// Drift events by kind ("energy", "subspace", "statistics", "new_phase"); other kinds are added on first use
  /// (guarded).
  prometheus::Counter& DriftEvents(const std::string& kind);

 private:
  prometheus::Family<prometheus::Counter>& drift_family_;
  std::mutex drift_mutex_;
  std::map<std::string, prometheus::Counter*> drift_events_;
};

/// Dose, damage (the session and encode stages).
class DoseMetrics {
 public:
  explicit DoseMetrics(prometheus::Registry& registry);

  prometheus::Gauge& dose_run;            ///< run dose of the current series, e-/A^2 (summed over spectra)
  prometheus::Gauge& dose_max_position;   ///< largest dose of a scan position, e-/A^2
  prometheus::Gauge& dose_rate;           ///< the beam's areal dose rate of the latest frame, e-/A^2/s
  prometheus::Gauge& dose_positions_over_warning;  ///< positions at or beyond the warning fraction of the budget
  prometheus::Gauge& dose_positions_over_limit;    ///< positions at or beyond the position budget
  prometheus::Counter& damage_warnings;   ///< beam-damage warnings (one per series at most)
  prometheus::Gauge& damage_critical_dose;  ///< the current estimate of D_c, e-/A^2 (0: none)
  prometheus::Gauge& damage_affected_positions;  ///< tracked positions whose spectra changed with dose

  /// Dose alarms by level ("warning", "limit") and scope ("position": one per position, "run").
  prometheus::Counter& DoseAlarms(const std::string& level, const std::string& scope);

 private:
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> dose_alarms_;  // fixed at construction
};

/// The publisher.
class PublishMetrics {
 public:
  explicit PublishMetrics(prometheus::Registry& registry);

  prometheus::Counter& spectra_published;

  prometheus::Counter& Published(const std::string& topic);

 private:
  prometheus::Family<prometheus::Counter>& published_family_;
  std::map<std::string, prometheus::Counter*> published_;  // filled at construction for known topics
};

/// Per stage of the flow graph (server/pipeline.hpp): latency, CPU, errors; frames inside the graph.
class StageMetrics {
 public:
  explicit StageMetrics(prometheus::Registry& registry);

  prometheus::Gauge& frames_in_flight;

  prometheus::Histogram& Latency(Stage s) { return *latency_[static_cast<size_t>(s)]; }
  /// Exceptions that escaped a stage's body (caught at the node; the frame is rejected as stage_error).
  prometheus::Counter& StageErrors(Stage s) { return *stage_errors_[static_cast<size_t>(s)]; }
  /// CPU seconds the stage's threads spent in its bodies (thread CPU time), so cost per spectrum is visible.
  prometheus::Counter& StageCpu(Stage s) { return *stage_cpu_[static_cast<size_t>(s)]; }

 private:
  std::array<prometheus::Histogram*, kStageLabels.size()> latency_{};
  std::array<prometheus::Counter*, kStageLabels.size()> stage_errors_{};
  std::array<prometheus::Counter*, kStageLabels.size()> stage_cpu_{};
};

/// Every group, built once from an injected registry; each part of the service is handed the groups it counts in.
struct ServiceMetrics {
  explicit ServiceMetrics(prometheus::Registry& registry)
      : intake(registry), model(registry), monitor(registry), dose(registry), publish(registry), stages(registry) {}
  IntakeMetrics intake;
  ModelMetrics model;
  MonitorMetrics monitor;
  DoseMetrics dose;
  PublishMetrics publish;
  StageMetrics stages;
};

/// The groups the flow graph counts in (it rejects frames that fail in a stage: intake's stage_error).
struct PipelineMetrics {
  PipelineMetrics(ServiceMetrics& m)  // NOLINT: implicit, the service hands over its groups
      : intake(m.intake), model(m.model), monitor(m.monitor), dose(m.dose), stages(m.stages) {}
  IntakeMetrics& intake;
  ModelMetrics& model;
  MonitorMetrics& monitor;
  DoseMetrics& dose;
  StageMetrics& stages;
};

inline constexpr std::array<const char*, 4> kDriftKinds = {"energy", "subspace", "statistics", "new_phase"};

/// Topics the service publishes; their counters exist from the start (so dashboards show zeros).
inline constexpr std::array<const char*, 10> kTopics = {"denoised", "snapshot", "status", "model", "residual_map",
                                                        "novelty", "drift", "dose", "advice", "damage"};

}  // namespace specwatch::server
