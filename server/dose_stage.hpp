#pragma once
/// The flow graph's adapter around the dose ledger (operators/dose_ledger.hpp): accounts every frame's dose,
/// publishes budget alarms and the dose map of each scan pass (topic "dose"), and exports the dose metrics.
///
/// Budgets come from the configuration (dose section, --dose-budget); a control client may set others
/// (RequestBudget): in force from the next frame, for the current series and the later ones, until set again (a
/// restart returns to the configured ones). A microscope script sets the budget of each series before starting it.
///
/// Concurrency, by method:
///   StartSeries, Observe, PublishMap   the in_order node (one thread, frame order)
///   RequestBudget, Snapshot            any thread (a mutex)

#include "operators/dose_ledger.hpp"
#include "server/output_queue.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "stream/frame_decoder.hpp"

#include <spdlog/logger.h>

#include <memory>
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
  /// in_order: accounts one frame; publishes the alarms it raised.
  void Observe(const SpectrumBatch& b);
  /// in_order: publishes the dose map after scan pass `pass` (when its residual map is published). A pass closed
  /// by the first frame of the next one ("next_pass") is mapped without that frame's dose, which Observe has
  /// already counted.
  void PublishMap(uint32_t pass, const std::string& closed_by, const std::string& series_id);

  /// Any thread: the budget from the next frame on (validated by the caller).
  void RequestBudget(const DoseBudget& budget);
  DoseSnapshot Snapshot() const;
  const DoseLedger& ledger() const { return ledger_; }  ///< in_order node only

 private:
  void PublishAlarms(const std::vector<DoseAlarm>& alarms, uint64_t frame_number, double time_s);
  void UpdateGauges();

  const ServiceOptions& options_;
  ServiceMetrics& metrics_;
  OutputQueue& out_;
  std::shared_ptr<spdlog::logger> log_;

  // in_order node only.
  DoseLedger ledger_;
  std::string series_id_;
  std::vector<DoseAlarm> alarms_;  // workspace
  std::vector<ScanPosition> last_positions_;  // the last frame's, and the dose each of its spectra received
  double last_dose_ = 0.0;
  uint64_t last_spectra_ = 0;

  mutable std::mutex mutex_;
  std::optional<DoseBudget> requested_;  // not yet applied
  DoseBudget budget_;                     // in force (in_order node)
  DoseSnapshot snapshot_;
};

}  // namespace specwatch::server
