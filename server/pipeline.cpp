#include "server/pipeline.hpp"

#include "operators/core/config_error.hpp"
#include "server/clock.hpp"

#include <tbb/info.h>

#include <algorithm>
#include <cmath>

namespace specwatch::server {

struct Pipeline::Nodes {
  explicit Nodes(Pipeline& p)
      : denoise(graph, tbb::flow::unlimited, [&p](WorkItem item) { return p.DenoiseItem(std::move(item)); }),
        order(graph, [](const ProcessedPtr& d) { return static_cast<size_t>(d->item.index); }),
        in_order(graph, tbb::flow::serial,
                 [&p](const ProcessedPtr& d) {
                   p.InOrder(d);
                   return tbb::flow::continue_msg{};
                 }),
        model_update(graph, tbb::flow::serial, [&p](const UpdateItem& u) {
          p.ModelUpdate(u);
          return tbb::flow::continue_msg{};
        }) {
    tbb::flow::make_edge(denoise, order);
    tbb::flow::make_edge(order, in_order);
  }
  tbb::flow::graph graph;
  tbb::flow::function_node<WorkItem, ProcessedPtr> denoise;
  tbb::flow::sequencer_node<ProcessedPtr> order;
  tbb::flow::function_node<ProcessedPtr, tbb::flow::continue_msg> in_order;
  tbb::flow::function_node<UpdateItem, tbb::flow::continue_msg> model_update;
};

int ComputeThreads(const ServiceOptions& o) {
  return o.compute_threads > 0 ? static_cast<int>(o.compute_threads) : tbb::info::default_concurrency();
}

namespace {

wire::EnergyAxis ToWire(const EnergyAxis& a) {
  wire::EnergyAxis w;
  w.set_offset(a.offset);
  w.set_dispersion(a.dispersion);
  w.set_unit(a.unit);
  return w;
}

}  // namespace

Pipeline::Pipeline(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
                   std::shared_ptr<spdlog::logger> log, std::shared_ptr<const PcaModel> initial_model)
    : options_(options),
      metrics_(metrics),
      out_(out),
      log_(std::move(log)),
      slots_(std::make_shared<Slots>(options.max_frames_in_flight, metrics.frames_in_flight)),
      model_(std::make_shared<const PcaModel>()),
      monitor_(options, metrics, out, log_),
      dose_(options, metrics, out, log_),
      arena_(ComputeThreads(options), /*reserved_for_masters=*/0) {
  // A graph belongs to the arena it is built in.
  arena_.execute([this] { nodes_ = std::make_unique<Nodes>(*this); });
  if (initial_model) {
    WeightingOptions weighting = options_.weighting_options;
    weighting.enabled = initial_model->Weighted();
    learner_ = std::make_unique<StreamingModel>(static_cast<int>(initial_model->mean.size()), options_.pca, weighting);
    learner_->Restore(*initial_model);
    restored_.store(true);
    InstallModel(learner_->Model(), "");
    const auto& m = *Model();
    log_->info("model restored: version {}, rank {}, {} channels, {:.0f} spectra seen, {} weighting", m.version,
               m.rank, m.mean.size(), m.spectra_seen, m.Weighted() ? "Poisson" : "no");
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
      nodes->denoise.try_put(std::move(item));
      nodes->graph.release_wait();
    }
  };
  arena_.enqueue(Put{nodes_.get(), std::move(item)});
}

void Pipeline::Drain() {
  arena_.execute([this] { nodes_->graph.wait_for_all(); });
}

void Pipeline::RequestReset() {
  monitor_.RequestModelReset();
  arena_.execute([this] { nodes_->model_update.try_put(UpdateItem{UpdateItem::Op::kReset, nullptr, false}); });
}

bool Pipeline::RequestRecalibrate(std::optional<ScanRect> reference) {
  if (!options_.monitor.novelty) return false;
  monitor_.RequestRecalibrate(reference);
  return true;
}

Pipeline::ProcessedPtr Pipeline::DenoiseItem(WorkItem item) const {
  auto p = std::make_shared<Processed>();
  p->item = std::move(item);
  if (p->item.kind != WorkItem::Kind::kFrame) return p;
  const SpectrumBatch& b = *p->item.batch;
  const double t0 = NowSteady();
  auto model = Model();
  const bool usable = (learnt_since_reset_.load() >= options_.warmup_spectra || restored_.load()) &&
                      model->spectra_seen > 0 && model->mean.size() == b.Channels();
  static const PcaModel kNothingLearnt;  // Denoise passes the data through unchanged
  auto result = std::make_shared<DenoiseResult>();
  Denoise(usable ? *model : kNothingLearnt, b.counts, result.get());
  if (monitor_.enabled() && options_.monitor.energy) {
    // Column by column: each add is one vectorised pass over a spectrum (rowwise().sum() would stride).
    Eigen::VectorXf sum = Eigen::VectorXf::Zero(b.Channels());
    for (int i = 0; i < b.Spectra(); ++i) sum += b.counts.col(i);
    p->frame_sum = std::make_shared<Eigen::VectorXd>(sum.cast<double>());
  }
  metrics_.Latency(Stage::kDenoise).Observe(NowSteady() - t0);

  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(b.meta.series_id);
  auto* d = env->mutable_denoised();
  d->set_frame_number(b.meta.frame_number);
  d->set_spectrum_count(static_cast<uint32_t>(b.Spectra()));
  d->set_channel_count(static_cast<uint32_t>(b.Channels()));
  d->mutable_positions()->Reserve(b.Spectra());
  for (const auto& pos : b.positions) {
    auto* w = d->add_positions();
    w->set_x(pos.x);
    w->set_y(pos.y);
    w->set_scan_pass(pos.pass);
  }
  d->mutable_residual_norm()->Add(result->residual_norm.data(),
                                  result->residual_norm.data() + result->residual_norm.size());
  *d->mutable_energy_axis() = ToWire(b.meta.energy_axis);
  d->set_rank(usable ? static_cast<uint32_t>(model->rank) : 0);
  d->set_model_version(usable ? model->version : 0);
  const auto& scores = result->scores;
  d->mutable_scores()->Add(scores.data(), scores.data() + scores.size());
  if (usable) {
    d->mutable_residual_chi2()->Add(result->residual_chi2.data(),
                                    result->residual_chi2.data() + result->residual_chi2.size());
  }
  if (usable) {
    d->mutable_hotelling_t2()->Add(result->hotelling_t2.data(),
                                   result->hotelling_t2.data() + result->hotelling_t2.size());
  }
  if (usable && model->Weighted()) {
    d->mutable_deviance_z()->Add(result->deviance_z.data(), result->deviance_z.data() + result->deviance_z.size());
    d->mutable_spectrum_scale()->Reserve(b.Spectra());
    for (float total : result->totals) d->add_spectrum_scale(std::sqrt(total));
  }
  d->set_spectra_omitted(usable && options_.denoised_payload == DenoisedPayload::kScores);
  d->set_scan_pass(b.positions.empty() ? 0 : b.positions.front().pass);
  d->set_acquisition_time_s(b.meta.acquisition_time_s);
  p->model_used = usable;
  p->weighted = usable && model->Weighted();
  if (usable) p->model = model;
  p->result = std::move(result);
  p->envelope = std::move(env);
  return p;
}

void Pipeline::InOrder(const ProcessedPtr& p) {
  WorkItem& item = p->item;
  switch (item.kind) {
    case WorkItem::Kind::kSeriesStart:
      log_->info("series '{}' started: {} channels, scan {}x{}, {} passes", item.series.id,
                 item.series.channel_count, item.series.scan_shape.width, item.series.scan_shape.height,
                 item.series.passes);
      if (options_.reset_model_on_new_series) RequestReset();
      PublishResidualMap(residual_maps_.Close("new_series"));
      warned_no_scan_shape_ = false;
      monitor_.StartSeries(item.series);
      dose_.StartSeries(item.series);
      item.token.reset();
      return;
    case WorkItem::Kind::kSeriesEnd:
      PublishResidualMap(residual_maps_.Close("series_end"));
      // Through the model stage, so the snapshot includes every frame of the series.
      nodes_->model_update.try_put(UpdateItem{UpdateItem::Op::kSeriesEnd, p, false});
      return;
    case WorkItem::Kind::kFrame:
      break;
  }
  if (item.opens_series) {
    log_->warn("series '{}': frame {} arrived without a series start; working from frame headers alone",
               item.series.id, item.batch->meta.frame_number);
    if (options_.reset_model_on_new_series) RequestReset();
    PublishResidualMap(residual_maps_.Close("new_series"));
    warned_no_scan_shape_ = false;
    monitor_.StartSeries(item.series);
    dose_.StartSeries(item.series);
  }
  const SpectrumBatch& b = *item.batch;
  // Novelty and drift first: they decide what the model may learn from this frame, and their events leave
  // before the frame's own denoised message.
  p->learn = monitor_.Observe(*p);
  if (p->learn.shift_model_channels != 0.0 || p->learn.take_subspace_reference ||
      p->learn.drop_subspace_reference) {
    nodes_->model_update.try_put(UpdateItem{UpdateItem::Op::kMonitor, p, false});
  }
  // Offer the frame to the model. The update holds the token too, so the slot stays taken until it ran.
  const bool offer =
      !frozen_.load() && (options_.model_updates == ModelUpdates::kAll ||
                          (pending_updates_.load() == 0 && NowSteady() >= next_offer_s_.load()));
  if (offer) {
    ++pending_updates_;
    nodes_->model_update.try_put(UpdateItem{UpdateItem::Op::kLearn, p, true});
  } else {
    metrics_.model_spectra_skipped.Increment(static_cast<double>(b.Spectra()));
  }
  OutMessage m;
  m.topic = "denoised";
  m.envelope = p->envelope;
  if (!p->envelope->denoised().spectra_omitted()) {
    const auto& den = p->result->denoised;
    m.payload = stream::Payload{p->result, den.data(), static_cast<size_t>(den.size()) * sizeof(float)};
  }
  m.spectra = static_cast<uint64_t>(b.Spectra());
  m.receive_time_s = b.meta.receive_time_s;
  m.token = item.token;
  out_.Push(std::move(m));
  dose_.Observe(b, p->learn.novel ? std::span<const uint8_t>(*p->learn.novel) : std::span<const uint8_t>());
  MapResiduals(*p);  // after the frame's own message: a map only holds values already published
}

void Pipeline::MapResiduals(const Processed& p) {
  const SpectrumBatch& b = *p.item.batch;
  ResidualFrame f;
  f.shape = b.meta.scan_shape;
  f.frame_number = b.meta.frame_number;
  f.positions = b.positions;
  if (p.model_used) {
    // Weighted (count) models: the standardised Poisson deviance, comparable across doses and channels.
    // Unweighted: the residual norm in counts (not its square, residual_chi2, whose tail is heavier).
    const Eigen::VectorXf& v = p.weighted ? p.result->deviance_z : p.result->residual_norm;
    f.values = std::span<const float>(v.data(), static_cast<size_t>(v.size()));
    f.statistic = p.weighted ? "deviance_z" : "residual_norm";
    f.model_version = p.envelope->denoised().model_version();
  }
  if (p.learn.novel) f.novel = *p.learn.novel;
  map_series_ = b.meta.series_id;
  const uint64_t unmapped = residual_maps_.spectra_unmapped();
  std::vector<PassMap> done = residual_maps_.Add(f);
  if (residual_maps_.spectra_unmapped() > unmapped && !warned_no_scan_shape_) {
    log_->warn("series '{}': scan shape {}x{} {}: no residual maps; per-spectrum residuals stay in the denoised "
               "messages", b.meta.series_id, f.shape.width, f.shape.height,
               f.shape.Positions() == 0 ? "unknown (no series start, no scan_shape in the frame headers)"
                                        : "above 16M positions");
    warned_no_scan_shape_ = true;
  }
  for (PassMap& m : done) PublishResidualMap(std::move(m));
}

void Pipeline::PublishResidualMap(std::optional<PassMap> map) {
  if (!map) return;
  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(map_series_);
  auto* r = env->mutable_residual_map();
  r->set_width(map->shape.width);
  r->set_height(map->shape.height);
  r->set_scan_pass(map->pass);
  r->set_statistic(map->statistic);
  r->set_closed_by(map->closed_by);
  r->set_positions_scored(map->positions_scored);
  r->set_spectra(map->spectra);
  r->set_spectra_unscored(map->spectra_unscored);
  r->set_spectra_outside(map->spectra_outside);
  const RobustSummary& s = map->summary;
  r->set_median(s.median);
  r->set_robust_sigma(s.robust_sigma);
  r->set_outlier_threshold(s.outlier_threshold);
  r->set_outliers(s.outliers);
  r->set_max(s.max);
  r->set_first_frame_number(map->first_frame);
  r->set_last_frame_number(map->last_frame);
  r->set_model_version(map->model_version);
  r->set_novel_positions(map->novel_positions);
  r->set_novelty_threshold(monitor_.Snapshot().novelty_threshold);
  metrics_.residual_map_outliers.Set(static_cast<double>(s.outliers));
  // The dose map of the same pass goes out with it (queued after it).
  const uint32_t pass = map->pass;
  const std::string closed_by = map->closed_by;
  log_->debug("residual map, series '{}' pass {} ({}): {} of {} positions scored, median {:.3g}, robust sigma {:.3g}, "
              "{} outliers", map_series_, map->pass, map->closed_by, map->positions_scored, map->values.size(),
              s.median, s.robust_sigma, s.outliers);
  auto values = std::make_shared<std::vector<float>>(std::move(map->values));
  OutMessage m;
  m.topic = "residual_map";
  m.envelope = std::move(env);
  m.payload = stream::Payload{values, values->data(), values->size() * sizeof(float)};
  out_.Push(std::move(m));
  dose_.PublishMap(pass, closed_by, map_series_);
}

void Pipeline::CloseResidualMap(const std::string& reason) { PublishResidualMap(residual_maps_.Close(reason)); }

void Pipeline::ModelUpdate(const UpdateItem& u) {
  if (u.counted_pending) --pending_updates_;
  if (u.op == UpdateItem::Op::kSeriesEnd) {
    if (learner_ && learner_->buffered() > 0 && !frozen_.load()) {
      learner_->Flush();
      InstallModel(learner_->Model(), u.processed->item.series_end.id);
    }
    OutMessage m;
    m.kind = OutMessage::Kind::kSnapshotRequest;
    m.reason = "series_end";
    // This model and this series: by the time the publisher gets to it, the next series may have begun.
    m.model = Model();
    m.series_id = u.processed->item.series_end.id;
    m.token = u.processed->item.token;
    out_.Push(std::move(m));
    return;
  }
  if (u.op == UpdateItem::Op::kMonitor) {
    const LearnDecision& decision = u.processed->learn;
    if (decision.drop_subspace_reference) monitor_.DropSubspaceReference();
    if (decision.shift_model_channels != 0.0 && learner_ && learner_->Model()->spectra_seen > 0) {
      learner_->ShiftChannels(decision.shift_model_channels);
      InstallModel(learner_->Model(), u.processed->item.batch->meta.series_id);
      log_->info("model shifted by {:.3f} channels to follow the energy axis", decision.shift_model_channels);
    }
    // After a correction an existing reference is re-expressed on the corrected axis (taken anew).
    if (decision.take_subspace_reference) {
      monitor_.TakeSubspaceReference(*Model());
    } else if (decision.shift_model_channels != 0.0) {
      monitor_.ModelReexpressed(*Model());
    }
    return;
  }
  if (u.op == UpdateItem::Op::kReset) {
    monitor_.ModelReset();
    if (learner_) learner_->Reset();
    SetModel(std::make_shared<const PcaModel>());
    learnt_since_reset_.store(0);
    restored_.store(false);
    metrics_.model_rank.Set(0);
    metrics_.model_version.Set(0);
    log_->info("model reset");
    return;
  }
  const SpectrumBatch& b = *u.processed->item.batch;
  if (frozen_.load()) {
    metrics_.model_spectra_skipped.Increment(static_cast<double>(b.Spectra()));
    return;
  }
  const double t0 = NowSteady();
  if (b.Channels() == unusable_channels_) {
    metrics_.model_spectra_skipped.Increment(static_cast<double>(b.Spectra()));
    return;
  }
  if (!learner_ || learner_->channels() != b.Channels()) {
    if (learner_ && restored_.load()) {
      log_->error("series '{}': {}-channel spectra, but the initial model has {} channels: it is dropped and "
                  "learning starts afresh", b.meta.series_id, b.Channels(), learner_->channels());
    } else if (learner_) {
      log_->warn("channel count changed {} -> {}: model restarts", learner_->channels(), b.Channels());
    }
    learnt_since_reset_.store(0);
    restored_.store(false);
    learner_.reset();
    if (const std::string problem = options_.pca.ChannelProblem(b.Channels()); !problem.empty()) {
      log_->error("series '{}': no model for {}-channel spectra: {}; spectra pass through undenoised",
                  b.meta.series_id, b.Channels(), problem);
      metrics_.model_spectra_skipped.Increment(static_cast<double>(b.Spectra()));
      unusable_channels_ = b.Channels();
      return;
    }
    WeightingOptions weighting = options_.weighting_options;
    weighting.enabled = options_.weighting == Weighting::kPoisson ||
                        (options_.weighting == Weighting::kAuto && b.meta.integer_counts);
    learner_ = std::make_unique<StreamingModel>(b.Channels(), options_.pca, weighting);
    log_->info("model for {}-channel spectra: {} weighting, rank {}{}", b.Channels(),
               weighting.enabled ? "Poisson" : "no", options_.pca.auto_rank ? "automatic up to " : "",
               options_.pca.rank);
  }
  const uint64_t refreshes_before = learner_->weight_refreshes();
  Learn(b, u.processed->learn);
  metrics_.model_weight_refreshes.Increment(static_cast<double>(learner_->weight_refreshes() - refreshes_before));
  InstallModel(learner_->Model(), b.meta.series_id);
  if (learner_->weight_refreshes() != refreshes_before) monitor_.ModelReexpressed(*Model());
  const uint32_t learnt = static_cast<uint32_t>(b.Spectra()) - u.processed->learn.excluded;
  metrics_.model_spectra.Increment(static_cast<double>(learnt));
  metrics_.model_spectra_excluded.Increment(static_cast<double>(u.processed->learn.excluded));
  monitor_.AfterModelUpdate(*Model(), learnt, b.meta.series_id, u.processed->learn);
  const double t1 = NowSteady();
  metrics_.Latency(Stage::kModelUpdate).Observe(t1 - t0);
  // when_idle keeps the update within its CPU budget: after an update of t seconds, the next frame is
  // offered t * (1/budget - 1) seconds later.
  next_offer_s_.store(t1 + (t1 - t0) * (1.0 / options_.model_update_budget - 1.0));
  learnt_since_reset_ += static_cast<uint64_t>(b.Spectra());  // last: status readers see a settled model
}

void Pipeline::Learn(const SpectrumBatch& b, const LearnDecision& decision) {
  if (!decision.learn) {
    learner_->Add(b.counts);
    return;
  }
  // Novel spectra (and provisional outliers while calibrating) are never learnt: the model must not absorb
  // the discovery it is there to reveal.
  const std::vector<uint8_t>& mask = *decision.learn;
  learn_columns_.resize(b.Channels(), b.Spectra() - static_cast<Eigen::Index>(decision.excluded));
  Eigen::Index kept = 0;
  for (int i = 0; i < b.Spectra(); ++i) {
    if (mask[static_cast<size_t>(i)]) learn_columns_.col(kept++) = b.counts.col(i);
  }
  if (kept > 0) learner_->Add(learn_columns_.leftCols(kept));
}

void Pipeline::InstallModel(std::shared_ptr<const PcaModel> model, const std::string& series_id) {
  const auto previous = Model();
  if (model == previous) return;  // Add() that only buffered: same version
  if (options_.denoised_payload == DenoisedPayload::kScores) {
    // Queued before the model can be used: every "denoised" message using it is queued (and so published)
    // after its snapshot, so a subscriber always holds the eigenspectra its scores refer to.
    OutMessage m;
    m.kind = OutMessage::Kind::kSnapshotRequest;
    m.reason = "model_update";
    m.model = model;
    out_.Push(std::move(m));
  }
  // Queued before the model is installed, so before any denoised message that uses the new rank.
  if (previous->spectra_seen > 0 && model->spectra_seen > 0 && previous->rank != model->rank &&
      previous->mean.size() == model->mean.size() && model->version > previous->version) {
    PublishRankChange(*previous, *model, series_id);
  }
  metrics_.model_rank.Set(model->rank);
  metrics_.model_version.Set(static_cast<double>(model->version));
  SetModel(std::move(model));
}

void Pipeline::PublishRankChange(const PcaModel& before, const PcaModel& after, const std::string& series_id) {
  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(series_id);
  auto* c = env->mutable_rank_change();
  c->set_old_rank(static_cast<uint32_t>(before.rank));
  c->set_new_rank(static_cast<uint32_t>(after.rank));
  c->set_model_version(after.version);
  c->set_spectra_seen(after.spectra_seen);
  c->set_rank_threshold(after.rank_threshold);
  c->set_noise_sigma(after.noise_sigma);
  c->set_auto_rank(options_.pca.auto_rank);
  c->set_rank_hysteresis(options_.pca.rank_hysteresis);
  const int tracked = static_cast<int>(after.singular_values.size());
  const int first = std::max(0, std::min(before.rank, after.rank) - 2);
  const int end = std::min(tracked, std::max(before.rank, after.rank) + 2);
  c->set_first_index(static_cast<uint32_t>(first));
  for (int i = first; i < end; ++i) c->add_singular_values(after.singular_values[i]);
  metrics_.model_rank_changes.Increment();
  log_->info("model rank {} -> {} at version {} (threshold {:.4g}, noise sigma {:.4g})", before.rank, after.rank,
             after.version, after.rank_threshold, after.noise_sigma);
  OutMessage m;
  m.topic = "model";
  m.envelope = std::move(env);
  out_.Push(std::move(m));
}

}  // namespace specwatch::server
