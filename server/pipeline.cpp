#include "server/pipeline.hpp"

#include <tbb/info.h>

#include <ctime>
#include <functional>
#include <type_traits>

namespace specwatch::server {

double ThreadCpuS() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

namespace {

/// Counts a stage's thread CPU time and wall time for the scope.
class StageTimer {
 public:
  StageTimer(StageMetrics& metrics, Stage stage, const Clock& clock)
      : metrics_(metrics), stage_(stage), clock_(clock), cpu0_(ThreadCpuS()), t0_(clock.SteadyS()) {}
  ~StageTimer() {
    metrics_.StageCpu(stage_).Increment(std::max(0.0, ThreadCpuS() - cpu0_));
    if (observe_) metrics_.Latency(stage_).Observe(clock_.SteadyS() - t0_);
  }
  void SkipLatency() { observe_ = false; }
  double start_s() const { return t0_; }

 private:
  StageMetrics& metrics_;
  Stage stage_;
  const Clock& clock_;
  double cpu0_;
  double t0_;
  bool observe_ = true;
};

double NoveltyStateValue(const std::string& state) {
  if (state == "calibrating") return 1;
  if (state == "monitoring") return 2;
  if (state == "absorbing") return 3;
  return 0;
}

spdlog::level::level_enum LogLevel(Notice::Level level) {
  switch (level) {
    case Notice::Level::kDebug: return spdlog::level::debug;
    case Notice::Level::kInfo: return spdlog::level::info;
    case Notice::Level::kWarn: return spdlog::level::warn;
    case Notice::Level::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

const char* StageLabel(Stage s) { return kStageLabels[static_cast<size_t>(s)]; }

}  // namespace

// The walk of a frame: every edge of the graph is here.
struct Pipeline::Nodes {
  using SessionNode = tbb::flow::multifunction_node<ScoredPtr, std::tuple<EncodeItem, LearnItem>>;
  using LearnNode = tbb::flow::multifunction_node<LearnItem, std::tuple<EncodeItem>>;

  explicit Nodes(Pipeline& p)
      : score(graph, tbb::flow::unlimited, [&p](WorkItem item) { return p.ScoreBody(std::move(item)); }),
        order(graph, [](const ScoredPtr& s) { return static_cast<size_t>(s->item.index); }),
        session(graph, tbb::flow::serial,
                [&p](const ScoredPtr& s, SessionNode::output_ports_type& ports) {
                  EncodeItem encode;
                  std::vector<LearnItem> learn;
                  p.SessionBody(s, &encode, &learn);
                  // The frame's messages are queued for encoding before its model work, so that what the model
                  // learns from this frame is published after it.
                  if (!encode.events.empty()) std::get<0>(ports).try_put(std::move(encode));
                  for (LearnItem& l : learn) std::get<1>(ports).try_put(std::move(l));
                }),
        learn(graph, tbb::flow::serial,
              [&p](const LearnItem& l, LearnNode::output_ports_type& ports) {
                // The step's events leave (a new version's snapshot first) before its model is installed: the
                // encode node is serial and takes its inputs in order, so every frame scored with the new model
                // reaches it after them.
                p.LearnBody(l, [&ports](EncodeItem&& e) { std::get<0>(ports).try_put(std::move(e)); });
              }),
        encode(graph, tbb::flow::serial, [&p](const EncodeItem& e) {
          p.EncodeBody(e);
          return tbb::flow::continue_msg{};
        }) {
    tbb::flow::make_edge(score, order);
    tbb::flow::make_edge(order, session);
    tbb::flow::make_edge(tbb::flow::output_port<0>(session), encode);
    tbb::flow::make_edge(tbb::flow::output_port<1>(session), learn);
    tbb::flow::make_edge(tbb::flow::output_port<0>(learn), encode);
  }
  tbb::flow::graph graph;
  tbb::flow::function_node<WorkItem, ScoredPtr> score;
  tbb::flow::sequencer_node<ScoredPtr> order;
  SessionNode session;
  LearnNode learn;
  tbb::flow::function_node<EncodeItem, tbb::flow::continue_msg> encode;
};

int ComputeThreads(const ServiceOptions& o) {
  return o.compute_threads > 0 ? static_cast<int>(o.compute_threads) : tbb::info::default_concurrency();
}

Pipeline::Pipeline(const ServiceOptions& options, PipelineMetrics metrics, OutputQueue& out,
                   std::shared_ptr<spdlog::logger> log, const Clock& clock,
                   std::shared_ptr<const PcaModel> initial_model, StageFaultForTests fault)
    : options_(options),
      metrics_(metrics),
      out_(out),
      log_(std::move(log)),
      clock_(clock),
      session_(options, initial_model),
      codec_(options.denoised_payload == DenoisedPayload::kScores),
      fault_(std::move(fault)),
      slots_(std::make_shared<Slots>(options.max_frames_in_flight, metrics.stages.frames_in_flight)),
      arena_(ComputeThreads(options), /*reserved_for_masters=*/0) {
  // A graph belongs to the arena it is built in.
  arena_.execute([this] { nodes_ = std::make_unique<Nodes>(*this); });
  if (initial_model) {
    const auto m = session_.Model();
    if (options_.denoised_payload == DenoisedPayload::kScores) {
      OutMessage s;
      s.kind = OutMessage::Kind::kSnapshotRequest;
      s.reason = "model_update";
      s.model = m;
      out_.Push(std::move(s));
    }
    metrics_.model.model_rank.Set(m->rank);
    metrics_.model.model_version.Set(static_cast<double>(m->version));
    log_->info("model restored: version {}, rank {}, {} channels, {:.0f} spectra seen, {} weighting", m->version,
               m->rank, m->mean.size(), m->spectra_seen, m->Weighted() ? "Poisson" : "no");
  }
}

Pipeline::~Pipeline() { Drain(); }

void Pipeline::Submit(WorkItem item) {
  slots_->free.acquire();
  slots_->gauge.Set(++slots_->in_flight);
  item.token = InFlightToken(slots_.get(), [slots = slots_](void*) {
    slots->gauge.Set(--slots->in_flight);
    slots->free.release();
  });
  item.index = next_index_++;
  // Enqueued, not executed: the receiver goes back to its socket at once instead of waiting for a worker to
  // take the call (execute() delegates when every slot is taken, which is always under load). Order does not
  // matter here (the sequencer restores it); reserve_wait keeps Drain() waiting for the put.
  nodes_->graph.reserve_wait();
  struct Put {  // enqueue() calls its functor as const
    Nodes* nodes;
    mutable WorkItem item;
    void operator()() const {
      nodes->score.try_put(std::move(item));
      nodes->graph.release_wait();
    }
  };
  arena_.enqueue(Put{nodes_.get(), std::move(item)});
}

void Pipeline::Drain() {
  arena_.execute([this] { nodes_->graph.wait_for_all(); });
}

void Pipeline::RequestReset() {
  LearnItem l;
  l.work = session_.RequestReset();
  arena_.execute([this, &l] { nodes_->learn.try_put(std::move(l)); });
}

void Pipeline::CloseResidualMap(const std::string& reason) {
  EncodeItem e;
  e.events = session_.CloseMaps(reason, clock_.SteadyS()).events;
  EncodeBody(e);
}

// --- the bodies

Pipeline::ScoredPtr Pipeline::ScoreBody(WorkItem item) const {
  auto s = std::make_shared<Scored>();
  s->item = std::move(item);
  if (s->item.kind != WorkItem::Kind::kFrame) return s;
  StageTimer timer(metrics_.stages, Stage::kScore, clock_);
  try {
    Fault(Stage::kScore, s->item.batch->meta.frame_number);
    s->scores = session_.Score(*s->item.batch);
    s->denoised = codec_.Denoised(*s->item.batch, s->scores);
  } catch (const std::exception& e) {
    s->error = e.what();  // the session stage rejects the frame: the sequencer needs every index
  }
  return s;
}

void Pipeline::SessionBody(const ScoredPtr& s, EncodeItem* encode, std::vector<LearnItem>* learn) {
  StageTimer timer(metrics_.stages, Stage::kSession, clock_);
  WorkItem& item = s->item;
  encode->token = item.token;
  if (!s->error.empty()) {
    RejectFrame(Stage::kScore, *item.batch, s->error);
    return;
  }
  SessionStep step;
  try {
    switch (item.kind) {
      case WorkItem::Kind::kSeriesStart:
        step = session_.StartSeries(item.series, clock_.SteadyS());
        break;
      case WorkItem::Kind::kSeriesEnd:
        step = session_.EndSeries(item.series_end, clock_.SteadyS());
        break;
      case WorkItem::Kind::kFrame:
        Fault(Stage::kSession, item.batch->meta.frame_number);
        step = session_.Consume(item.batch, s->scores, clock_.SteadyS());
        encode->frame = s;
        break;
    }
  } catch (const std::exception& e) {
    encode->frame.reset();
    if (item.kind == WorkItem::Kind::kFrame) {
      RejectFrame(Stage::kSession, *item.batch, e.what());
    } else {
      StageFailed(Stage::kSession, "series marker", e.what());
    }
    return;
  }
  encode->events = std::move(step.events);
  if (step.novel_spectra > 0) metrics_.monitor.novelty_spectra.Increment(static_cast<double>(step.novel_spectra));
  uint64_t skipped = step.model_spectra_skipped;
  const double now = clock_.SteadyS();
  for (ModelWork& w : step.model_work) {
    LearnItem l;
    if (w.kind == ModelWork::Kind::kFrame && w.learn) {
      // Offer the frame to the model: always under "all"; under "when_idle" only when no update is pending and
      // the update's CPU budget allows.
      const bool offer = options_.model_updates == ModelUpdates::kAll ||
                         (pending_updates_.load() == 0 && now >= next_offer_s_.load());
      if (offer) {
        ++pending_updates_;
        l.counted_pending = true;
      } else {
        w.learn = false;
        skipped += w.Spectra();
      }
    }
    if (w.kind == ModelWork::Kind::kFrame && !w.learn && !w.HasMonitorOps()) continue;
    // The update holds the token too, so the slot stays taken until it ran.
    l.token = item.token;
    l.work = std::move(w);
    learn->push_back(std::move(l));
  }
  if (skipped > 0) metrics_.model.model_spectra_skipped.Increment(static_cast<double>(skipped));
  UpdateGauges(Stage::kSession);
}

void Pipeline::LearnBody(const LearnItem& l, const std::function<void(EncodeItem&&)>& emit) {
  if (l.counted_pending) --pending_updates_;
  StageTimer timer(metrics_.stages, Stage::kLearn, clock_);
  ModelStep step;
  try {
    if (l.work.batch) Fault(Stage::kLearn, l.work.batch->meta.frame_number);
    step = session_.Learn(l.work);
  } catch (const std::exception& e) {
    StageFailed(Stage::kLearn,
                l.work.batch ? "frame " + std::to_string(l.work.batch->meta.frame_number) + " of series '" +
                                   l.work.series_id + "' (published; its spectra are not learnt)"
                             : std::string("model work"),
                e.what());
    // Not learnt (unless the frame was not offered anyway: then the session stage counted it already).
    if (l.work.learn) metrics_.model.model_spectra_skipped.Increment(static_cast<double>(l.work.Spectra()));
    return;
  }
  metrics_.model.model_weight_refreshes.Increment(static_cast<double>(step.weight_refreshes));
  metrics_.model.model_spectra.Increment(static_cast<double>(step.spectra_learnt));
  metrics_.model.model_spectra_excluded.Increment(static_cast<double>(step.spectra_excluded));
  metrics_.model.model_spectra_skipped.Increment(static_cast<double>(step.spectra_skipped));
  if (!step.learned) timer.SkipLatency();
  if (!step.events.empty()) {
    EncodeItem encode;
    encode.token = l.token;
    encode.events = std::move(step.events);
    emit(std::move(encode));
  }
  session_.Install(step);
  const auto model = session_.Model();
  metrics_.model.model_rank.Set(model->rank);
  metrics_.model.model_version.Set(static_cast<double>(model->version));
  if (step.learned) {
    // when_idle keeps the update within its CPU budget: after an update of t seconds, the next frame is offered
    // t * (1/budget - 1) seconds later.
    const double t1 = clock_.SteadyS();
    next_offer_s_.store(t1 + (t1 - timer.start_s()) * (1.0 / options_.model_update_budget - 1.0));
  }
  UpdateGauges(Stage::kLearn);
}

void Pipeline::EncodeBody(const EncodeItem& item) {
  StageTimer timer(metrics_.stages, Stage::kEncode, clock_);
  for (const SeriesEvent& se : item.events) {
    try {
      if (const auto* n = std::get_if<Notice>(&se.event)) {
        log_->log(LogLevel(n->level), n->text);
        continue;
      }
      if (std::holds_alternative<DenoisedFrameEvent>(se.event)) {
        Fault(Stage::kEncode, item.frame->item.batch->meta.frame_number);
        const Scored& f = *item.frame;
        const SpectrumBatch& b = *f.item.batch;
        OutMessage m;
        m.topic = f.denoised.topic;
        m.envelope = f.denoised.envelope;
        m.payload = f.denoised.payload;
        m.spectra = static_cast<uint64_t>(b.Spectra());
        m.receive_time_s = b.meta.receive_time_s;
        m.token = item.token;
        out_.Push(std::move(m));
        continue;
      }
      if (const auto* v = std::get_if<ModelVersionEvent>(&se.event)) {
        // denoised_payload "scores": clients rebuild spectra from the snapshot of the version a message names.
        if (options_.denoised_payload == DenoisedPayload::kScores) {
          OutMessage m;
          m.kind = OutMessage::Kind::kSnapshotRequest;
          m.reason = "model_update";
          m.model = v->model;
          out_.Push(std::move(m));
        }
        continue;
      }
      if (const auto* due = std::get_if<SnapshotDueEvent>(&se.event)) {
        OutMessage m;
        m.kind = OutMessage::Kind::kSnapshotRequest;
        m.reason = due->reason;
        m.model = due->model;
        m.series_id = se.series_id;
        m.token = item.token;
        out_.Push(std::move(m));
        continue;
      }
      std::optional<stream::EncodedMessage> encoded = codec_.Encode(se);
      if (!encoded) continue;
      // What the events say, counted.
      std::visit(
          [&](const auto& e) {
            using T = std::decay_t<decltype(e)>;
            if constexpr (std::is_same_v<T, NoveltyEvent>) {
              metrics_.monitor.novelty_events.Increment();
            } else if constexpr (std::is_same_v<T, DriftEvent>) {
              metrics_.monitor.DriftEvents(e.report.kind).Increment();
            } else if constexpr (std::is_same_v<T, DoseAlarmEvent>) {
              metrics_.dose.DoseAlarms(ToString(e.alarm.level), e.alarm.run ? "run" : "position")
                  .Increment(e.alarm.run ? 1.0 : static_cast<double>(e.alarm.positions.size()));
            } else if constexpr (std::is_same_v<T, DamageEvent>) {
              if (e.report.warning) metrics_.dose.damage_warnings.Increment();
            } else if constexpr (std::is_same_v<T, RankChangeEvent>) {
              metrics_.model.model_rank_changes.Increment();
            } else if constexpr (std::is_same_v<T, ResidualMapEvent>) {
              metrics_.monitor.residual_map_outliers.Set(static_cast<double>(e.map.summary.outliers));
            }
          },
          se.event);
      OutMessage m;
      m.topic = std::move(encoded->topic);
      m.envelope = std::move(encoded->envelope);
      m.payload = std::move(encoded->payload);
      m.token = item.token;
      out_.Push(std::move(m));
    } catch (const std::exception& e) {
      if (std::holds_alternative<DenoisedFrameEvent>(se.event) && item.frame) {
        RejectFrame(Stage::kEncode, *item.frame->item.batch, e.what());
      } else {
        StageFailed(Stage::kEncode, "a message of series '" + se.series_id + "'", e.what());
      }
    }
  }
}

void Pipeline::RejectFrame(Stage stage, const SpectrumBatch& b, const std::string& what) {
  metrics_.stages.StageErrors(stage).Increment();
  metrics_.intake.FramesRejected(stream::RejectReason::kStageError).Increment();
  metrics_.intake.SpectraRejected(stream::RejectReason::kStageError).Increment(static_cast<double>(b.Spectra()));
  log_->error("stage '{}' failed on frame {} of series '{}' ({} spectra): {}; the frame is rejected (stage_error)",
              StageLabel(stage), b.meta.frame_number, b.meta.series_id, b.Spectra(), what);
}

void Pipeline::StageFailed(Stage stage, const std::string& where, const std::string& what) {
  metrics_.stages.StageErrors(stage).Increment();
  log_->error("stage '{}' failed on {}: {}", StageLabel(stage), where, what);
}

void Pipeline::UpdateGauges(Stage stage) {
  const SessionStatus s = session_.Status();
  // Each gauge from one thread: the learn stage owns the subspace angle, the session stage the rest.
  if (stage == Stage::kLearn) {
    metrics_.monitor.subspace_angle.Set(s.subspace_angle_deg);
    return;
  }
  metrics_.monitor.novelty_state.Set(NoveltyStateValue(s.novelty_state));
  metrics_.monitor.novelty_threshold.Set(s.novelty_threshold);
  metrics_.monitor.energy_shift_channels.Set(s.energy_shift_channels);
  metrics_.monitor.energy_shift_axis.Set(s.energy_shift_axis_units);
  metrics_.dose.dose_run.Set(s.run_dose_e_per_A2);
  metrics_.dose.dose_max_position.Set(s.max_position_dose_e_per_A2);
  metrics_.dose.dose_rate.Set(s.dose_rate_e_per_A2_per_s);
  metrics_.dose.dose_positions_over_warning.Set(static_cast<double>(s.positions_over_warning));
  metrics_.dose.dose_positions_over_limit.Set(static_cast<double>(s.positions_over_limit));
  metrics_.dose.damage_critical_dose.Set(s.damage_critical_dose_e_per_A2);
  metrics_.dose.damage_affected_positions.Set(static_cast<double>(s.damage_affected_positions));
}

}  // namespace specwatch::server
