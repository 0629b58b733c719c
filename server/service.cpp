#include "server/service.hpp"

#include "operators/core/config_error.hpp"

#include "control.pb.h"
#include "server/rate_limited_log.hpp"
#include "stream/endpoint.hpp"

#include <zmq_addon.hpp>

#include <algorithm>
#include <thread>
#include <vector>

namespace specwatch::server {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

zmq::socket_type FramesSocketType(const std::string& s) {
  return s == "pull" ? zmq::socket_type::pull : zmq::socket_type::sub;
}

}  // namespace

Service::Service(const ServiceOptions& options, ServiceMetrics& metrics, std::shared_ptr<spdlog::logger> log,
                 const Clock& clock, const InitialModel& initial)
    : options_(options),
      metrics_(metrics),
      log_(log),
      clock_(clock),
      context_(1),
      frames_(context_, FramesSocketType(options.frames_socket)),
      publish_(context_, zmq::socket_type::pub),
      control_(context_, zmq::socket_type::rep),
      pipeline_(options, metrics, out_, log, clock, initial.model),
      start_s_(clock.SteadyS()) {
  if (initial.model) {
    energy_axis_ = initial.energy_axis;  // snapshots before the first series describe the file's model
    log_->info("initial model from {} (series '{}')", initial.path, initial.series_id);
  }
  frames_.set(zmq::sockopt::rcvhwm, static_cast<int>(options.receive_buffer_frames));
  frames_.set(zmq::sockopt::linger, 0);
  if (options.frames_socket == "sub") frames_.set(zmq::sockopt::subscribe, "");
  publish_.set(zmq::sockopt::linger, 1000);
  publish_.set(zmq::sockopt::sndhwm, 10000);
  control_.set(zmq::sockopt::linger, 0);
  using stream::Direction;
  const auto frames_at = stream::Attach(
      frames_, stream::ParseEndpoints(options.frames_endpoint, Direction::kConnect, "frames endpoint"));
  publish_endpoints_ = stream::Attach(
      publish_, stream::ParseEndpoints(options.publish_endpoint, Direction::kBind, "publish endpoint"));
  control_endpoints_ = stream::Attach(
      control_, stream::ParseEndpoints(options.control_endpoint, Direction::kBind, "control endpoint"));
  log_->info("frames from {} ({}), publishing on {}, control on {}", fmt::join(frames_at, ","),
             options.frames_socket, fmt::join(publish_endpoints_, ","), fmt::join(control_endpoints_, ","));
}

Service::~Service() = default;

void Service::Run() {
  std::thread publisher([this] { PublishLoop(); });
  std::thread control([this] { ControlLoop(); });
  ReceiveLoop();
  stopping_.store(true);
  log_->info("stopping: finishing {} frames in flight", pipeline_.InFlight());
  pipeline_.Drain();
  pipeline_.CloseResidualMap("shutdown");
  OutMessage last;
  last.kind = OutMessage::Kind::kSnapshotRequest;
  last.reason = "shutdown";
  out_.Push(std::move(last));
  publisher_done_.store(true);
  publisher.join();
  control.join();
  log_->info("stopped: {} frames received, {} spectra published", metrics_.intake.frames_received.Value(),
             metrics_.publish.spectra_published.Value());
}

void Service::ReceiveLoop() {
  stream::FrameDecoder decoder(stream::FrameDecoderOptions{options_.max_message_bytes});
  RateLimitedLog problems(log_, options_.log_rate_limit_per_s, clock_);
  std::vector<zmq::message_t> parts;
  uint64_t accepted = 0;
  zmq::pollitem_t item{frames_.handle(), 0, ZMQ_POLLIN, 0};
  while (!stop_.load()) {
    if (zmq::poll(&item, 1, kPollInterval) <= 0) continue;
    parts.clear();
    if (!zmq::recv_multipart(frames_, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
    const double t0 = clock_.SteadyS();
    const double cpu0 = ThreadCpuS();
    stream::DecodeOutcome outcome = decoder.Decode(parts, accepted, t0);
    metrics_.stages.Latency(Stage::kDecode).Observe(clock_.SteadyS() - t0);
    metrics_.stages.StageCpu(Stage::kDecode).Increment(std::max(0.0, ThreadCpuS() - cpu0));
    using Kind = stream::DecodeOutcome::Kind;
    WorkItem work;
    switch (outcome.kind) {
      case Kind::kRejected: {
        const auto& r = outcome.rejection;
        metrics_.intake.frames_received.Increment();
        metrics_.intake.spectra_received.Increment(static_cast<double>(r.spectra));
        metrics_.intake.FramesRejected(r.reason).Increment();
        metrics_.intake.SpectraRejected(r.reason).Increment(static_cast<double>(r.spectra));
        problems.Log(spdlog::level::warn, stream::ReasonLabel(r.reason),
                     std::string("rejected (") + stream::ReasonLabel(r.reason) + "): " + r.detail);
        continue;
      }
      case Kind::kSeriesStart: {
        metrics_.intake.series_started.Increment();
        {
          std::lock_guard lock(series_mutex_);
          series_id_ = outcome.series.id;
          series_announced_ = true;
          energy_axis_ = outcome.series.energy_axis;
        }
        work.kind = WorkItem::Kind::kSeriesStart;
        work.series = outcome.series;
        break;
      }
      case Kind::kSeriesEnd:
        log_->info("series '{}' ended: {} frames, {} spectra sent by the detector", outcome.series_end.id,
                   outcome.series_end.frames_sent, outcome.series_end.spectra_sent);
        if (outcome.missing_frames > 0) {
          metrics_.intake.sequence_gaps.Increment();
          metrics_.intake.frames_dropped.Increment(static_cast<double>(outcome.missing_frames));
          log_->warn("series '{}': the last {} frames never arrived", outcome.series_end.id, outcome.missing_frames);
        }
        work.kind = WorkItem::Kind::kSeriesEnd;
        work.series_end = outcome.series_end;
        break;
      case Kind::kFrame: {
        ++accepted;
        const auto& meta = outcome.batch->meta;
        if (meta.acquisition_time_s > 0) metrics_.intake.input_lag.Observe(clock_.UnixS() - meta.acquisition_time_s);
        metrics_.intake.frames_received.Increment();
        metrics_.intake.spectra_received.Increment(static_cast<double>(outcome.batch->Spectra()));
        if (outcome.missing_frames > 0) {
          metrics_.intake.sequence_gaps.Increment();
          metrics_.intake.frames_dropped.Increment(static_cast<double>(outcome.missing_frames));
          problems.Log(spdlog::level::warn, "gap",
                       "series '" + meta.series_id + "': " + std::to_string(outcome.missing_frames) +
                           " frames missing before frame " + std::to_string(meta.frame_number));
        }
        if (outcome.implicit_series_start) {
          metrics_.intake.series_started.Increment();
          std::lock_guard lock(series_mutex_);
          series_id_ = outcome.series.id;
          series_announced_ = false;
          energy_axis_ = meta.energy_axis;
        }
        // A frame that opened a series (its start missed): the session starts one from the header.
        work.kind = WorkItem::Kind::kFrame;
        work.batch = std::move(outcome.batch);
        break;
      }
    }
    pipeline_.Submit(std::move(work));
  }
}

void Service::PublishLoop() {
  stream::ResultPublisher publisher(publish_, epoch_);
  double next_snapshot = clock_.SteadyS() + options_.snapshot_period_s;
  double next_status = clock_.SteadyS() + options_.status_period_s;
  OutMessage m;
  while (true) {
    const bool got = out_.PopFor(&m, std::chrono::milliseconds(20));
    if (got) {
      switch (m.kind) {
        case OutMessage::Kind::kEnvelope: {
          const double t0 = clock_.SteadyS();
          const double cpu0 = ThreadCpuS();
          publisher.Publish(m.topic, *m.envelope, m.payload);
          const double t1 = clock_.SteadyS();
          metrics_.stages.StageCpu(Stage::kPublish).Increment(std::max(0.0, ThreadCpuS() - cpu0));
          // Counters last, so whoever sees a spectrum counted as published also sees its latencies.
          metrics_.stages.Latency(Stage::kPublish).Observe(t1 - t0);
          if (m.receive_time_s > 0) metrics_.stages.Latency(Stage::kEndToEnd).Observe(t1 - m.receive_time_s);
          metrics_.publish.Published(m.topic).Increment();
          metrics_.publish.spectra_published.Increment(static_cast<double>(m.spectra));
          break;
        }
        case OutMessage::Kind::kSnapshotRequest:
          PublishSnapshot(publisher, m.reason, m.model, m.series_id);
          break;
        case OutMessage::Kind::kStatusRequest:
          PublishStatus(publisher);
          break;
      }
      m = OutMessage{};  // releases the in-flight slot
    } else if (publisher_done_.load() && out_.Size() == 0) {
      break;
    }
    const double now = clock_.SteadyS();
    if (options_.snapshot_period_s > 0 && now >= next_snapshot) {
      if (pipeline_.Model()->spectra_seen > 0) PublishSnapshot(publisher, "periodic");
      next_snapshot = now + options_.snapshot_period_s;
    }
    if (options_.status_period_s > 0 && now >= next_status) {
      PublishStatus(publisher);
      next_status = now + options_.status_period_s;
    }
  }
  PublishStatus(publisher);
}

void Service::PublishSnapshot(stream::ResultPublisher& publisher, const std::string& reason,
                              std::shared_ptr<const PcaModel> model, const std::string& series_id) {
  if (!model) model = pipeline_.Model();
  stream::EncodedMessage m = BuildSnapshot(*model, reason, series_id);
  publisher.Publish(m.topic, *m.envelope, m.payload);
  metrics_.publish.Published("snapshot").Increment();
}

stream::EncodedMessage Service::BuildSnapshot(const PcaModel& model, const std::string& reason,
                                              const std::string& series_id) const {
  std::lock_guard lock(series_mutex_);
  return stream::SnapshotMessage(model, reason, series_id.empty() ? series_id_ : series_id, energy_axis_);
}

std::string Service::SaveModel(const std::string& path) const {
  const auto model = pipeline_.Model();
  if (!(model->spectra_seen > 0)) throw std::runtime_error("nothing learnt yet: no model to save");
  stream::EncodedMessage m = BuildSnapshot(*model, "save");
  m.envelope->set_publisher_epoch(epoch_);
  m.envelope->set_publish_time_s(clock_.UnixS());  // sequence 0: written to a file, not published
  WriteSnapshotFile(path, *m.envelope,
                    std::span<const float>(static_cast<const float*>(m.payload.data), m.payload.bytes / sizeof(float)));
  return "model version " + std::to_string(model->version) + " (rank " + std::to_string(model->rank) + ", " +
         std::to_string(model->mean.size()) + " channels) saved to " + path;
}

void Service::PublishStatus(stream::ResultPublisher& publisher) {
  stream::EncodedMessage m = stream::StatusMessage(StatusNow());
  publisher.Publish(m.topic, *m.envelope);
  metrics_.publish.Published("status").Increment();
}

wire::Status Service::BuildStatus() const { return stream::EncodeStatus(StatusNow()); }

stream::StatusFacts Service::StatusNow() const {
  stream::StatusFacts f;
  f.state = stopping_.load() ? "stopping" : pipeline_.frozen() ? "frozen" : "running";
  {
    std::lock_guard lock(series_mutex_);
    f.series_id = series_id_;
    f.series_started = series_announced_;
  }
  f.frames_received = static_cast<uint64_t>(metrics_.intake.frames_received.Value());
  f.spectra_received = static_cast<uint64_t>(metrics_.intake.spectra_received.Value());
  f.spectra_published = static_cast<uint64_t>(metrics_.publish.spectra_published.Value());
  for (auto r : stream::kAllRejectReasons) {
    f.frames_rejected += static_cast<uint64_t>(metrics_.intake.FramesRejected(r).Value());
    f.spectra_rejected += static_cast<uint64_t>(metrics_.intake.SpectraRejected(r).Value());
  }
  f.sequence_gaps = static_cast<uint64_t>(metrics_.intake.frames_dropped.Value());
  const auto model = pipeline_.Model();
  f.rank = static_cast<uint32_t>(model->rank);
  f.model_version = model->version;
  f.uptime_s = clock_.SteadyS() - start_s_;
  for (const char* topic : kTopics) f.published.emplace_back(topic, static_cast<uint64_t>(metrics_.publish.Published(topic).Value()));
  f.frames_in_flight = pipeline_.InFlight();
  f.spectra_in_model = pipeline_.SpectraLearnt();
  f.publisher_epoch = epoch_;
  f.model_spectra_skipped = static_cast<uint64_t>(metrics_.model.model_spectra_skipped.Value());
  f.session = pipeline_.SessionState();
  return f;
}

void Service::ControlLoop() {
  zmq::pollitem_t item{control_.handle(), 0, ZMQ_POLLIN, 0};
  while (!publisher_done_.load()) {
    if (zmq::poll(&item, 1, kPollInterval) <= 0) continue;
    zmq::message_t request;
    if (!control_.recv(request, zmq::recv_flags::dontwait)) continue;
    while (control_.get(zmq::sockopt::rcvmore)) {  // a REQ peer sends one part; drain any extra
      zmq::message_t extra;
      (void)control_.recv(extra, zmq::recv_flags::none);
    }
    wire::ControlRequest req;
    wire::ControlReply reply;
    reply.set_ok(true);
    if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
      reply.set_ok(false);
      reply.set_message("request is not a ControlRequest");
    } else {
      switch (req.command()) {
        case wire::COMMAND_STATUS:
          reply.set_message("status");
          break;
        case wire::COMMAND_RESET_MODEL:
          pipeline_.RequestReset();
          reply.set_message("model reset; learning restarts with the next frame");
          break;
        case wire::COMMAND_FREEZE:
          pipeline_.SetFrozen(true);
          reply.set_message("model frozen; denoising continues with the current model");
          break;
        case wire::COMMAND_RESUME:
          pipeline_.SetFrozen(false);
          reply.set_message("model updates resumed");
          break;
        case wire::COMMAND_SNAPSHOT: {
          OutMessage m;
          m.kind = OutMessage::Kind::kSnapshotRequest;
          m.reason = "request";
          out_.Push(std::move(m));
          reply.set_message("snapshot queued");
          break;
        }
        case wire::COMMAND_SAVE_MODEL:
          if (req.path().empty()) {
            reply.set_ok(false);
            reply.set_message("save_model needs a path");
            break;
          }
          try {
            reply.set_message(SaveModel(req.path()));
          } catch (const std::exception& e) {
            reply.set_ok(false);
            reply.set_message(std::string("model not saved: ") + e.what());
          }
          break;
        case wire::COMMAND_RECALIBRATE: {
          std::optional<ScanRect> region;
          if (req.has_reference_region()) {
            const auto& r = req.reference_region();
            if (r.x_min() > r.x_max() || r.y_min() > r.y_max()) {
              reply.set_ok(false);
              reply.set_message("recalibrate: reference_region needs x_min <= x_max and y_min <= y_max");
              break;
            }
            region = ScanRect{r.x_min(), r.y_min(), r.x_max(), r.y_max()};
          }
          if (!pipeline_.RequestRecalibrate(region)) {
            reply.set_ok(false);
            reply.set_message("recalibrate: novelty detection is off (novelty.enabled: false)");
            break;
          }
          reply.set_message(region ? fmt::format("novelty thresholds are re-learnt from the next spectra in x {}..{}, "
                                                 "y {}..{}", region->x_min, region->x_max, region->y_min,
                                                 region->y_max)
                                   : std::string("novelty thresholds are re-learnt from the next spectra"));
          break;
        }
        case wire::COMMAND_ADVICE: {
          const auto advice = pipeline_.LatestAdvice();
          if (!advice) {
            reply.set_ok(false);
            reply.set_message("advice: none yet (it needs a scan shape and a first frame)");
            break;
          }
          *reply.mutable_advice() = stream::ResultCodec::Advice(*advice);
          reply.set_message(fmt::format("advice version {}: {} revisit, {} skip, {} continue tiles", advice->version,
                                        advice->map.Count(TileAdvice::kRevisit), advice->map.Count(TileAdvice::kSkip),
                                        advice->map.Count(TileAdvice::kContinue)));
          break;
        }
        case wire::COMMAND_SET_DOSE_BUDGET: {
          const auto& r = req.dose_budget();
          DoseBudget budget = options_.dose_budget;
          budget.position_e_per_A2 = r.position_e_per_a2();
          budget.run_e_per_A2 = r.run_e_per_a2();
          if (r.warning_fraction() != 0.0) budget.warning_fraction = r.warning_fraction();
          try {
            budget.Validate();
          } catch (const specwatch::ConfigError& e) {
            reply.set_ok(false);
            reply.set_message(std::string("set_dose_budget: ") + e.what());
            break;
          }
          pipeline_.RequestDoseBudget(budget);
          reply.set_message(fmt::format("dose budget from the next frame on: {:.6g} e-/A^2 per "
                                        "position, {:.6g} e-/A^2 per run (0 = none), warning at {:.0f} %",
                                        budget.position_e_per_A2, budget.run_e_per_A2,
                                        100 * budget.warning_fraction));
          break;
        }
        case wire::COMMAND_SHUTDOWN:
          reply.set_message("shutting down");
          Stop();
          break;
        default:
          reply.set_ok(false);
          reply.set_message("unknown command " + std::to_string(req.command()));
      }
      log_->info("control: {} -> {}", wire::Command_Name(req.command()), reply.message());
    }
    *reply.mutable_status() = BuildStatus();
    std::string bytes;
    reply.SerializeToString(&bytes);
    control_.send(zmq::buffer(bytes), zmq::send_flags::none);
  }
}

}  // namespace specwatch::server
