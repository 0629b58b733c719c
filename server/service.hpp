#pragma once
/// The specwatch service: owns the sockets and the threads around the flow graph.
///
///   receiver thread   frames socket (SUB/PULL) -> FrameDecoder -> counts -> Pipeline::Submit
///   TBB workers       the flow graph (server/pipeline.hpp)
///   publisher thread  OutputQueue -> PUB socket; periodic status and model snapshots
///   control thread    REP socket: status, reset, freeze, resume, snapshot, save_model, shutdown
///
/// Construction binds/connects every socket (throws zmq::error_t or std::invalid_argument on a bad endpoint:
/// a start-up error). Run() blocks until Stop() is called (from any thread, e.g. a signal watcher) or a
/// shutdown command arrives; it then stops taking frames, finishes those in flight, publishes them and a
/// final snapshot, and returns.

#include "server/clock.hpp"
#include "server/model_snapshot.hpp"
#include "server/output_queue.hpp"
#include "server/pipeline.hpp"
#include "server/service_metrics.hpp"
#include "server/service_options.hpp"
#include "results.pb.h"
#include "stream/result_codec.hpp"

#include <spdlog/logger.h>
#include <zmq.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

namespace specwatch::server {

class Service {
 public:
  /// `initial`: the model to start from (LoadInitialModel), or none (initial.model null).
  Service(const ServiceOptions& options, ServiceMetrics& metrics, std::shared_ptr<spdlog::logger> log,
          const Clock& clock, const InitialModel& initial = {});
  ~Service();

  void Run();
  void Stop() { stop_.store(true); }

  const std::vector<std::string>& publish_endpoints() const { return publish_endpoints_; }
  const std::vector<std::string>& control_endpoints() const { return control_endpoints_; }

 private:
  void ReceiveLoop();
  void PublishLoop();
  void ControlLoop();
  stream::StatusFacts StatusNow() const;
  wire::Status BuildStatus() const;  ///< for control replies
  /// Publishes `model`, or the pipeline's current model when null, as of `series_id` (empty: the current one).
  void PublishSnapshot(stream::ResultPublisher& publisher, const std::string& reason,
                       std::shared_ptr<const PcaModel> model = nullptr, const std::string& series_id = {});
  void PublishStatus(stream::ResultPublisher& publisher);
  /// The snapshot message of `model` with the current series (or `series_id`) and energy axis.
  stream::EncodedMessage BuildSnapshot(const PcaModel& model, const std::string& reason,
                                       const std::string& series_id = {}) const;
  /// Control thread: writes the current model to `path`. Returns the reply text; throws std::runtime_error.
  std::string SaveModel(const std::string& path) const;

  const ServiceOptions& options_;
  ServiceMetrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  const Clock& clock_;
  zmq::context_t context_;
  zmq::socket_t frames_;
  zmq::socket_t publish_;
  zmq::socket_t control_;
  std::vector<std::string> publish_endpoints_;
  std::vector<std::string> control_endpoints_;
  OutputQueue out_;
  Pipeline pipeline_;
  const double start_s_;
  const uint64_t epoch_ = stream::NewPublisherEpoch();  ///< on every envelope and status

  std::atomic<bool> stop_{false};            // stop taking frames
  std::atomic<bool> publisher_done_{false};  // graph drained, final messages queued
  std::atomic<bool> stopping_{false};

  mutable std::mutex series_mutex_;
  std::string series_id_;
  bool series_announced_ = false;
  EnergyAxis energy_axis_;
};

}  // namespace specwatch::server
