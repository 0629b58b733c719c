#include "server/service_metrics.hpp"

namespace specwatch::server {
namespace {

prometheus::Counter& MakeCounter(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}
prometheus::Gauge& MakeGauge(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

IntakeMetrics::IntakeMetrics(prometheus::Registry& r)
    : frames_received(MakeCounter(r, "specwatch_frames_received_total", "Frame messages received")),
      spectra_received(MakeCounter(r, "specwatch_spectra_received_total",
                                   "Spectra declared by received frame headers")),
      frames_dropped(MakeCounter(r, "specwatch_frames_dropped_total",
                                 "Frames missing from the detector's numbering (lost before the service)")),
      sequence_gaps(MakeCounter(r, "specwatch_sequence_gaps_total", "Jumps in the detector's frame numbering")),
      series_started(MakeCounter(r, "specwatch_series_total", "Series started (announced or inferred)")),
      input_lag(prometheus::BuildHistogram()
                    .Name("specwatch_input_lag_seconds")
                    .Help("Receipt time minus the frame header's acquisition time (clocks must agree)")
                    .Register(r)
                    .Add({}, prometheus::Histogram::BucketBoundaries{1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3,
                                                                     1.0, 3.0, 10.0})) {
  auto& frames = prometheus::BuildCounter()
                     .Name("specwatch_frames_rejected_total")
                     .Help("Messages rejected, by reason")
                     .Register(r);
  auto& spectra = prometheus::BuildCounter()
                      .Name("specwatch_spectra_rejected_total")
                      .Help("Spectra in rejected frames (as declared by their header), by reason")
                      .Register(r);
  for (auto reason : stream::kAllRejectReasons) {
    frames_rejected_[reason] = &frames.Add({{"reason", stream::ReasonLabel(reason)}});
    spectra_rejected_[reason] = &spectra.Add({{"reason", stream::ReasonLabel(reason)}});
  }
}

ModelMetrics::ModelMetrics(prometheus::Registry& r)
    : model_spectra(MakeCounter(r, "specwatch_model_spectra_total", "Spectra the model learnt from")),
      model_spectra_skipped(MakeCounter(r, "specwatch_model_spectra_skipped_total",
                                        "Spectra denoised but not learnt from (update busy or frozen)")),
      model_rank(MakeGauge(r, "specwatch_model_rank", "Components used to denoise")),
      model_version(MakeGauge(r, "specwatch_model_version", "Model updates applied")),
      model_weight_refreshes(MakeCounter(r, "specwatch_model_weight_refreshes_total",
                                         "Poisson weights recomputed and the model re-expressed in them")),
      model_rank_changes(MakeCounter(r, "specwatch_model_rank_changes_total",
                                     "Times the rank changed between two model versions (topic model)")),
      model_spectra_excluded(MakeCounter(r, "specwatch_model_spectra_excluded_total",
                                         "Spectra flagged novel (or outliers while calibrating): never learnt")) {}

MonitorMetrics::MonitorMetrics(prometheus::Registry& r)
    : residual_map_outliers(MakeGauge(r, "specwatch_residual_map_outlier_positions",
                                      "Scan positions at or above median + 5 robust sigma in the last residual map")),
      novelty_spectra(MakeCounter(r, "specwatch_novelty_spectra_total", "Spectra flagged novel")),
      novelty_events(MakeCounter(r, "specwatch_novelty_events_total",
                                 "Novelty events published (the first spectrum of each new region)")),
      novelty_state(MakeGauge(r, "specwatch_novelty_calibration_state",
                              "Novelty detector: 0 off or waiting for a model, 1 calibrating, 2 monitoring, "
                              "3 absorbing a new phase")),
      novelty_threshold(MakeGauge(r, "specwatch_novelty_threshold",
                                  "Threshold on the standardised Poisson deviance (0 while not calibrated)")),
      energy_shift_channels(MakeGauge(r, "specwatch_energy_shift_channels",
                                      "Energy-axis shift of the current series, channels (corrections included)")),
      energy_shift_axis(MakeGauge(r, "specwatch_energy_shift_ev",
                                  "Energy-axis shift of the current series in eV (axes in eV or keV; other axes in "
                                  "their own unit)")),
      subspace_angle(MakeGauge(r, "specwatch_subspace_angle_degrees",
                               "Largest principal angle between the model and its reference basis")),
      drift_family_(prometheus::BuildCounter()
                        .Name("specwatch_drift_events_total")
                        .Help("Drift events published, by kind")
                        .Register(r)) {
  for (const char* kind : kDriftKinds) drift_events_[kind] = &drift_family_.Add({{"kind", kind}});
}

prometheus::Counter& MonitorMetrics::DriftEvents(const std::string& kind) {
  std::lock_guard lock(drift_mutex_);
  auto it = drift_events_.find(kind);
  if (it != drift_events_.end()) return *it->second;
  return *drift_events_.emplace(kind, &drift_family_.Add({{"kind", kind}})).first->second;
}

DoseMetrics::DoseMetrics(prometheus::Registry& r)
    : dose_run(MakeGauge(r, "specwatch_dose_run_e_per_A2",
                         "Run dose of the current series: the areal dose of every spectrum summed, e-/A^2")),
      dose_max_position(MakeGauge(r, "specwatch_dose_max_position_e_per_A2",
                                  "Largest accumulated dose of a scan position in the current series, e-/A^2")),
      dose_rate(MakeGauge(r, "specwatch_dose_rate_e_per_A2_per_s",
                          "Areal dose rate of the beam in the latest frame (I / (e A)), e-/A^2/s")),
      dose_positions_over_warning(MakeGauge(r, "specwatch_dose_positions_over_warning",
                                            "Scan positions at or beyond the warning fraction of the position budget")),
      dose_positions_over_limit(MakeGauge(r, "specwatch_dose_positions_over_limit",
                                          "Scan positions at or beyond the position budget")),
      damage_warnings(MakeCounter(r, "specwatch_damage_warnings_total",
                                  "Beam-damage warnings: spectra changing with the dose their position received")),
      damage_critical_dose(MakeGauge(r, "specwatch_damage_critical_dose_e_per_A2",
                                     "Current estimate of the critical dose D_c, e-/A^2 (0: none yet)")),
      damage_affected_positions(MakeGauge(r, "specwatch_damage_affected_positions",
                                          "Tracked scan positions whose spectra changed with dose")) {
  auto& dose_alarms = prometheus::BuildCounter()
                          .Name("specwatch_dose_alarms_total")
                          .Help("Dose budget alarms by level and scope (position alarms count positions)")
                          .Register(r);
  for (const char* level : {"warning", "limit"}) {
    for (const char* scope : {"position", "run"}) {
      dose_alarms_[{level, scope}] = &dose_alarms.Add({{"level", level}, {"scope", scope}});
    }
  }
}

prometheus::Counter& DoseMetrics::DoseAlarms(const std::string& level, const std::string& scope) {
  return *dose_alarms_.at({level, scope});
}

PublishMetrics::PublishMetrics(prometheus::Registry& r)
    : spectra_published(MakeCounter(r, "specwatch_spectra_published_total", "Spectra published denoised")),
      published_family_(prometheus::BuildCounter()
                            .Name("specwatch_published_messages_total")
                            .Help("Messages published, by topic")
                            .Register(r)) {
  for (const char* topic : kTopics) published_[topic] = &published_family_.Add({{"topic", topic}});
}

prometheus::Counter& PublishMetrics::Published(const std::string& topic) {
  auto it = published_.find(topic);
  if (it != published_.end()) return *it->second;
  // Only the publisher thread publishes, so adding here is single-threaded.
  return *published_.emplace(topic, &published_family_.Add({{"topic", topic}})).first->second;
}

StageMetrics::StageMetrics(prometheus::Registry& r)
    : frames_in_flight(MakeGauge(r, "specwatch_frames_in_flight", "Frames inside the flow graph")) {
  auto& latency = prometheus::BuildHistogram()
                      .Name("specwatch_stage_latency_seconds")
                      .Help("Time spent per stage; end_to_end is receipt to publish")
                      .Register(r);
  const prometheus::Histogram::BucketBoundaries buckets = {1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
                                                           2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0};
  auto& errors = prometheus::BuildCounter()
                     .Name("specwatch_stage_errors_total")
                     .Help("Exceptions caught at a stage of the flow graph (the frame is rejected: stage_error)")
                     .Register(r);
  auto& cpu = prometheus::BuildCounter()
                  .Name("specwatch_stage_cpu_seconds_total")
                  .Help("CPU seconds spent in a stage (thread CPU time of its bodies)")
                  .Register(r);
  for (size_t i = 0; i < kStageLabels.size(); ++i) {
    latency_[i] = &latency.Add({{"stage", kStageLabels[i]}}, buckets);
    stage_errors_[i] = &errors.Add({{"stage", kStageLabels[i]}});
    stage_cpu_[i] = &cpu.Add({{"stage", kStageLabels[i]}});
  }
}

}  // namespace specwatch::server
