#pragma once
/// The flow graph's adapter around OperandoMonitor (operators/monitor/operando_monitor.hpp) and SubspaceDriftTracker:
/// runs them on each denoised frame, publishes what they find (topics "novelty" and "drift"), counts it in the
/// metrics, and tells the model update what to learn and when to shift.
///
/// Concurrency, by method:
///   Observe, StartSeries, CloseSeries    the in_order node (one thread, frame order)
///   AfterModelUpdate, TakeSubspaceReference, ModelShifted, ModelReset   the model_update node
///   RequestRecalibrate, RequestModelReset, Snapshot   any thread (they only set or read atomics / a mutex)

#include "operators/monitor/operando_monitor.hpp"
#include "operators/monitor/subspace_drift.hpp"
#include "server/output_queue.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "stream/frame_decoder.hpp"

#include <spdlog/logger.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace specwatch::server {

struct DenoisedItem;

/// Acquisition times of recent frames by the series index of their first spectrum, so that an onset reported as
/// a spectrum index can be given as a time. Keeps the last `capacity` frames; in_order or model_update only.
class FrameTimes {
 public:
  explicit FrameTimes(size_t capacity) : capacity_(capacity) {}
  void Add(uint64_t first_spectrum, double time_s);
  /// The time of the frame holding `spectrum` (the latest frame starting at or before it); the oldest kept when
  /// it is older; 0 when nothing is kept.
  double TimeOf(uint64_t spectrum) const;
  void Clear() { frames_.clear(); }

 private:
  size_t capacity_;
  std::deque<std::pair<uint64_t, double>> frames_;
};

/// What the model update is to do with a frame, decided in order by the monitor.
struct LearnDecision {
  std::shared_ptr<const std::vector<uint8_t>> learn;  ///< per spectrum, 1 = learn; null = learn all
  uint32_t excluded = 0;                               ///< spectra not to learn
  std::shared_ptr<const std::vector<uint8_t>> novel;  ///< per spectrum, 1 = flagged novel; null = none
  double shift_model_channels = 0.0;                   ///< energy correction to apply first; 0 = none
  bool take_subspace_reference = false;                ///< after learning this frame
  bool drop_subspace_reference = false;                ///< a new phase: no subspace checks until the next reference
  uint64_t series_spectrum = 0;     ///< index in its series of the frame's first spectrum (the monitor's count)
  double acquisition_time_s = 0.0;  ///< the frame's
  uint64_t frame_number = 0;
};

/// Monitor state for the status message and the control socket.
struct MonitorSnapshot {
  std::string novelty_state = "off";
  double novelty_threshold = 0.0;
  uint64_t novel_spectra = 0;
  double energy_shift_channels = 0.0;
  double subspace_angle_deg = 0.0;
};

class MonitorStage {
 public:
  MonitorStage(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
               std::shared_ptr<spdlog::logger> log);

  bool enabled() const { return enabled_; }

  /// in_order: a series starts (announced or inferred from a frame).
  void StartSeries(const stream::SeriesInfo& series);
  /// in_order: scores the frame, queues its events; returns what the model may learn from it.
  LearnDecision Observe(const DenoisedItem& p);

  /// model_update: the model after learning a frame (`decision` is the frame's, from Observe); checks the
  /// subspace every subspace_check_spectra learnt spectra.
  void AfterModelUpdate(const PcaModel& model, uint64_t spectra_learnt, const std::string& series_id,
                        const LearnDecision& decision);
  void TakeSubspaceReference(const PcaModel& model);
  /// The model was re-expressed (Poisson weight refresh): its basis turned without any physical change, so an
  /// existing reference is taken anew.
  void ModelReexpressed(const PcaModel& model) {
    if (subspace_reference_) TakeSubspaceReference(model);
  }
  void ModelReset();  ///< model_update: the subspace reference goes with the model
  void DropSubspaceReference() { ModelReset(); }  ///< model_update: no checks until the next reference

  /// Any thread: the next frame starts a new calibration (only on `reference` positions when given).
  void RequestRecalibrate(std::optional<ScanRect> reference);
  /// Any thread: the model was reset; the next frame recalibrates.
  void RequestModelReset() { model_reset_pending_.store(true); }
  MonitorSnapshot Snapshot() const;

 private:
  void ApplyPending(MonitorOutput* out);
  void Publish(const DenoisedItem& p, const MonitorOutput& out);
  void PublishCalibrations(const MonitorOutput& out, const std::string& series_id);
  void PublishDrift(const DriftReport& d, const std::string& series_id, uint64_t frame_number, double time_s,
                    double onset_time_s, uint64_t model_version, const EnergyAxis& axis,
                    const std::vector<double>& angles);
  void UpdateGauges();

  const ServiceOptions& options_;
  ServiceMetrics& metrics_;
  OutputQueue& out_;
  std::shared_ptr<spdlog::logger> log_;
  bool enabled_ = false;

  // in_order node only.
  std::unique_ptr<OperandoMonitor> monitor_;
  MonitorOutput output_;
  std::string series_id_;
  EnergyAxis axis_;
  FrameTimes frame_times_{1u << 16};  // acquisition time by series spectrum index, for onset times

  // model_update node only.
  SubspaceDriftTracker subspace_;
  bool subspace_reference_ = false;
  uint64_t learnt_since_check_ = 0;
  FrameTimes check_times_{64};  // of the subspace checks of the current series
  std::string check_series_;

  // Requests from other threads.
  std::atomic<bool> model_reset_pending_{false};
  mutable std::mutex request_mutex_;
  bool recalibrate_pending_ = false;
  std::optional<ScanRect> recalibrate_region_;

  mutable std::mutex snapshot_mutex_;
  MonitorSnapshot snapshot_;
};

}  // namespace specwatch::server
