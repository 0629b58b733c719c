#pragma once
/// The oneTBB flow graph between the receiver thread and the publisher thread.
///
///   Submit ─▶ denoise (function_node, unlimited: stateless, parallel)
///           ─▶ sequencer_node (restores receive order)
///           ─▶ in_order (function_node, serial: series bookkeeping, hands messages to the publisher)
///           ─▶ model_update (function_node, serial, queueing: IncrementalSvd::Add in frame order; at a
///              series end it flushes the model and then asks for the series-end snapshot)
///
/// At most `max_frames_in_flight` work items are inside at once: Submit blocks for a slot, and a slot is
/// freed when the item's last message has been published and its model update (if any) has run. Under
/// `model_updates: when_idle` a frame is offered to the model only if no update is queued or running, so a
/// stream faster than the update is still denoised in full while the model learns from a subsample.
///
/// Concurrency: Submit and Drain from the receiver thread only; Model, RequestReset, SetFrozen, InFlight from
/// any thread.

#include "operators/denoiser.hpp"
#include "operators/incremental_svd.hpp"
#include "server/output_queue.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "stream/frame_decoder.hpp"

#include <spdlog/logger.h>
#include <tbb/flow_graph.h>

#include <atomic>
#include <memory>
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
};

/// What the serial model-update stage receives, in frame order.
struct ModelUpdateItem {
  enum class Op { kLearn, kReset, kSeriesEnd };
  Op op = Op::kLearn;
  std::shared_ptr<DenoisedItem> processed;  ///< kLearn: the frame; kSeriesEnd: the end marker
  bool counted_pending = false;             ///< it was counted in the pending updates
};

class Pipeline {
 public:
  Pipeline(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
           std::shared_ptr<spdlog::logger> log);
  ~Pipeline();  ///< drains the graph

  /// Blocks until a slot is free, then puts the item into the graph.
  void Submit(WorkItem item);
  /// Waits until every submitted item has been processed and handed to the publisher.
  void Drain();

  /// The model denoising currently uses (never null; empty before learning starts).
  std::shared_ptr<const PcaModel> Model() const { return model_.load(std::memory_order_acquire); }
  /// Forget the model; takes effect in order, before the next frame's update.
  void RequestReset();
  void SetFrozen(bool frozen) { frozen_.store(frozen); }
  bool frozen() const { return frozen_.load(); }
  uint32_t InFlight() const { return slots_->in_flight.load(); }
  uint64_t SpectraLearnt() const { return learnt_since_reset_.load(); }

 private:
  using Processed = DenoisedItem;
  using ProcessedPtr = std::shared_ptr<DenoisedItem>;
  using UpdateItem = ModelUpdateItem;

  ProcessedPtr DenoiseItem(WorkItem item) const;
  void InOrder(const ProcessedPtr& p);
  void ModelUpdate(const UpdateItem& u);

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

  std::atomic<std::shared_ptr<const PcaModel>> model_;
  std::atomic<bool> frozen_{false};
  std::atomic<uint32_t> pending_updates_{0};
  std::atomic<uint64_t> learnt_since_reset_{0};
  std::unique_ptr<IncrementalSvd> svd_;  // model_update node only
  int unusable_channels_ = -1;           // model_update node only: channel count the options cannot fit

  tbb::flow::graph graph_;
  tbb::flow::function_node<WorkItem, ProcessedPtr> denoise_;
  tbb::flow::sequencer_node<ProcessedPtr> order_;
  tbb::flow::function_node<ProcessedPtr, tbb::flow::continue_msg> in_order_;
  std::unique_ptr<tbb::flow::function_node<UpdateItem, tbb::flow::continue_msg>> model_update_;
};

}  // namespace specwatch::server
