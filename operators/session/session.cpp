#include "operators/session/session.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace specwatch {
namespace {

std::string Format(const char* format, auto... args) {
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, format, args...);
  return buffer;
}

const PcaModel& NothingLearnt() {
  static const PcaModel kNothingLearnt;  // Denoise passes the data through unchanged
  return kNothingLearnt;
}

}  // namespace

DriftKind DriftKindOf(const std::string& kind) {
  if (kind == "energy") return DriftKind::kEnergy;
  if (kind == "subspace") return DriftKind::kSubspace;
  if (kind == "statistics") return DriftKind::kStatistics;
  if (kind == "new_phase") return DriftKind::kNewPhase;
  return DriftKind::kOther;
}

void SessionOptions::Validate() const {
  // Channel-dependent limits (rank + oversample <= channels) are a property of the data: asked when a model for
  // a channel count is made (SubspaceOptions::ChannelProblem).
  ValidateMember("pca", [&] { pca.Validate(); });
  ValidateMember("weighting_options", [&] { weighting_options.Validate(); });
  ValidateMember("monitor", [&] { monitor.Validate(); });
  ValidateMember("subspace_drift", [&] { subspace_drift.Validate(); });
  RequireOption(subspace_check_spectra >= 1, "subspace_check_spectra", ">= 1", subspace_check_spectra);
  ValidateMember("dose_budget", [&] { dose_budget.Validate(); });
  ValidateMember("advice", [&] { advice.Validate(); });
  ValidateMember("damage", [&] { damage.Validate(); });
}

void FrameTimes::Add(uint64_t first_spectrum, double time_s) {
  if (!frames_.empty() && first_spectrum < frames_.back().first) frames_.clear();  // a new series
  frames_.emplace_back(first_spectrum, time_s);
  if (frames_.size() > capacity_) frames_.pop_front();
}

double FrameTimes::TimeOf(uint64_t spectrum) const {
  if (frames_.empty()) return 0.0;
  auto it = std::upper_bound(frames_.begin(), frames_.end(), spectrum,
                             [](uint64_t s, const std::pair<uint64_t, double>& f) { return s < f.first; });
  if (it == frames_.begin()) return frames_.front().second;
  return std::prev(it)->second;
}

Session::Session(SessionOptions options, std::shared_ptr<const PcaModel> initial_model)
    : options_((options.Validate(), std::move(options))),
      model_(std::make_shared<const PcaModel>()),
      retrospective_(options_.monitor.retrospective),
      advisor_(options_.advice),
      damage_(options_.damage),
      budget_(options_.dose_budget),
      subspace_(options_.subspace_drift) {
  if (options_.Monitoring()) monitor_ = std::make_unique<OperandoMonitor>(options_.monitor);
  ledger_.StartSeries(ScanShape{}, budget_);
  status_.budget = budget_;
  current_ = model_;
  if (initial_model) {
    WeightingOptions weighting = options_.weighting_options;
    weighting.enabled = initial_model->Weighted();
    learner_ = std::make_unique<StreamingModel>(static_cast<int>(initial_model->mean.size()), options_.pca,
                                                weighting);
    learner_->Restore(*initial_model);
    restored_.store(true);
    current_ = learner_->Model();
    std::lock_guard lock(model_mutex_);
    model_ = current_;
  }
}

// ------------------------------------------------------------------------------------------------ any thread

FrameScoresPtr Session::Score(const SpectrumBatch& b) const {
  auto s = std::make_shared<FrameScores>();
  auto model = Model();
  const bool usable = (learnt_since_reset_.load() >= options_.warmup_spectra || restored_.load()) &&
                      model->spectra_seen > 0 && model->mean.size() == b.Channels();
  Denoise(usable ? *model : NothingLearnt(), b.counts, &s->result);
  if (usable) {
    s->weighted = model->Weighted();
    s->model = std::move(model);
  }
  if (monitor_ && options_.monitor.energy) {
    // Column by column: each add is one vectorised pass over a spectrum (rowwise().sum() would stride).
    Eigen::VectorXf sum = Eigen::VectorXf::Zero(b.Channels());
    for (int i = 0; i < b.Spectra(); ++i) sum += b.counts.col(i);
    s->frame_sum = sum.cast<double>();
  }
  return s;
}

SessionStatus Session::Status() const {
  std::lock_guard lock(status_mutex_);
  SessionStatus s = status_;
  s.subspace_angle_deg = subspace_angle_deg_;
  return s;
}

std::shared_ptr<const AdviceEvent> Session::LatestAdvice() const {
  std::lock_guard lock(status_mutex_);
  return latest_advice_;
}

ModelWork Session::RequestReset() {
  monitor_reset_pending_.store(true);
  ModelWork w;
  w.kind = ModelWork::Kind::kReset;
  return w;
}

bool Session::RequestRecalibrate(std::optional<ScanRect> reference) {
  if (!options_.monitor.novelty) return false;
  std::lock_guard lock(request_mutex_);
  recalibrate_pending_ = true;
  recalibrate_region_ = reference;
  return true;
}

void Session::RequestDoseBudget(const DoseBudget& budget) {
  std::lock_guard lock(request_mutex_);
  requested_budget_ = budget;
}

// ------------------------------------------------------------------------------------------------ consume side

void Session::Note(SessionStep* step, Notice::Level level, std::string text) {
  step->events.push_back({series_.id, Notice{level, std::move(text)}});
}

SessionStep Session::StartSeries(const SeriesInfo& series, double now_s) {
  if (!std::isnan(now_s)) now_s_ = now_s;
  SessionStep step;
  step.events.push_back({series.id, Notice{Notice::Level::kInfo,
                                           Format("series '%s' started: %u channels, scan %ux%u, %u passes",
                                                  series.id.c_str(), series.channel_count, series.scan_shape.width,
                                                  series.scan_shape.height, series.passes)}});
  BeginSeries(series, &step);
  return step;
}

void Session::BeginSeries(const SeriesInfo& series, SessionStep* step) {
  if (options_.reset_model_on_new_series) step->model_work.push_back(RequestReset());
  EmitPassEnd(residual_maps_.Close("new_series"), step);  // the previous series' open pass
  retrospective_.Clear();
  warned_no_scan_shape_ = false;
  series_ = series;
  series_open_ = true;
  MonitorStart(series, step);
  DoseStart(series);
  UpdateStatus();
}

SessionStep Session::Consume(const BatchPtr& batch, const FrameScoresPtr& scores, double now_s) {
  SessionStep step;
  now_s_ = now_s;
  const SpectrumBatch& b = *batch;
  if (!series_open_ || b.meta.series_id != series_.id) {
    // A frame of a series whose start message never came: its header says what it can.
    SeriesInfo s;
    s.id = b.meta.series_id;
    s.modality = b.meta.modality;
    s.channel_count = static_cast<uint32_t>(b.Channels());
    s.energy_axis = b.meta.energy_axis;
    s.scan_shape = b.meta.scan_shape;
    step.events.push_back({s.id, Notice{Notice::Level::kWarn,
                                        Format("series '%s': frame %llu arrived without a series start; working "
                                               "from frame headers alone",
                                               s.id.c_str(), static_cast<unsigned long long>(b.meta.frame_number))}});
    BeginSeries(s, &step);
  }
  // Novelty and drift first: they decide what the model may learn from this frame, and their events leave
  // before the frame's own denoised message.
  ModelWork work;
  work.kind = ModelWork::Kind::kFrame;
  work.series_id = b.meta.series_id;
  work.batch = batch;
  work.frame_number = b.meta.frame_number;
  work.acquisition_time_s = b.meta.acquisition_time_s;
  MonitorFrame(b, *scores, &work, &step);
  work.learn = !frozen_.load();
  if (!work.learn) step.model_spectra_skipped += work.Spectra();
  const std::shared_ptr<const std::vector<uint8_t>> novel =
      monitor_ && monitor_out_.novel_count > 0 ? std::make_shared<const std::vector<uint8_t>>(monitor_out_.novel)
                                               : nullptr;
  step.novel = novel;
  // The model moves with an energy correction: spectra kept from before it would score as misaligned.
  if (monitor_out_.shift_model_channels != 0.0) retrospective_.Clear();
  KeepCandidates(b, *scores);
  if (work.learn || work.HasMonitorOps()) step.model_work.push_back(std::move(work));
  step.events.push_back({b.meta.series_id, DenoisedFrameEvent{b.meta.frame_number,
                                                              static_cast<uint64_t>(b.Spectra())}});
  DoseFrame(b, novel ? std::span<const uint8_t>(*novel) : std::span<const uint8_t>(), now_s, &step);
  MapResiduals(b, *scores, novel.get(), &step);  // after the frame's own message: a map holds published values
  UpdateStatus();
  return step;
}

SessionStep Session::EndSeries(const SeriesEndInfo& end, double now_s) {
  if (!std::isnan(now_s)) now_s_ = now_s;
  SessionStep step;
  EmitPassEnd(residual_maps_.Close("series_end"), &step);
  ModelWork w;
  w.kind = ModelWork::Kind::kSeriesEnd;
  w.series_id = end.id;
  step.model_work.push_back(std::move(w));
  return step;
}

SessionStep Session::CloseMaps(const std::string& reason, double now_s) {
  if (!std::isnan(now_s)) now_s_ = now_s;
  SessionStep step;
  EmitPassEnd(residual_maps_.Close(reason), &step);
  return step;
}

// --- the monitor

void Session::MonitorStart(const SeriesInfo& series, SessionStep* step) {
  if (!monitor_) return;
  frame_times_.Clear();
  MonitorSeries s;
  s.channels = static_cast<int>(series.channel_count);
  s.modality = series.modality;
  s.energy_axis = series.energy_axis;
  s.scan_shape = series.scan_shape;
  // A pending RECALIBRATE (with its reference region) applies to the new series, at its first frame.
  monitor_reset_pending_.store(false);
  monitor_out_.Clear();
  monitor_->StartSeries(s, &monitor_out_);
  EmitCalibrations(monitor_out_, step);
}

void Session::MonitorFrame(const SpectrumBatch& b, const FrameScores& s, ModelWork* work, SessionStep* step) {
  if (!monitor_) return;
  if (b.Channels() != monitor_->series().channels) {
    // A channel count change within the series: the monitor starts over on the new spectra.
    // From the frame's header, as at an inferred series start.
    series_.modality = b.meta.modality;
    series_.channel_count = static_cast<uint32_t>(b.Channels());
    series_.energy_axis = b.meta.energy_axis;
    series_.scan_shape = b.meta.scan_shape;
    MonitorStart(series_, step);
  }
  MonitorOutput pending;
  if (monitor_reset_pending_.exchange(false)) {
    monitor_->ModelReset(&pending);
    retrospective_.Clear();
  }
  bool recalibrate = false;
  std::optional<ScanRect> region;
  {
    std::lock_guard lock(request_mutex_);
    std::swap(recalibrate, recalibrate_pending_);
    region = recalibrate_region_;
  }
  if (recalibrate) monitor_->Recalibrate(region, "request", &pending);
  EmitCalibrations(pending, step);

  MonitorOutput& out = monitor_out_;
  out.Clear();
  const DenoiseResult& r = s.result;
  ::specwatch::MonitorFrame f{.frame_number = b.meta.frame_number,
                              .acquisition_time_s = b.meta.acquisition_time_s,
                              .positions = b.positions,
                              .counts = b.counts,
                              .result = &r,
                              .scored = s.weighted && r.scores.rows() > 0,
                              .model_version = s.ModelVersion(),
                              .rank = static_cast<int>(r.scores.rows()),
                              .model = s.model,
                              .summed_counts = s.frame_sum ? &*s.frame_sum : nullptr};
  work->series_spectrum = monitor_->spectra();
  frame_times_.Add(work->series_spectrum, b.meta.acquisition_time_s);
  // Read before the frame moves them (a refresh, a completed calibration): what its spectra were judged by.
  const double deviance_threshold = monitor_->deviance_threshold();
  const double hotelling_threshold = monitor_->hotelling_threshold();
  monitor_->Observe(f, &out);

  // Events: novelty hits, regions, calibrations, drift, in that order.
  step->novel_spectra += out.novel_count;
  for (const NoveltyHit& hit : out.events) {
    // The thresholds in force when the frame was scored against them (the provisional one while calibrating).
    step->events.push_back({series_.id, MakeNoveltyEvent(hit, b.meta.frame_number, b.meta.acquisition_time_s,
                                                         b.meta.energy_axis, b.counts.col(hit.spectrum),
                                                         r.denoised.col(hit.spectrum), deviance_threshold,
                                                         hotelling_threshold, s.Rank(), s.ModelVersion(), step)});
  }
  EmitRegions(out, step);
  EmitCalibrations(out, step);
  for (const DriftReport& dr : out.drifts) {
    DriftEvent e;
    e.kind = DriftKindOf(dr.kind);
    e.report = dr;
    e.frame_number = b.meta.frame_number;
    e.time_s = b.meta.acquisition_time_s;
    e.onset_time_s = frame_times_.TimeOf(dr.onset_spectrum);
    e.model_version = s.ModelVersion();
    e.axis = b.meta.energy_axis;
    step->events.push_back({series_.id, Notice{Notice::Level::kWarn,
                                               Format("series '%s': drift '%s' of %.4g %s (confidence %.3g), onset at "
                                                      "spectrum %llu, reported at %llu%s",
                                                      series_.id.c_str(), dr.kind.c_str(), dr.magnitude,
                                                      dr.unit.c_str(), dr.confidence,
                                                      static_cast<unsigned long long>(dr.onset_spectrum),
                                                      static_cast<unsigned long long>(dr.detected_spectrum),
                                                      dr.corrected ? "; the model follows the shift" : "")}});
    step->events.push_back({series_.id, std::move(e)});
  }

  const uint32_t excluded = static_cast<uint32_t>(std::count(out.learn.begin(), out.learn.end(), uint8_t{0}));
  if (excluded > 0) {
    work->learn_mask = std::make_shared<const std::vector<uint8_t>>(out.learn);
    work->excluded = excluded;
  }
  work->shift_model_channels = out.shift_model_channels;
  work->take_subspace_reference = out.take_subspace_reference;
  work->drop_subspace_reference = out.drop_subspace_reference;
}

NoveltyEvent Session::MakeNoveltyEvent(const NoveltyHit& hit, uint64_t frame_number, double acquisition_time_s,
                                       const EnergyAxis& axis, const Eigen::Ref<const Eigen::VectorXf>& raw,
                                       const Eigen::Ref<const Eigen::VectorXf>& rec, double deviance_threshold,
                                       double hotelling_threshold, uint32_t rank, uint64_t model_version,
                                       SessionStep* step) {
  NoveltyEvent e;
  e.frame_number = frame_number;
  e.acquisition_time_s = acquisition_time_s;
  e.hit = hit;
  // The threshold the spectrum was judged by (a provisional one may be refreshed within its frame).
  e.deviance_threshold = hit.deviance_threshold > 0.0 ? hit.deviance_threshold : deviance_threshold;
  e.hotelling_threshold = hotelling_threshold;
  e.false_alarm_rate = options_.monitor.detector.false_alarm_rate;
  e.axis = axis;  // the frame's (the series' unless the frame states its own)
  for (ChannelShare& c : e.hit.contributions) c.energy = e.axis.offset + e.axis.dispersion * c.channel;
  e.rank = rank;
  e.model_version = model_version;
  const auto d = static_cast<size_t>(raw.size());
  e.spectra.resize(3 * d);
  std::copy(raw.data(), raw.data() + d, e.spectra.begin());
  std::copy(rec.data(), rec.data() + d, e.spectra.begin() + static_cast<std::ptrdiff_t>(d));
  for (size_t j = 0; j < d; ++j) e.spectra[2 * d + j] = raw(static_cast<Eigen::Index>(j)) - rec(static_cast<Eigen::Index>(j));
  step->events.push_back({series_.id, Notice{Notice::Level::kInfo,
                                             Format("series '%s': novelty at (%u, %u) pass %u, frame %llu: "
                                                    "deviance z %.2f (threshold %.2f), T2 %.1f, region %u",
                                                    series_.id.c_str(), hit.position.x, hit.position.y,
                                                    hit.position.pass, static_cast<unsigned long long>(frame_number),
                                                    hit.deviance_z, e.deviance_threshold, hit.hotelling_t2,
                                                    hit.region_id)}});
  return e;
}

void Session::KeepCandidates(const SpectrumBatch& b, const FrameScores& s) {
  if (!monitor_ || !options_.monitor.novelty || !options_.monitor.retrospective.enabled) return;
  if (s.Usable() && !s.weighted) return;  // no deviance score for this data, now or at the pass end
  const OutlierGuard& guard = monitor_->guard();
  const bool standardised = std::isfinite(guard.bound());
  if (standardised && unranked_scored_) {
    // Those scored before the standardisation existed, kept as the live ones are: what the model did not
    // explain well.
    retrospective_.RankScored(guard.location(), guard.scale(), options_.monitor.retrospective.candidate_sigma);
    unranked_scored_ = false;
  }
  const double sigma = options_.monitor.retrospective.candidate_sigma;
  const auto m = static_cast<size_t>(b.Spectra());
  for (size_t i = 0; i < m && i < b.positions.size(); ++i) {
    if (monitor_out_.novel.size() == m && monitor_out_.novel[i]) continue;
    // Let through as common: learnt on purpose (a phase the model was catching up with), not a miss.
    if (monitor_out_.released.size() == m && monitor_out_.released[i]) continue;
    RetrospectiveCandidate c;
    c.priority = std::numeric_limits<double>::infinity();
    if (s.Usable() && static_cast<size_t>(s.result.deviance_z.size()) == m) {
      c.live_z = s.result.deviance_z(static_cast<Eigen::Index>(i));
      if (standardised) {
        c.priority = (c.live_z - guard.location()) / guard.scale();
        if (!(c.priority > sigma)) continue;
      } else if (!options_.monitor.guard.enabled) {
        continue;  // scored, and there will be no standardisation to rank it by (guard off): not kept
      } else {
        unranked_scored_ = true;  // scored before the provisional threshold's first scores: ranked once it exists
      }
    }
    c.position = b.positions[i];
    c.frame_number = b.meta.frame_number;
    c.spectrum_index = static_cast<uint32_t>(i);
    c.acquisition_time_s = b.meta.acquisition_time_s;
    c.counts = b.counts.col(static_cast<Eigen::Index>(i));
    retrospective_.Offer(std::move(c));
  }
}

void Session::ScoreRetrospectively(PassMap* map, SessionStep* step) {
  std::vector<RetrospectiveCandidate> candidates = retrospective_.Take(map->pass);
  if (!monitor_ || candidates.empty()) return;
  const std::shared_ptr<const PcaModel> model = Model();
  if (!model || !model->Weighted() || model->spectra_seen <= 0.0 || model->rank <= 0) return;
  const auto d = model->mean.size();
  std::vector<RetrospectiveCandidate> usable;
  for (RetrospectiveCandidate& c : candidates) {
    if (c.counts.size() == d) usable.push_back(std::move(c));  // a channel-count change leaves the others behind
  }
  const auto m = static_cast<Eigen::Index>(usable.size());
  if (m == 0) return;
  CountsMatrix counts(d, m);
  std::vector<ScanPosition> positions(usable.size());
  std::vector<uint64_t> frames(usable.size());
  for (Eigen::Index i = 0; i < m; ++i) {
    const RetrospectiveCandidate& c = usable[static_cast<size_t>(i)];
    counts.col(i) = c.counts;
    positions[static_cast<size_t>(i)] = c.position;
    frames[static_cast<size_t>(i)] = c.frame_number;
  }
  DenoiseResult r;
  Denoise(*model, counts, &r);
  const double deviance_threshold = monitor_->deviance_threshold();
  monitor_->Rescore(positions, frames, counts, r, model.get(), &retrospective_out_);
  const MonitorOutput& out = retrospective_out_;
  // The map carries the pass-end scores of what was scored again.
  const uint32_t width = map->shape.width;
  const bool mapped = map->statistic == "deviance_z" && !map->values.empty();
  for (Eigen::Index i = 0; i < m; ++i) {
    const ScanPosition& p = positions[static_cast<size_t>(i)];
    if (!mapped || p.x >= width || p.y >= map->shape.height) continue;
    float& v = map->values[static_cast<size_t>(p.y) * width + p.x];
    if (std::isnan(v)) ++map->positions_scored;
    v = r.deviance_z(i);
    map->novel_positions += out.novel[static_cast<size_t>(i)];
  }
  if (mapped) map->summary = SummariseRobust(map->values, residual_maps_.outlier_sigma());
  if (out.novel_count > 0) UpdateStatus();
  step->novel_spectra += out.novel_count;
  for (const NoveltyHit& hit : out.events) {
    const auto column = static_cast<Eigen::Index>(hit.spectrum);  // Rescore's hits index the candidates
    const RetrospectiveCandidate& c = usable[hit.spectrum];
    NoveltyEvent e = MakeNoveltyEvent(hit, c.frame_number, c.acquisition_time_s, series_.energy_axis, c.counts,
                                      r.denoised.col(column), deviance_threshold, 0.0,
                                      static_cast<uint32_t>(model->rank), model->version, step);
    e.hit.spectrum = c.spectrum_index;  // the index within its own frame
    e.retrospective = true;
    step->events.push_back({series_.id, std::move(e)});
  }
  EmitRegions(out, step);
}

void Session::EmitRegions(const MonitorOutput& out, SessionStep* step) {
  for (const NoveltyRegion& region_update : out.regions) {
    RegionEvent e;
    e.region = region_update;
    for (const RegionMerge& merge : out.merges) {
      if (merge.into_id == region_update.id) e.merged_region_ids.push_back(merge.absorbed_id);
    }
    step->events.push_back({series_.id, std::move(e)});
  }
}

void Session::EmitCalibrations(const MonitorOutput& out, SessionStep* step) {
  const NoveltyDetector& detector = monitor_->detector();
  for (const CalibrationReport& c : out.calibrations) {
    CalibrationEvent e;
    e.state = c.state;
    e.reason = c.reason;
    e.false_alarm_rate = options_.monitor.detector.false_alarm_rate;
    e.calibration_spectra = static_cast<uint64_t>(options_.monitor.detector.calibration_spectra);
    e.use_hotelling = options_.monitor.detector.use_hotelling;
    if (c.state == "monitoring") {
      e.deviance = detector.deviance_fit();
      if (e.use_hotelling) e.hotelling = detector.hotelling_fit();
    }
    e.reference_region = monitor_->reference_region().has_value();
    std::string text = Format("series '%s': novelty %s (%s)", series_.id.c_str(), c.state.c_str(), c.reason.c_str());
    if (e.deviance) {
      text += Format(": deviance z threshold %.3f, T2 threshold %.3f", e.deviance->threshold,
                     e.hotelling ? e.hotelling->threshold : 0.0);
    }
    step->events.push_back({series_.id, Notice{Notice::Level::kInfo, std::move(text)}});
    step->events.push_back({series_.id, std::move(e)});
  }
}

// --- dose, damage, advice

void Session::DoseStart(const SeriesInfo& series) {
  std::optional<DoseBudget> requested;
  {
    std::lock_guard lock(request_mutex_);
    std::swap(requested, requested_budget_);
  }
  if (requested) budget_ = *requested;  // set before the series started: its budget
  ledger_.StartSeries(series.scan_shape, budget_);
  advisor_.StartSeries(series.scan_shape);
  damage_.StartSeries(series.scan_shape, static_cast<int>(series.channel_count));
  damage_critical_dose_ = 0.0;
  damage_affected_ = 0;
  last_codes_.clear();
  advice_version_ = 0;
}

void Session::DoseFrame(const SpectrumBatch& b, std::span<const uint8_t> novel, double now_s, SessionStep* step) {
  alarms_.clear();
  std::optional<DoseBudget> requested;
  {
    std::lock_guard lock(request_mutex_);
    std::swap(requested, requested_budget_);
  }
  if (ledger_.shape().Positions() == 0 && b.meta.scan_shape.Positions() > 0) {
    // The scan shape became known from a frame header: positions are laid out from here on.
    ledger_.SetShape(b.meta.scan_shape);
    advisor_.SetShape(b.meta.scan_shape);
    damage_.SetShape(b.meta.scan_shape, b.Channels());
    Note(step, Notice::Level::kInfo,
         Format("series '%s': dose map laid out on the scan shape %ux%u from a frame header", series_.id.c_str(),
                b.meta.scan_shape.width, b.meta.scan_shape.height));
  }
  if (requested) {
    budget_ = *requested;
    ledger_.SetBudget(*requested, &alarms_);
    Note(step, Notice::Level::kInfo,
         Format("series '%s': dose budget set to %.6g e-/A^2 per position, %.6g e-/A^2 per run (warning at %.0f %%)",
                series_.id.c_str(), requested->position_e_per_A2, requested->run_e_per_A2,
                100 * requested->warning_fraction));
  }
  const double dose = DosePerSpectrum_e_per_A2(b.meta.beam_current_pA, b.meta.dwell_s, b.meta.pixel_area_A2);
  // Damage first: each spectrum with the dose its position had before this visit.
  if (damage_.tracking() && dose > 0.0) {
    const ScanShape& shape = ledger_.shape();
    for (size_t i = 0; i < b.positions.size(); ++i) {
      const ScanPosition& p = b.positions[i];
      if (p.x >= shape.width || p.y >= shape.height) continue;
      const double before = ledger_.position_dose()[size_t{p.y} * shape.width + p.x];
      if (auto r = damage_.Add(p, b.counts.col(static_cast<Eigen::Index>(i)), before, dose)) {
        EmitDamage(*r, b.meta.frame_number, b.meta.acquisition_time_s, step);
      }
    }
  }
  last_frame_number_ = b.meta.frame_number;
  last_time_s_ = b.meta.acquisition_time_s;
  ledger_.AddFrame(static_cast<uint64_t>(b.Spectra()), b.positions, dose, b.meta.dwell_s, &alarms_);
  last_positions_ = b.positions;
  last_dose_ = dose > 0.0 ? dose : 0.0;
  last_spectra_ = static_cast<uint64_t>(b.Spectra());
  for (const DoseAlarm& a : alarms_) {
    if (a.run) {
      Note(step, Notice::Level::kWarn,
           Format("series '%s': run dose %.6g e-/A^2 reached the %s of %.6g e-/A^2", series_.id.c_str(),
                  a.run_dose_e_per_A2, a.level == DoseLevel::kWarning ? "warning level" : "budget",
                  a.budget_e_per_A2));
    } else {
      Note(step, Notice::Level::kWarn,
           Format("series '%s': %zu scan positions reached the dose %s (%.6g e-/A^2 of a %.6g budget), first (%u, %u)",
                  series_.id.c_str(), a.positions.size(), a.level == DoseLevel::kWarning ? "warning level" : "budget",
                  a.threshold_e_per_A2, a.budget_e_per_A2, a.positions.front().x, a.positions.front().y));
    }
    step->events.push_back({series_.id, DoseAlarmEvent{a, b.meta.frame_number, b.meta.acquisition_time_s}});
  }
  for (size_t i = 0; i < novel.size() && i < b.positions.size(); ++i) {
    if (novel[i]) advisor_.MarkNovel(b.positions[i]);
  }
  if (advisor_.shape().Positions() > 0 && now_s >= next_advice_s_) {
    EmitAdvice(AdviceTrigger::kChange, 0, false, now_s, step);
  }
}

void Session::EmitAdvice(AdviceTrigger trigger, uint32_t pass, bool force, double now_s, SessionStep* step) {
  next_advice_s_ = now_s + options_.advice.min_interval_s;
  AdviceEvent e;
  e.map = advisor_.Advise(ledger_);
  e.tile_codes.assign(e.map.tiles.size(), '\0');
  for (size_t t = 0; t < e.map.tiles.size(); ++t) e.tile_codes[t] = static_cast<char>(e.map.tiles[t].advice);
  if (!force && e.tile_codes == last_codes_) return;
  last_codes_ = e.tile_codes;
  e.dose_per_spectrum_e_per_A2 = ledger_.last_dose_per_spectrum_e_per_A2();
  e.trigger = trigger;
  e.scan_pass = pass;
  e.version = ++advice_version_;
  {
    std::lock_guard lock(status_mutex_);
    latest_advice_ = std::make_shared<const AdviceEvent>(e);
  }
  step->events.push_back({series_.id, std::move(e)});
}

void Session::EmitDamage(const DamageReport& r, uint64_t frame_number, double time_s, SessionStep* step) {
  for (const ScanPosition& p : r.affected) advisor_.MarkDamaged(p);
  if (r.warning) {
    Note(step, Notice::Level::kWarn,
         Format("series '%s': beam damage: spectra change with dose at visit %u (%.4g e-/A^2, z %.1f); critical dose "
                "%.4g e-/A^2 [%.4g, %.4g]",
                series_.id.c_str(), static_cast<unsigned>(r.group.visit), r.group.dose_start + r.group.dose_width,
                r.group.z, r.fit.critical_dose_e_per_A2, r.fit.lower_e_per_A2, r.fit.upper_e_per_A2));
  }
  if (r.fit.ok) damage_critical_dose_ = r.fit.critical_dose_e_per_A2;
  damage_affected_ = r.affected_positions;
  step->events.push_back({series_.id, DamageEvent{r, series_.energy_axis, damage_.stride(), frame_number, time_s}});
}

void Session::EmitDoseMap(uint32_t pass, const std::string& closed_by, const std::string& series_id,
                          SessionStep* step) {
  const ScanShape& shape = ledger_.shape();
  if (shape.Positions() == 0 || series_id != series_.id) return;
  DoseMapEvent e;
  e.shape = shape;
  e.scan_pass = pass;
  e.closed_by = closed_by;
  e.position_dose_e_per_A2 = ledger_.position_dose();
  e.run_dose_e_per_A2 = ledger_.run_dose_e_per_A2();
  e.spectra = ledger_.spectra();
  if (closed_by == "next_pass") {  // the frame that closed the pass belongs to the next one
    for (const ScanPosition& p : last_positions_) {
      if (p.x < shape.width && p.y < shape.height) {
        e.position_dose_e_per_A2[static_cast<size_t>(p.y) * shape.width + p.x] -= last_dose_;
      }
    }
    e.run_dose_e_per_A2 -= last_dose_ * static_cast<double>(last_spectra_);
    e.spectra -= last_spectra_;
  }
  e.max_position_dose_e_per_A2 =
      e.position_dose_e_per_A2.empty()
          ? 0.0
          : *std::max_element(e.position_dose_e_per_A2.begin(), e.position_dose_e_per_A2.end());
  e.dose_per_spectrum_e_per_A2 = ledger_.last_dose_per_spectrum_e_per_A2();
  e.dose_rate_e_per_A2_per_s = ledger_.dose_rate_e_per_A2_per_s();
  e.budget = ledger_.budget();
  e.positions_over_warning = ledger_.positions_over_warning();
  e.positions_over_limit = ledger_.positions_over_limit();
  e.spectra_without_dose = ledger_.spectra_without_dose();
  step->events.push_back({series_.id, std::move(e)});
  if (damage_.warned()) EmitDamage(damage_.Report(), last_frame_number_, last_time_s_, step);
  // A pass end always advises (at the time of the latest frame).
  EmitAdvice(AdviceTrigger::kPass, pass, true, now_s_, step);
}

// --- residual maps

void Session::MapResiduals(const SpectrumBatch& b, const FrameScores& s, const std::vector<uint8_t>* novel,
                           SessionStep* step) {
  ResidualFrame f;
  f.shape = b.meta.scan_shape;
  f.frame_number = b.meta.frame_number;
  f.positions = b.positions;
  if (s.Usable()) {
    // Weighted (count) models: the standardised Poisson deviance, comparable across doses and channels.
    // Unweighted: the residual norm in counts (not its square, residual_chi2, whose tail is heavier).
    const Eigen::VectorXf& v = s.weighted ? s.result.deviance_z : s.result.residual_norm;
    f.values = std::span<const float>(v.data(), static_cast<size_t>(v.size()));
    f.statistic = s.weighted ? "deviance_z" : "residual_norm";
    f.model_version = s.ModelVersion();
  }
  if (novel) f.novel = *novel;
  map_series_ = b.meta.series_id;
  const uint64_t unmapped = residual_maps_.spectra_unmapped();
  std::vector<PassMap> done = residual_maps_.Add(f);
  if (residual_maps_.spectra_unmapped() > unmapped && !warned_no_scan_shape_) {
    Note(step, Notice::Level::kWarn,
         Format("series '%s': scan shape %ux%u %s: no residual maps; per-spectrum residuals stay in the denoised "
                "messages",
                b.meta.series_id.c_str(), f.shape.width, f.shape.height,
                f.shape.Positions() == 0 ? "unknown (no series start, no scan_shape in the frame headers)"
                                         : "above 16M positions"));
    warned_no_scan_shape_ = true;
  }
  for (PassMap& m : done) EmitPassEnd(std::move(m), step);
}

void Session::EmitPassEnd(std::optional<PassMap> map, SessionStep* step) {
  if (!map) return;
  ScoreRetrospectively(&*map, step);
  const uint32_t pass = map->pass;
  const std::string closed_by = map->closed_by;
  const RobustSummary& sm = map->summary;
  step->events.push_back(
      {map_series_, Notice{Notice::Level::kDebug,
                           Format("residual map, series '%s' pass %u (%s): %llu of %zu positions scored, median "
                                  "%.3g, robust sigma %.3g, %llu outliers",
                                  map_series_.c_str(), map->pass, map->closed_by.c_str(),
                                  static_cast<unsigned long long>(map->positions_scored), map->values.size(),
                                  sm.median, sm.robust_sigma, static_cast<unsigned long long>(sm.outliers))}});
  ResidualMapEvent e;
  e.novelty_threshold = monitor_ ? monitor_->deviance_threshold() : 0.0;
  e.map = std::move(*map);
  step->events.push_back({map_series_, std::move(e)});
  // The dose map of the same pass goes out with it.
  EmitDoseMap(pass, closed_by, map_series_, step);
}

void Session::UpdateStatus() {
  SessionStatus s;
  if (monitor_) {
    const NoveltyDetector& detector = monitor_->detector();
    s.novelty_state = options_.monitor.novelty ? ToString(detector.state()) : "off";
    s.novelty_threshold = options_.monitor.novelty ? monitor_->deviance_threshold() : 0.0;
    s.hotelling_threshold = options_.monitor.novelty ? monitor_->hotelling_threshold() : 0.0;
    s.novel_spectra = monitor_->novel_spectra();
    s.energy_shift_channels = monitor_->total_shift_channels();
    // eV when the axis is in eV or keV (EELS, EDS); other axes (degrees, cm-1) in their own unit.
    const EnergyAxis& axis = series_.energy_axis;
    s.energy_shift_axis_units = s.energy_shift_channels * axis.dispersion * (axis.unit == "keV" ? 1000.0 : 1.0);
  }
  s.run_dose_e_per_A2 = ledger_.run_dose_e_per_A2();
  s.max_position_dose_e_per_A2 = ledger_.max_position_dose_e_per_A2();
  s.dose_rate_e_per_A2_per_s = ledger_.dose_rate_e_per_A2_per_s();
  s.positions_over_warning = ledger_.positions_over_warning();
  s.positions_over_limit = ledger_.positions_over_limit();
  s.budget = ledger_.budget();
  s.damage_critical_dose_e_per_A2 = damage_critical_dose_;
  s.damage_affected_positions = damage_affected_;
  std::lock_guard lock(status_mutex_);
  status_ = std::move(s);
}

// ------------------------------------------------------------------------------------------------ learn side

void Session::LearnNote(ModelStep* step, const std::string& series_id, Notice::Level level, std::string text) {
  step->events.push_back({series_id, Notice{level, std::move(text)}});
}

ModelStep Session::Learn(const ModelWork& work) {
  ModelStep step;
  switch (work.kind) {
    case ModelWork::Kind::kReset:
      ResetSubspace();
      if (learner_) learner_->Reset();
      current_ = std::make_shared<const PcaModel>();
      step.model = current_;
      learnt_since_reset_.store(0);
      restored_.store(false);
      LearnNote(&step, work.series_id, Notice::Level::kInfo, "model reset");
      return step;
    case ModelWork::Kind::kSeriesEnd:
      if (learner_ && learner_->buffered() > 0 && !frozen_.load()) {
        learner_->Flush();
        NewVersion(learner_->Model(), work.series_id, &step);
      }
      // This model and this series: by the time it is published, the next series may have begun.
      step.events.push_back({work.series_id, SnapshotDueEvent{"series_end", current_}});
      return step;
    case ModelWork::Kind::kFrame:
      break;
  }
  if (work.HasMonitorOps()) ApplyMonitorOps(work, &step);
  if (work.learn) LearnFrame(work, &step);
  return step;
}

void Session::Install(const ModelStep& step) {
  if (step.model) {
    std::lock_guard lock(model_mutex_);
    model_ = step.model;
  }
  learnt_since_reset_ += step.frame_spectra;  // last: status readers see a settled model
}

void Session::ApplyMonitorOps(const ModelWork& work, ModelStep* step) {
  if (work.drop_subspace_reference) ResetSubspace();
  if (work.shift_model_channels != 0.0 && learner_ && learner_->Model()->spectra_seen > 0) {
    learner_->ShiftChannels(work.shift_model_channels);
    NewVersion(learner_->Model(), work.series_id, step);
    LearnNote(step, work.series_id, Notice::Level::kInfo,
              Format("model shifted by %.3f channels to follow the energy axis", work.shift_model_channels));
  }
  // After a correction an existing reference is re-expressed on the corrected axis (taken anew).
  if (work.take_subspace_reference) {
    TakeSubspaceReference(*current_);
  } else if (work.shift_model_channels != 0.0 && subspace_reference_) {
    TakeSubspaceReference(*current_);
  }
}

void Session::LearnFrame(const ModelWork& work, ModelStep* step) {
  const SpectrumBatch& b = *work.batch;
  const uint64_t spectra = static_cast<uint64_t>(b.Spectra());
  if (frozen_.load() || b.Channels() == unusable_channels_) {
    step->spectra_skipped += spectra;
    return;
  }
  if (!learner_ || learner_->channels() != b.Channels()) {
    if (learner_ && restored_.load()) {
      LearnNote(step, work.series_id, Notice::Level::kError,
                Format("series '%s': %d-channel spectra, but the initial model has %d channels: it is dropped and "
                       "learning starts afresh",
                       work.series_id.c_str(), b.Channels(), learner_->channels()));
    } else if (learner_) {
      LearnNote(step, work.series_id, Notice::Level::kWarn,
                Format("channel count changed %d -> %d: model restarts", learner_->channels(), b.Channels()));
    }
    learnt_since_reset_.store(0);
    restored_.store(false);
    learner_.reset();
    ResetSubspace();  // a reference of another channel count cannot be compared with (it used to throw here)
    if (const std::string problem = options_.pca.ChannelProblem(b.Channels()); !problem.empty()) {
      LearnNote(step, work.series_id, Notice::Level::kError,
                Format("series '%s': no model for %d-channel spectra: %s; spectra pass through undenoised",
                       work.series_id.c_str(), b.Channels(), problem.c_str()));
      step->spectra_skipped += spectra;
      unusable_channels_ = b.Channels();
      return;
    }
    WeightingOptions weighting = options_.weighting_options;
    weighting.enabled = options_.weighting == Weighting::kPoisson ||
                        (options_.weighting == Weighting::kAuto && b.meta.integer_counts);
    learner_ = std::make_unique<StreamingModel>(b.Channels(), options_.pca, weighting);
    LearnNote(step, work.series_id, Notice::Level::kInfo,
              Format("model for %d-channel spectra: %s weighting, rank %s%d", b.Channels(),
                     weighting.enabled ? "Poisson" : "no", options_.pca.auto_rank ? "automatic up to " : "",
                     options_.pca.rank));
  }
  const uint64_t refreshes_before = learner_->weight_refreshes();
  const uint64_t first_fit_before = learner_->first_fit_held_out();
  if (!work.learn_mask) {
    learner_->Add(b.counts);
  } else {
    // Novel spectra (and provisional outliers while calibrating) are never learnt: the model must not absorb
    // the discovery it is there to reveal.
    const std::vector<uint8_t>& mask = *work.learn_mask;
    learn_columns_.resize(b.Channels(), b.Spectra() - static_cast<Eigen::Index>(work.excluded));
    Eigen::Index kept = 0;
    for (int i = 0; i < b.Spectra(); ++i) {
      if (mask[static_cast<size_t>(i)]) learn_columns_.col(kept++) = b.counts.col(i);
    }
    if (kept > 0) learner_->Add(learn_columns_.leftCols(kept));
  }
  step->learned = true;
  step->weight_refreshes += learner_->weight_refreshes() - refreshes_before;
  if (const uint64_t held = learner_->first_fit_held_out() - first_fit_before; held > 0) {
    LearnNote(step, work.series_id, Notice::Level::kInfo,
              Format("series '%s': the first fit held out %llu spectra carrying a component of fewer than %d "
                     "spectra (scored again at the pass end)",
                     work.series_id.c_str(), static_cast<unsigned long long>(held),
                     options_.pca.min_component_support));
  }
  NewVersion(learner_->Model(), work.series_id, step);
  // A weight refresh re-expresses the model: its basis turned without any physical change.
  if (learner_->weight_refreshes() != refreshes_before && subspace_reference_) TakeSubspaceReference(*current_);
  const uint64_t learnt = spectra - work.excluded;
  step->spectra_learnt += learnt;
  step->spectra_excluded += work.excluded;
  step->frame_spectra += spectra;
  CheckSubspace(work, learnt, step);
}

void Session::NewVersion(std::shared_ptr<const PcaModel> model, const std::string& series_id, ModelStep* step) {
  const std::shared_ptr<const PcaModel> previous = current_;
  if (model == previous) return;  // Add() that only buffered: same version
  step->events.push_back({series_id, ModelVersionEvent{model}});
  if (previous->spectra_seen > 0 && model->spectra_seen > 0 && previous->rank != model->rank &&
      previous->mean.size() == model->mean.size() && model->version > previous->version) {
    RankChangeEvent c;
    c.old_rank = static_cast<uint32_t>(previous->rank);
    c.new_rank = static_cast<uint32_t>(model->rank);
    c.model_version = model->version;
    c.spectra_seen = model->spectra_seen;
    c.rank_threshold = model->rank_threshold;
    c.noise_sigma = model->noise_sigma;
    c.auto_rank = options_.pca.auto_rank;
    c.rank_hysteresis = options_.pca.rank_hysteresis;
    const int tracked = static_cast<int>(model->singular_values.size());
    const int first = std::max(0, std::min(previous->rank, model->rank) - 2);
    const int end = std::min(tracked, std::max(previous->rank, model->rank) + 2);
    c.first_index = static_cast<uint32_t>(first);
    for (int i = first; i < end; ++i) c.singular_values.push_back(model->singular_values[i]);
    LearnNote(step, series_id, Notice::Level::kInfo,
              Format("model rank %d -> %d at version %llu (threshold %.4g, noise sigma %.4g)", previous->rank,
                     model->rank, static_cast<unsigned long long>(model->version), model->rank_threshold,
                     model->noise_sigma));
    step->events.push_back({series_id, std::move(c)});
  }
  current_ = model;
  step->model = std::move(model);
}

void Session::CheckSubspace(const ModelWork& work, uint64_t spectra_learnt, ModelStep* step) {
  if (!options_.subspace_drift_enabled || !subspace_reference_) return;
  learnt_since_check_ += spectra_learnt;
  if (learnt_since_check_ < options_.subspace_check_spectra) return;
  learnt_since_check_ = 0;
  if (work.series_id != check_series_) {
    check_series_ = work.series_id;
    check_times_.Clear();
  }
  check_times_.Add(work.series_spectrum, work.acquisition_time_s);
  // Onset and detection as spectra of the series, like the other drift kinds.
  const auto event = subspace_.Check(current_->basis, work.series_spectrum);
  {
    std::lock_guard lock(status_mutex_);
    subspace_angle_deg_ = subspace_.last_max_angle_deg();
  }
  if (!event) return;
  DriftEvent e;
  e.kind = DriftKind::kSubspace;
  e.report.kind = "subspace";
  e.report.magnitude = event->max_angle_deg;
  e.report.unit = "degrees";
  e.report.confidence = event->max_angle_deg / options_.subspace_drift.threshold_deg;
  e.report.onset_spectrum = event->onset_spectra;
  e.report.detected_spectrum = work.series_spectrum;
  e.frame_number = work.frame_number;
  e.time_s = work.acquisition_time_s;
  e.onset_time_s = check_times_.TimeOf(event->onset_spectra);
  e.model_version = current_->version;
  e.angles_deg.assign(event->angles_deg.data(), event->angles_deg.data() + event->angles_deg.size());
  LearnNote(step, work.series_id, Notice::Level::kWarn,
            Format("series '%s': drift 'subspace' of %.4g degrees (confidence %.3g), onset at spectrum %llu, "
                   "reported at %llu",
                   work.series_id.c_str(), e.report.magnitude, e.report.confidence,
                   static_cast<unsigned long long>(e.report.onset_spectrum),
                   static_cast<unsigned long long>(e.report.detected_spectrum)));
  step->events.push_back({work.series_id, std::move(e)});
}

void Session::TakeSubspaceReference(const PcaModel& model) {
  if (!options_.subspace_drift_enabled) return;
  const int r = ReferenceRank(model, options_.subspace_drift);
  if (r < 1) return;
  subspace_.SetReference(model.basis, r);
  subspace_reference_ = true;
  learnt_since_check_ = 0;
}

void Session::ResetSubspace() {
  subspace_.Reset();
  subspace_reference_ = false;
  learnt_since_check_ = 0;
}

}  // namespace specwatch
