#pragma once
/// The oneTBB flow graph between the receiver thread and the publisher thread.
///
///   Submit ─▶ denoise (function_node, unlimited: stateless, parallel)
///           ─▶ sequencer_node (restores receive order)
///           ─▶ in_order (function_node, serial: series bookkeeping, residual maps of scan passes, hands
///              messages to the publisher)
///           ─▶ model_update (function_node, serial, queueing: IncrementalSvd::Add in frame order; at a
///              series end it flushes the model and then asks for the series-end snapshot)
///
/// At most `max_frames_in_flight` work items are inside at once: Submit blocks for a slot, and a slot is
/// freed when the item's last message has been published and its model update (if any) has run. Under
/// `model_updates: when_idle` a frame is offered to the model only if no update is queued or running, so a
/// stream faster than the update is still denoised in full while the model learns from a subsample.
///
/// Model events: whenever the installed model's rank differs from the previous version's, a RankChange goes
/// to the publisher (topic "model"). Residual maps: in_order lays each spectrum's residual (standardised
/// Poisson deviance for weighted models, the residual norm in counts otherwise) out on the scan and hands a
/// ResidualMap to the publisher when a pass is complete, the next pass starts, or the series ends.
///
/// Concurrency: Submit, Drain and CloseResidualMap from the receiver thread only; Model, RequestReset,
/// SetFrozen, InFlight from any thread.

#include "operators/model/denoiser.hpp"
#include "operators/model/incremental_svd.hpp"
#include "operators/monitor/residual_map.hpp"
#include "operators/model/streaming_model.hpp"
#include "server/dose_stage.hpp"
#include "server/monitor_stage.hpp"
#include "server/output_queue.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "stream/frame_decoder.hpp"

#include <spdlog/logger.h>
#include <tbb/flow_graph.h>
#include <tbb/task_arena.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>

namespace specwatch::server {

struct WorkItem {
  enum class Kind { kFrame, kSeriesStart, kSeriesEnd };
  Kind kind = Kind::kFrame;
  uint64_t index = 0;                ///< position in the graph's order; Submit assigns it
  BatchPtr batch;                    ///< kFrame
  bool opens_series = false;         ///< kFrame: first frame of a series with no start message
  stream::SeriesInfo series;         ///< kSeriesStart, or kFrame with opens_series
  stream::SeriesEndInfo series_end;  ///< kSeriesEnd
  InFlightToken token;
};

/// A work item after the parallel stage.
struct DenoisedItem {
  WorkItem item;
  std::shared_ptr<DenoiseResult> result;     ///< kFrame
  std::shared_ptr<wire::Envelope> envelope;  ///< kFrame: the "denoised" message, built off the serial path
  bool model_used = false;                   ///< kFrame: denoised with a model (residuals are meaningful)
  bool weighted = false;                     ///< kFrame: ... a Poisson-weighted one (deviance_z is set)
  std::shared_ptr<Eigen::VectorXd> frame_sum; ///< kFrame, energy tracking on: counts summed over the spectra
  std::shared_ptr<const PcaModel> model;      ///< kFrame: the model it was denoised with (null: none)
  LearnDecision learn;                        ///< kFrame: set by in_order before the frame goes to the model
};

/// What the serial model-update stage receives, in frame order.
struct ModelUpdateItem {
  /// kMonitor: the monitor's instructions for the model (energy correction, subspace reference), never skipped.
  enum class Op { kLearn, kReset, kSeriesEnd, kMonitor };
  Op op = Op::kLearn;
  std::shared_ptr<DenoisedItem> processed;  ///< kLearn: the frame; kSeriesEnd: the end marker
  bool counted_pending = false;             ///< it was counted in the pending updates
};

/// Worker threads the flow graph uses: options.compute_threads, or one per core when 0.
int ComputeThreads(const ServiceOptions& options);

class Pipeline {
 public:
  /// `initial_model` (optional, checked by LoadInitialModel): the model denoising and learning start from;
  /// it counts as warmed up. Throws std::invalid_argument when it does not fit the options.
  Pipeline(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
           std::shared_ptr<spdlog::logger> log, std::shared_ptr<const PcaModel> initial_model = nullptr);
  ~Pipeline();  ///< drains the graph

  /// Blocks until a slot is free, then puts the item into the graph.
  void Submit(WorkItem item);
  /// Waits until every submitted item has been processed and handed to the publisher.
  void Drain();

  /// The model denoising currently uses (never null; empty before learning starts).
  std::shared_ptr<const PcaModel> Model() const {
    std::lock_guard lock(model_mutex_);
    return model_;
  }
  /// Forget the model; takes effect in order, before the next frame's update.
  void RequestReset();
  /// Learn the novelty thresholds anew from the next nominal spectra (of `reference` positions when given).
  /// False when novelty detection is off.
  bool RequestRecalibrate(std::optional<ScanRect> reference);
  MonitorSnapshot MonitorState() const { return monitor_.Snapshot(); }
  /// A dose budget for the current series from the next frame (validated by the caller).
  void RequestDoseBudget(const DoseBudget& budget) { dose_.RequestBudget(budget); }
  DoseSnapshot DoseState() const { return dose_.Snapshot(); }
  std::shared_ptr<const wire::AcquisitionAdvice> LatestAdvice() const { return dose_.LatestAdvice(); }
  void SetFrozen(bool frozen) { frozen_.store(frozen); }
  bool frozen() const { return frozen_.load(); }
  uint32_t InFlight() const { return slots_->in_flight.load(); }
  uint64_t SpectraLearnt() const { return learnt_since_reset_.load(); }
  /// Hands the open scan pass's residual map to the publisher, marked closed by `reason` ("shutdown").
  /// Only once the graph is drained (after Drain), from the receiver thread.
  void CloseResidualMap(const std::string& reason);

 private:
  using Processed = DenoisedItem;
  using ProcessedPtr = std::shared_ptr<DenoisedItem>;
  using UpdateItem = ModelUpdateItem;

  ProcessedPtr DenoiseItem(WorkItem item) const;
  void InOrder(const ProcessedPtr& p);
  void ModelUpdate(const UpdateItem& u);
  /// Makes `model` the one denoising uses (model_update node only); under denoised_payload: scores, queues
  /// its snapshot first; queues a RankChange when its rank differs from the previous version's.
  void InstallModel(std::shared_ptr<const PcaModel> model, const std::string& series_id);
  void PublishRankChange(const PcaModel& before, const PcaModel& after, const std::string& series_id);
  /// in_order node: adds a frame's residuals to the scan-pass map; hands out the maps it finished.
  void MapResiduals(const Processed& p);
  void PublishResidualMap(std::optional<PassMap> map);
  /// model_update node: learns the frame's spectra the monitor let through.
  void Learn(const SpectrumBatch& b, const LearnDecision& decision);

  const ServiceOptions& options_;
  ServiceMetrics& metrics_;
  OutputQueue& out_;
  std::shared_ptr<spdlog::logger> log_;

  /// Shared with every token, so a token outliving the pipeline (say, in a queue) stays safe.
  struct Slots {
    explicit Slots(uint32_t n, prometheus::Gauge& g) : free(static_cast<std::ptrdiff_t>(n)), gauge(g) {}
    std::counting_semaphore<4096> free;
    std::atomic<uint32_t> in_flight{0};
    prometheus::Gauge& gauge;
  };
  std::shared_ptr<Slots> slots_;
  uint64_t next_index_ = 0;

  // A mutex, not std::atomic<std::shared_ptr>: GCC 12's atomic shared_ptr releases its lock with relaxed
  // ordering (ThreadSanitizer reports it). Held for a pointer copy only.
  mutable std::mutex model_mutex_;
  std::shared_ptr<const PcaModel> model_;
  void SetModel(std::shared_ptr<const PcaModel> m) {
    std::lock_guard lock(model_mutex_);
    model_ = std::move(m);
  }
  std::atomic<bool> frozen_{false};
  std::atomic<uint32_t> pending_updates_{0};
  std::atomic<uint64_t> learnt_since_reset_{0};
  std::atomic<bool> restored_{false};    // the model came from initial_model: warm without warmup_spectra
  std::unique_ptr<StreamingModel> learner_;  // model_update node only
  Eigen::MatrixXf learn_columns_;            // model_update node only: the learnt columns of a frame
  int unusable_channels_ = -1;           // model_update node only: channel count the options cannot fit

  // in_order node only (and CloseResidualMap once drained).
  MonitorStage monitor_;  // its own contract per method (server/monitor_stage.hpp)
  DoseStage dose_;        // likewise (server/dose_stage.hpp)
  ResidualMapper residual_maps_;
  std::string map_series_;               // series of the open pass
  bool warned_no_scan_shape_ = false;    // per series

  // The graph lives in its own arena with `compute_threads` worker slots and none reserved for the
  // receiver thread, which only puts frames in: otherwise, on 2 cores, one worker would do all the work.
  struct Nodes;
  tbb::task_arena arena_;
  std::unique_ptr<Nodes> nodes_;
  // Model-update CPU budget (when_idle): the next frame is offered no earlier than this steady time.
  std::atomic<double> next_offer_s_{0.0};
};

}  // namespace specwatch::server
