#pragma once
/// The science of one stream in one place: a Session owns everything stateful per series (the streaming model,
/// the novelty detector with its thresholds and regions, the energy, statistics and subspace drift trackers, the
/// dose ledger, the damage tracker, the advisor, the per-pass residual and dose maps) and turns decoded frames into
/// plain C++ results (operators/session/session_events.hpp). The service's flow graph, the acceptance tests and
/// specwatch-decompose drive this one class; none has a per-frame loop of its own.
///
/// A frame goes through three calls:
///   Score(batch)             const, any thread, many at once: projection, reconstruction and scores with the
///                            model installed now (read-only). The parallel part.
///   Consume(batch, scores)   one thread, in frame order: novelty, regions, drift, dose, damage, advice, pass
///                            maps. Returns the frame's events in publication order (DenoisedFrameEvent marks the
///                            frame's own message) and the ModelWork for the model.
///   Learn(work); Install()   one thread, in the order Consume made the work: energy correction, subspace
///                            reference and checks, learning the spectra the monitor let through. Learn computes;
///                            Install makes its model the one Score uses — call it after routing Learn's events,
///                            so that a model's snapshot (ModelVersionEvent) is published before any frame scored
///                            with it. Learn may lag Consume; a caller that cannot keep up may drop a frame's
///                            learning (ModelWork::learn = false) but must still pass the work on when
///                            HasMonitorOps().
/// StartSeries, EndSeries and CloseMaps are consume-side calls too. A frame of another series than the current
/// one (its start message missed) starts one from its header.
///
/// No clock, logger, metrics, protobuf or threads inside: the caller passes the time (now_s: a steady clock, for
/// the advice's rate limit), logs the Notice events, counts what the results say.
///
/// Thread safety: Score, Model, Status, LatestAdvice, SpectraLearnt and the Request*/SetFrozen calls from any
/// thread; the consume-side calls from one thread; Learn and Install from one thread (may be another).

#include "operators/core/poisson_weighting.hpp"
#include "operators/core/spectrum_batch.hpp"
#include "operators/dose/acquisition_advisor.hpp"
#include "operators/dose/damage_tracker.hpp"
#include "operators/dose/dose_ledger.hpp"
#include "operators/model/denoiser.hpp"
#include "operators/model/incremental_svd.hpp"
#include "operators/model/streaming_model.hpp"
#include "operators/monitor/operando_monitor.hpp"
#include "operators/monitor/residual_map.hpp"
#include "operators/monitor/subspace_drift.hpp"
#include "operators/session/session_events.hpp"

#include <atomic>
#include <cmath>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace specwatch {

/// Poisson weighting of the model (operators/core/poisson_weighting.hpp). kAuto: for integer payloads only.
enum class Weighting { kAuto, kPoisson, kNone };

/// Everything the science is configured with (the service's options add sockets, threads and logging).
struct SessionOptions {
  /// Ranked automatically (Gavish–Donoho within [rank_min, rank]) unless told otherwise: spare components of a
  /// fixed rank fit noise and absorb any rare spectrum that slips into the model.
  SubspaceOptions pca = [] {
    SubspaceOptions o;
    o.auto_rank = true;
    return o;
  }();
  Weighting weighting = Weighting::kAuto;
  WeightingOptions weighting_options;  ///< .enabled is decided per model from `weighting` and the payload
  bool reset_model_on_new_series = false;
  uint32_t warmup_spectra = 256;       ///< spectra learnt before the model denoises
  MonitorOptions monitor;              ///< novelty, energy drift, CUSUM
  bool subspace_drift_enabled = true;
  SubspaceDriftOptions subspace_drift;
  uint32_t subspace_check_spectra = 1024;  ///< spectra learnt between two subspace checks
  DoseBudget dose_budget;              ///< until RequestDoseBudget sets another
  AdviceOptions advice;
  DamageOptions damage;

  /// Throws ConfigError naming the field by its path here ("monitor.guard.sigma").
  void Validate() const;
  /// Novelty, energy, statistics or subspace tracking is on.
  bool Monitoring() const {
    return monitor.novelty || monitor.energy || monitor.statistics || subspace_drift_enabled;
  }
};

/// What the learn side is to do, in order.
struct ModelWork {
  enum class Kind { kFrame, kReset, kSeriesEnd };
  Kind kind = Kind::kFrame;
  std::string series_id;
  BatchPtr batch;                 ///< kFrame
  bool learn = true;              ///< kFrame: learn its spectra (false: only the monitor's instructions)
  std::shared_ptr<const std::vector<uint8_t>> learn_mask;  ///< per spectrum 1 = learn; null = all
  uint32_t excluded = 0;          ///< spectra the mask leaves out
  double shift_model_channels = 0.0;     ///< energy correction, applied first; 0 = none
  bool take_subspace_reference = false;  ///< the thresholds were just learnt
  bool drop_subspace_reference = false;  ///< a new phase: no subspace checks until the next reference
  uint64_t series_spectrum = 0;   ///< index in its series of the frame's first spectrum
  double acquisition_time_s = 0.0;
  uint64_t frame_number = 0;

  bool HasMonitorOps() const {
    return shift_model_channels != 0.0 || take_subspace_reference || drop_subspace_reference;
  }
  uint64_t Spectra() const { return batch ? static_cast<uint64_t>(batch->Spectra()) : 0; }
};

/// What a consume-side call produced.
struct SessionStep {
  std::vector<SeriesEvent> events;      ///< in publication order
  std::vector<ModelWork> model_work;    ///< for Learn, in this order
  uint64_t novel_spectra = 0;           ///< flagged by this frame
  std::shared_ptr<const std::vector<uint8_t>> novel;  ///< Consume: per spectrum 1 = flagged novel; null = none
  uint64_t model_spectra_skipped = 0;   ///< not offered to the model (frozen)
};

/// What Learn produced; Install it after routing the events.
struct ModelStep {
  std::vector<SeriesEvent> events;            ///< model versions, rank changes, subspace drift, snapshot due
  std::shared_ptr<const PcaModel> model;      ///< the model to install; null: unchanged
  bool learned = false;                       ///< an update ran (its cost counts against a CPU budget)
  uint64_t spectra_learnt = 0;                ///< spectra the model learnt
  uint64_t spectra_excluded = 0;              ///< left out by the monitor (novel, held out)
  uint64_t spectra_skipped = 0;               ///< not learnt: frozen, or no model fits their channel count
  uint64_t weight_refreshes = 0;
  uint64_t frame_spectra = 0;                 ///< counted as seen by the model once installed (warm-up)
};

/// The state a status message or a dashboard shows (a copy).
struct SessionStatus {
  std::string novelty_state = "off";  ///< "off", "waiting", "calibrating", "monitoring", "absorbing"
  double novelty_threshold = 0.0;     ///< on deviance_z, in force: fitted, or provisional while calibrating; 0: none
  double hotelling_threshold = 0.0;   ///< on Hotelling T²; 0 while not monitoring or off
  uint64_t novel_spectra = 0;
  double energy_shift_channels = 0.0;
  double energy_shift_axis_units = 0.0;  ///< eV for axes in eV or keV; other axes in their own unit
  double subspace_angle_deg = 0.0;
  double run_dose_e_per_A2 = 0.0;
  double max_position_dose_e_per_A2 = 0.0;
  double dose_rate_e_per_A2_per_s = 0.0;
  uint64_t positions_over_warning = 0;
  uint64_t positions_over_limit = 0;
  DoseBudget budget;
  double damage_critical_dose_e_per_A2 = 0.0;  ///< 0: none yet
  uint64_t damage_affected_positions = 0;
};

/// Acquisition times of recent frames by the series index of their first spectrum, so that an onset reported as a
/// spectrum index can be given as a time. Keeps the last `capacity` frames.
class FrameTimes {
 public:
  explicit FrameTimes(size_t capacity) : capacity_(capacity) {}
  void Add(uint64_t first_spectrum, double time_s);
  /// The time of the frame holding `spectrum` (the latest starting at or before it); the oldest kept when it is
  /// older; 0 when nothing is kept.
  double TimeOf(uint64_t spectrum) const;
  void Clear() { frames_.clear(); }

 private:
  size_t capacity_;
  std::deque<std::pair<uint64_t, double>> frames_;
};

class Session {
 public:
  /// `initial_model` (optional): denoising and learning start from it, warm (no warm-up). Throws ConfigError for
  /// invalid options.
  explicit Session(SessionOptions options, std::shared_ptr<const PcaModel> initial_model = nullptr);

  const SessionOptions& options() const { return options_; }

  // --- any thread ---
  FrameScoresPtr Score(const SpectrumBatch& batch) const;
  /// The model Score uses (never null; empty before learning starts).
  std::shared_ptr<const PcaModel> Model() const {
    std::lock_guard lock(model_mutex_);
    return model_;
  }
  SessionStatus Status() const;
  /// The advice last computed (null before any: no scan shape yet).
  std::shared_ptr<const AdviceEvent> LatestAdvice() const;
  /// Forget the model: the monitor recalibrates from the next frame; route the returned work to Learn.
  ModelWork RequestReset();
  /// Learn the novelty thresholds anew from the next nominal spectra (of `reference` positions when given).
  /// False when novelty detection is off.
  bool RequestRecalibrate(std::optional<ScanRect> reference);
  /// A dose budget from the next frame on, for this series and the later ones (validated by the caller).
  void RequestDoseBudget(const DoseBudget& budget);
  void SetFrozen(bool frozen) { frozen_.store(frozen); }
  bool frozen() const { return frozen_.load(); }
  /// Spectra the model has seen since it was (re)started.
  uint64_t SpectraLearnt() const { return learnt_since_reset_.load(); }

  // --- consume side: one thread, in order ---
  /// Inspection for tests and offline tools, on the consume thread: the monitor (null when no monitoring is on)
  /// and the damage tracker.
  const OperandoMonitor* monitor() const { return monitor_.get(); }
  const DamageTracker& damage_tracker() const { return damage_; }
  /// `now_s` (steady, like Consume's): the time of the call, for the advice a closed pass emits; NaN = the last
  /// Consume's. Likewise for EndSeries and CloseMaps.
  SessionStep StartSeries(const SeriesInfo& series, double now_s = std::numeric_limits<double>::quiet_NaN());
  SessionStep Consume(const BatchPtr& batch, const FrameScoresPtr& scores, double now_s);
  /// Closes the series' pass map; its ModelWork flushes the model and makes the series-end snapshot due.
  SessionStep EndSeries(const SeriesEndInfo& end, double now_s = std::numeric_limits<double>::quiet_NaN());
  /// Closes the open pass map, marked closed by `reason` ("shutdown").
  SessionStep CloseMaps(const std::string& reason, double now_s = std::numeric_limits<double>::quiet_NaN());

  // --- learn side: one thread, in order ---
  ModelStep Learn(const ModelWork& work);
  void Install(const ModelStep& step);

 private:
  // Consume side.
  void BeginSeries(const SeriesInfo& series, SessionStep* step);
  void MonitorStart(const SeriesInfo& series, SessionStep* step);
  void MonitorFrame(const SpectrumBatch& b, const FrameScores& s, ModelWork* work, SessionStep* step);
  void EmitCalibrations(const MonitorOutput& out, SessionStep* step);
  void EmitRegions(const MonitorOutput& out, SessionStep* step);
  /// Offers the frame's spectra not flagged live to the retrospective buffer (retrospective_buffer.hpp).
  void KeepCandidates(const SpectrumBatch& b, const FrameScores& s);
  /// At the end of `map`'s pass: its candidates scored again with the model now; novel ones published as
  /// retrospective novelty events (and their regions), the map's values and novel count updated.
  void ScoreRetrospectively(PassMap* map, SessionStep* step);
  /// A novelty event for `hit` (its spectra: raw and reconstruction columns), with the thresholds in force.
  NoveltyEvent MakeNoveltyEvent(const NoveltyHit& hit, uint64_t frame_number, double acquisition_time_s,
                                const EnergyAxis& axis, const Eigen::Ref<const Eigen::VectorXf>& raw,
                                const Eigen::Ref<const Eigen::VectorXf>& reconstruction, double deviance_threshold,
                                double hotelling_threshold, uint32_t rank, uint64_t model_version,
                                SessionStep* step);
  void DoseStart(const SeriesInfo& series);
  void DoseFrame(const SpectrumBatch& b, std::span<const uint8_t> novel, double now_s, SessionStep* step);
  void EmitDamage(const DamageReport& r, uint64_t frame_number, double time_s, SessionStep* step);
  void EmitAdvice(AdviceTrigger trigger, uint32_t pass, bool force, double now_s, SessionStep* step);
  void EmitDoseMap(uint32_t pass, const std::string& closed_by, const std::string& series_id, SessionStep* step);
  void MapResiduals(const SpectrumBatch& b, const FrameScores& s, const std::vector<uint8_t>* novel,
                    SessionStep* step);
  void EmitPassEnd(std::optional<PassMap> map, SessionStep* step);
  void UpdateStatus();
  void Note(SessionStep* step, Notice::Level level, std::string text);
  // Learn side.
  void ApplyMonitorOps(const ModelWork& work, ModelStep* step);
  void LearnFrame(const ModelWork& work, ModelStep* step);
  void NewVersion(std::shared_ptr<const PcaModel> model, const std::string& series_id, ModelStep* step);
  void CheckSubspace(const ModelWork& work, uint64_t spectra_learnt, ModelStep* step);
  void TakeSubspaceReference(const PcaModel& model);
  void ResetSubspace();
  void LearnNote(ModelStep* step, const std::string& series_id, Notice::Level level, std::string text);

  const SessionOptions options_;

  // Shared.
  mutable std::mutex model_mutex_;  // held for a pointer copy only
  std::shared_ptr<const PcaModel> model_;
  std::atomic<bool> frozen_{false};
  std::atomic<uint64_t> learnt_since_reset_{0};
  std::atomic<bool> restored_{false};  // the model came from initial_model: warm without warmup_spectra
  std::atomic<bool> monitor_reset_pending_{false};
  mutable std::mutex request_mutex_;
  bool recalibrate_pending_ = false;
  std::optional<ScanRect> recalibrate_region_;
  std::optional<DoseBudget> requested_budget_;
  mutable std::mutex status_mutex_;
  SessionStatus status_;
  double subspace_angle_deg_ = 0.0;  // under status_mutex_ (learn side writes it)
  std::shared_ptr<const AdviceEvent> latest_advice_;

  // Consume side: the series.
  bool series_open_ = false;
  SeriesInfo series_;
  // ... the monitor.
  std::unique_ptr<OperandoMonitor> monitor_;  // null when no monitoring is on
  MonitorOutput monitor_out_;
  MonitorOutput retrospective_out_;
  RetrospectiveBuffer retrospective_;  // candidates of the open pass(es), scored again at each pass end
  bool unranked_scored_ = false;       // it holds candidates scored before the guard's standardisation existed
  FrameTimes frame_times_{1u << 16};
  // ... the dose ledger, advisor and damage tracker.
  DoseLedger ledger_;
  AcquisitionAdvisor advisor_;
  DamageTracker damage_;
  DoseBudget budget_;
  std::vector<DoseAlarm> alarms_;
  uint64_t last_frame_number_ = 0;
  double last_time_s_ = 0.0;
  std::string last_codes_;  // of the last emitted advice
  uint64_t advice_version_ = 0;
  double next_advice_s_ = 0.0;
  double now_s_ = 0.0;  // of the latest Consume
  std::vector<ScanPosition> last_positions_;  // the last frame's, and the dose each of its spectra received
  double last_dose_ = 0.0;
  uint64_t last_spectra_ = 0;
  double damage_critical_dose_ = 0.0;
  uint64_t damage_affected_ = 0;
  // ... the residual maps.
  ResidualMapper residual_maps_;
  std::string map_series_;
  bool warned_no_scan_shape_ = false;

  // Learn side.
  std::unique_ptr<StreamingModel> learner_;
  std::shared_ptr<const PcaModel> current_;  // the last model Learn produced (installed or about to be)
  Eigen::MatrixXf learn_columns_;
  int unusable_channels_ = -1;
  SubspaceDriftTracker subspace_;
  bool subspace_reference_ = false;
  uint64_t learnt_since_check_ = 0;
  FrameTimes check_times_{64};
  std::string check_series_;
};

}  // namespace specwatch
