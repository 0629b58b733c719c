#pragma once
/// The flow graph's adapter around the dose ledger (operators/dose/dose_ledger.hpp) and the acquisition advisor
/// (operators/dose/acquisition_advisor.hpp): accounts every frame's dose, publishes budget alarms and the dose map of
/// each scan pass (topic "dose"), the advice per tile (topic "advice": at each pass end, and when it changes at
/// most every advice.min_interval_s), beam damage (operators/dose/damage_tracker.hpp, topic "damage": a warning once per
/// series, then the critical-dose fit at each pass end; damaged positions make their tiles "skip"), and exports
/// the dose and damage metrics.
///
/// Budgets come from the configuration (dose section, --dose-budget); a control client may set others
/// (RequestBudget): in force from the next frame, for the current series and the later ones, until set again (a
/// restart returns to the configured ones). A microscope script sets the budget of each series before starting it.
///
/// Concurrency, by method:
///   StartSeries, Observe, PublishMap   the in_order node (one thread, frame order)
///   RequestBudget, Snapshot, LatestAdvice   any thread (a mutex)

#include "operators/dose/acquisition_advisor.hpp"
#include "operators/dose/damage_tracker.hpp"
#include "operators/dose/dose_ledger.hpp"
#include "server/output_queue.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "stream/frame_decoder.hpp"

#include <spdlog/logger.h>

#include "results.pb.h"

#include <memory>
#include <span>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace specwatch::server {

/// Dose state for the status message.
struct DoseSnapshot {
  double run_dose_e_per_A2 = 0.0;
  double max_position_dose_e_per_A2 = 0.0;
  DoseBudget budget;
};

class DoseStage {
 public:
  DoseStage(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
            std::shared_ptr<spdlog::logger> log);

  /// in_order: a series starts (announced or inferred): dose forgotten; the budget in force carries over.
  void StartSeries(const stream::SeriesInfo& series);
  /// in_order: accounts one frame (`novel`: per spectrum 1 = flagged novel, or empty); publishes the alarms it
  /// raised, and the advice when it changed and min_interval_s has passed.
  void Observe(const SpectrumBatch& b, std::span<const uint8_t> novel);
  /// in_order: publishes the dose map after scan pass `pass` (when its residual map is published). A pass closed
  /// by the first frame of the next one ("next_pass") is mapped without that frame's dose, which Observe has
  /// already counted.
  void PublishMap(uint32_t pass, const std::string& closed_by, const std::string& series_id);

  /// Any thread: the budget from the next frame on (validated by the caller).
  void RequestBudget(const DoseBudget& budget);
  DoseSnapshot Snapshot() const;
  /// The advice last computed (empty before any: no scan shape yet).
  std::shared_ptr<const wire::AcquisitionAdvice> LatestAdvice() const;
  const DoseLedger& ledger() const { return ledger_; }  ///< in_order node only

 private:
  void PublishAlarms(const std::vector<DoseAlarm>& alarms, uint64_t frame_number, double time_s);
  void PublishDamage(const DamageReport& r, uint64_t frame_number, double time_s);
  void UpdateGauges();
  /// Computes the advice; publishes it when `force` or when its codes changed since the last published one.
  void Advise(const std::string& trigger, uint32_t pass, bool force);

  const ServiceOptions& options_;
  ServiceMetrics& metrics_;
  OutputQueue& out_;
  std::shared_ptr<spdlog::logger> log_;

  // in_order node only.
  DoseLedger ledger_;
  AcquisitionAdvisor advisor_;
  DamageTracker damage_;
  uint64_t last_frame_number_ = 0;
  double last_time_s_ = 0.0;
  std::string last_codes_;     // of the last published advice
  uint64_t advice_version_ = 0;
  double next_advice_s_ = 0.0; // steady clock
  std::string series_id_;
  EnergyAxis axis_;
  std::vector<DoseAlarm> alarms_;  // workspace
  std::vector<ScanPosition> last_positions_;  // the last frame's, and the dose each of its spectra received
  double last_dose_ = 0.0;
  uint64_t last_spectra_ = 0;

  mutable std::mutex mutex_;
  std::optional<DoseBudget> requested_;  // not yet applied
  DoseBudget budget_;                     // in force (in_order node)
  DoseSnapshot snapshot_;
  std::shared_ptr<const wire::AcquisitionAdvice> latest_advice_;
};

}  // namespace specwatch::server
