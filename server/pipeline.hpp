#pragma once
/// The oneTBB flow graph between the receiver thread and the publisher thread. It routes; the science is the
/// Session's (operators/session/session.hpp), the messages are the ResultCodec's (stream/result_codec.hpp).
///
///   Submit ─▶ score     function_node, unlimited: Session::Score + the frame's denoised message (parallel)
///          ─▶ order     sequencer_node: receive order restored
///          ─▶ session   multifunction_node, serial: Session::StartSeries / Consume / EndSeries
///                 port 0 ─▶ encode   function_node, serial: events -> messages -> OutputQueue (publisher)
///                 port 1 ─▶ learn    multifunction_node, serial: Session::Learn, then Install
///                                port 0 ─▶ encode
/// (Nodes::Nodes declares these edges; docs/architecture.md walks a frame through them.)
///
/// At most `max_frames_in_flight` work items are inside at once: Submit blocks for a slot, and a slot is freed when
/// the item's last message has been published and its model update (if any) has run. Under `model_updates:
/// when_idle` a frame is offered to the model only if no update is queued or running and the update's CPU budget
/// allows, so a stream faster than the update is still denoised in full while the model learns from a subsample.
///
/// Failure: an exception escaping a node body is caught at the node, counted (specwatch_stage_errors_total{stage}),
/// logged with the frame number, and the frame is rejected (reason stage_error) unless it was already published
/// (a failed model update: its spectra count as not learnt). The graph keeps running. Configuration errors cannot
/// happen here: options were validated at start.
///
/// Concurrency: Submit, Drain and CloseResidualMap from the receiver thread only; the rest from any thread.

#include "operators/session/session.hpp"
#include "server/clock.hpp"
#include "server/output_queue.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "stream/frame_decoder.hpp"
#include "stream/result_codec.hpp"

#include <spdlog/logger.h>
#include <tbb/flow_graph.h>
#include <tbb/task_arena.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <semaphore>

namespace specwatch::server {

struct WorkItem {
  enum class Kind { kFrame, kSeriesStart, kSeriesEnd };
  Kind kind = Kind::kFrame;
  uint64_t index = 0;                ///< position in the graph's order; Submit assigns it
  BatchPtr batch;                    ///< kFrame
  stream::SeriesInfo series;         ///< kSeriesStart
  stream::SeriesEndInfo series_end;  ///< kSeriesEnd
  InFlightToken token;
};

/// Tests only: called at the start of a stage's work on a frame (score, session, learn, encode), with the frame's
/// number; what it throws is what that stage's body threw. The service passes none.
using StageFaultForTests = std::function<void(Stage stage, uint64_t frame_number)>;

/// Worker threads the flow graph uses: options.compute_threads, or one per core when 0.
int ComputeThreads(const ServiceOptions& options);

class Pipeline {
 public:
  /// `initial_model` (optional, checked by LoadInitialModel): the model denoising and learning start from;
  /// it counts as warmed up.
  Pipeline(const ServiceOptions& options, PipelineMetrics metrics, OutputQueue& out,
           std::shared_ptr<spdlog::logger> log, const Clock& clock,
           std::shared_ptr<const PcaModel> initial_model = nullptr, StageFaultForTests fault = {});
  ~Pipeline();  ///< drains the graph

  /// Blocks until a slot is free, then puts the item into the graph.
  void Submit(WorkItem item);
  /// Waits until every submitted item has been processed and handed to the publisher.
  void Drain();

  /// The model denoising currently uses (never null; empty before learning starts).
  std::shared_ptr<const PcaModel> Model() const { return session_.Model(); }
  /// Forget the model; takes effect in order on the learn node, before the next frame's update.
  void RequestReset();
  bool RequestRecalibrate(std::optional<ScanRect> reference) { return session_.RequestRecalibrate(reference); }
  /// A dose budget for the current series from the next frame (validated by the caller).
  void RequestDoseBudget(const DoseBudget& budget) { session_.RequestDoseBudget(budget); }
  SessionStatus SessionState() const { return session_.Status(); }
  std::shared_ptr<const AdviceEvent> LatestAdvice() const { return session_.LatestAdvice(); }
  void SetFrozen(bool frozen) { session_.SetFrozen(frozen); }
  bool frozen() const { return session_.frozen(); }
  uint32_t InFlight() const { return slots_->in_flight.load(); }
  uint64_t SpectraLearnt() const { return session_.SpectraLearnt(); }
  /// Hands the open scan pass's residual and dose maps to the publisher, marked closed by `reason` ("shutdown").
  /// Only once the graph is drained (after Drain), from the receiver thread.
  void CloseResidualMap(const std::string& reason);

 private:
  /// A work item after the score stage.
  struct Scored {
    WorkItem item;
    FrameScoresPtr scores;                   ///< kFrame
    stream::EncodedMessage denoised;         ///< kFrame: the frame's own message
    std::string error;                       ///< the score stage failed: why
  };
  using ScoredPtr = std::shared_ptr<Scored>;
  /// Events on their way to the encode node, with the frame they came from (for its denoised message).
  struct EncodeItem {
    std::vector<SeriesEvent> events;
    ScoredPtr frame;  ///< null for events of no frame (series markers, the learn stage)
    InFlightToken token;
  };
  struct LearnItem {
    ModelWork work;
    bool counted_pending = false;  ///< counted in pending_updates_
    InFlightToken token;
  };
  struct Nodes;

  ScoredPtr ScoreBody(WorkItem item) const;
  void SessionBody(const ScoredPtr& s, EncodeItem* encode, std::vector<LearnItem>* learn);
  /// Learns; hands the step's events to `emit` (the node's port), then installs the step's model.
  void LearnBody(const LearnItem& l, const std::function<void(EncodeItem&&)>& emit);
  void EncodeBody(const EncodeItem& e);
  /// The frame is not published: counted as rejected (stage_error), with the stage's error and a log line.
  void RejectFrame(Stage stage, const SpectrumBatch& batch, const std::string& what);
  void StageFailed(Stage stage, const std::string& where, const std::string& what);
  /// The session status as gauges: the session stage writes its own, the learn stage the subspace angle.
  void UpdateGauges(Stage stage);

  const ServiceOptions& options_;
  PipelineMetrics metrics_;
  OutputQueue& out_;
  std::shared_ptr<spdlog::logger> log_;
  const Clock& clock_;
  Session session_;
  const stream::ResultCodec codec_;
  const StageFaultForTests fault_;
  void Fault(Stage stage, uint64_t frame_number) const {
    if (fault_) fault_(stage, frame_number);
  }

  /// Shared with every token, so a token outliving the pipeline (say, in a queue) stays safe.
  struct Slots {
    explicit Slots(uint32_t n, prometheus::Gauge& g) : free(static_cast<std::ptrdiff_t>(n)), gauge(g) {}
    std::counting_semaphore<4096> free;
    std::atomic<uint32_t> in_flight{0};
    prometheus::Gauge& gauge;
  };
  std::shared_ptr<Slots> slots_;
  uint64_t next_index_ = 0;

  std::atomic<uint32_t> pending_updates_{0};
  // Model-update CPU budget (when_idle): the next frame is offered no earlier than this steady time.
  std::atomic<double> next_offer_s_{0.0};

  // The graph lives in its own arena with `compute_threads` worker slots and none reserved for the
  // receiver thread, which only puts frames in: otherwise, on 2 cores, one worker would do all the work.
  tbb::task_arena arena_;
  std::unique_ptr<Nodes> nodes_;
};

}  // namespace specwatch::server
