#include "server/monitor_stage.hpp"

#include "server/pipeline.hpp"

#include <algorithm>
#include <cmath>

namespace specwatch::server {
namespace {

wire::EnergyAxis AxisToWire(const EnergyAxis& a) {
  wire::EnergyAxis w;
  w.set_offset(a.offset);
  w.set_dispersion(a.dispersion);
  w.set_unit(a.unit);
  return w;
}

double StateValue(const std::string& state) {
  if (state == "calibrating") return 1;
  if (state == "monitoring") return 2;
  if (state == "absorbing") return 3;
  return 0;
}

}  // namespace

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

MonitorStage::MonitorStage(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
                           std::shared_ptr<spdlog::logger> log)
    : options_(options),
      metrics_(metrics),
      out_(out),
      log_(std::move(log)),
      enabled_(options.monitor.novelty || options.monitor.energy || options.monitor.statistics ||
               options.subspace_drift_enabled),
      subspace_(options.subspace_drift) {
  if (enabled_) monitor_ = std::make_unique<OperandoMonitor>(options.monitor);
}

void MonitorStage::StartSeries(const stream::SeriesInfo& series) {
  if (!enabled_) return;
  series_id_ = series.id;
  axis_ = series.energy_axis;
  frame_times_.Clear();
  MonitorSeries s;
  s.channels = static_cast<int>(series.channel_count);
  s.modality = series.modality;
  s.energy_axis = series.energy_axis;
  s.scan_shape = series.scan_shape;
  // A pending RECALIBRATE (with its reference region) applies to the new series, at its first frame.
  model_reset_pending_.store(false);
  output_.Clear();
  monitor_->StartSeries(s, &output_);
  PublishCalibrations(output_, series_id_);
  UpdateGauges();
}

void MonitorStage::RequestRecalibrate(std::optional<ScanRect> reference) {
  std::lock_guard lock(request_mutex_);
  recalibrate_pending_ = true;
  recalibrate_region_ = reference;
}

void MonitorStage::ApplyPending(MonitorOutput* out) {
  if (model_reset_pending_.exchange(false)) monitor_->ModelReset(out);
  bool recalibrate = false;
  std::optional<ScanRect> region;
  {
    std::lock_guard lock(request_mutex_);
    std::swap(recalibrate, recalibrate_pending_);
    region = recalibrate_region_;
  }
  if (recalibrate) monitor_->Recalibrate(region, "request", out);
}

LearnDecision MonitorStage::Observe(const DenoisedItem& p) {
  LearnDecision decision;
  if (!enabled_) return decision;
  const SpectrumBatch& b = *p.item.batch;
  if (b.meta.series_id != series_id_ || b.Channels() != static_cast<int>(monitor_->series().channels)) {
    // A frame of a series whose start never came through the graph (or a channel count change).
    stream::SeriesInfo s;
    s.id = b.meta.series_id;
    s.modality = b.meta.modality;
    s.channel_count = static_cast<uint32_t>(b.Channels());
    s.energy_axis = b.meta.energy_axis;
    s.scan_shape = b.meta.scan_shape;
    StartSeries(s);
  }
  MonitorOutput& out = output_;
  out.Clear();
  MonitorOutput pending;
  ApplyPending(&pending);
  PublishCalibrations(pending, series_id_);

  const DenoiseResult& r = *p.result;
  MonitorFrame f{.frame_number = b.meta.frame_number,
                 .acquisition_time_s = b.meta.acquisition_time_s,
                 .positions = b.positions,
                 .counts = b.counts,
                 .result = p.result.get(),
                 .scored = p.weighted && r.scores.rows() > 0,
                 .model_version = p.envelope->denoised().model_version(),
                 .rank = static_cast<int>(r.scores.rows()),
                 .model = p.model,
                 .summed_counts = p.frame_sum ? p.frame_sum.get() : nullptr};
  decision.series_spectrum = monitor_->spectra();
  decision.acquisition_time_s = b.meta.acquisition_time_s;
  decision.frame_number = b.meta.frame_number;
  frame_times_.Add(decision.series_spectrum, b.meta.acquisition_time_s);
  monitor_->Observe(f, &out);
  Publish(p, out);

  const uint32_t excluded =
      static_cast<uint32_t>(std::count(out.learn.begin(), out.learn.end(), uint8_t{0}));
  if (excluded > 0) {
    decision.learn = std::make_shared<const std::vector<uint8_t>>(out.learn);
    decision.excluded = excluded;
  }
  if (out.novel_count > 0) decision.novel = std::make_shared<const std::vector<uint8_t>>(out.novel);
  decision.shift_model_channels = out.shift_model_channels;
  decision.take_subspace_reference = out.take_subspace_reference;
  decision.drop_subspace_reference = out.drop_subspace_reference;
  UpdateGauges();
  return decision;
}

void MonitorStage::Publish(const DenoisedItem& p, const MonitorOutput& out) {
  const SpectrumBatch& b = *p.item.batch;
  const auto& den = p.envelope->denoised();
  const int d = b.Channels();
  const DenoiseResult& r = *p.result;
  const NoveltyDetector& detector = monitor_->detector();
  if (out.novel_count > 0) metrics_.novelty_spectra.Increment(out.novel_count);
  for (const NoveltyHit& hit : out.events) {
    auto env = std::make_shared<wire::Envelope>();
    env->set_series_id(series_id_);
    auto* e = env->mutable_novelty_event();
    e->set_frame_number(b.meta.frame_number);
    e->set_spectrum_index(hit.spectrum);
    e->mutable_position()->set_x(hit.position.x);
    e->mutable_position()->set_y(hit.position.y);
    e->mutable_position()->set_scan_pass(hit.position.pass);
    e->set_acquisition_time_s(b.meta.acquisition_time_s);
    e->set_trigger(hit.by_deviance && hit.by_hotelling ? "deviance+hotelling"
                   : hit.by_deviance                   ? "deviance"
                                                       : "hotelling");
    e->set_deviance_z(hit.deviance_z);
    e->set_deviance_threshold(detector.deviance_fit().threshold);
    e->set_hotelling_t2(hit.hotelling_t2);
    e->set_hotelling_threshold(options_.monitor.detector.use_hotelling ? detector.hotelling_fit().threshold : 0.0);
    e->set_tail_probability(hit.tail_probability);
    e->set_region_id(hit.region_id);
    for (const ChannelShare& c : hit.contributions) {
      auto* w = e->add_contributions();
      w->set_channel(static_cast<uint32_t>(c.channel));
      // The frame's axis (the series' unless the frame states its own).
      w->set_energy(b.meta.energy_axis.offset + b.meta.energy_axis.dispersion * c.channel);
      w->set_excess_deviance(c.excess_deviance);
      w->set_counts(c.counts);
      w->set_expected(c.expected);
    }
    e->set_channel_count(static_cast<uint32_t>(d));
    *e->mutable_energy_axis() = AxisToWire(b.meta.energy_axis);
    e->set_rank(den.rank());
    e->set_model_version(den.model_version());
    e->set_false_alarm_rate(options_.monitor.detector.false_alarm_rate);
    auto payload = std::make_shared<std::vector<float>>(3 * static_cast<size_t>(d));
    const auto raw = b.counts.col(hit.spectrum);
    const auto rec = r.denoised.col(hit.spectrum);
    std::copy(raw.data(), raw.data() + d, payload->begin());
    std::copy(rec.data(), rec.data() + d, payload->begin() + d);
    for (int j = 0; j < d; ++j) (*payload)[2 * d + j] = raw(j) - rec(j);
    OutMessage m;
    m.topic = "novelty";
    m.envelope = std::move(env);
    m.payload = stream::Payload{payload, payload->data(), payload->size() * sizeof(float)};
    m.token = p.item.token;
    out_.Push(std::move(m));
    metrics_.novelty_events.Increment();
    log_->info("series '{}': novelty at ({}, {}) pass {}, frame {}: deviance z {:.2f} (threshold {:.2f}), T2 {:.1f}, "
               "region {}", series_id_, hit.position.x, hit.position.y, hit.position.pass, b.meta.frame_number,
               hit.deviance_z, detector.deviance_fit().threshold, hit.hotelling_t2, hit.region_id);
  }
  for (const NoveltyRegion& s : out.regions) {
    auto env = std::make_shared<wire::Envelope>();
    env->set_series_id(series_id_);
    auto* w = env->mutable_novelty_region();
    w->set_region_id(s.id);
    w->set_area_positions(s.area_positions);
    w->set_spectra(s.spectra);
    w->set_centroid_x(s.centroid_x);
    w->set_centroid_y(s.centroid_y);
    w->set_x_min(s.min_x);
    w->set_y_min(s.min_y);
    w->set_x_max(s.max_x);
    w->set_y_max(s.max_y);
    w->set_max_deviance_z(s.max_score);
    w->set_first_frame_number(s.first_frame);
    w->set_last_frame_number(s.last_frame);
    w->set_channel_count(static_cast<uint32_t>(s.mean_counts.size()));
    for (const RegionMerge& merge : out.merges) {
      if (merge.into_id == s.id) w->add_merged_region_ids(merge.absorbed_id);
    }
    auto payload = std::make_shared<std::vector<float>>(s.mean_counts);
    OutMessage m;
    m.topic = "novelty";
    m.envelope = std::move(env);
    m.payload = stream::Payload{payload, payload->data(), payload->size() * sizeof(float)};
    m.token = p.item.token;
    out_.Push(std::move(m));
  }
  PublishCalibrations(out, series_id_);
  for (const DriftReport& dr : out.drifts) {
    PublishDrift(dr, series_id_, b.meta.frame_number, b.meta.acquisition_time_s,
                 frame_times_.TimeOf(dr.onset_spectrum), den.model_version(),
                 b.meta.energy_axis, {});
  }
}

void MonitorStage::PublishCalibrations(const MonitorOutput& out, const std::string& series_id) {
  const NoveltyDetector& detector = monitor_->detector();
  for (const CalibrationReport& c : out.calibrations) {
    auto env = std::make_shared<wire::Envelope>();
    env->set_series_id(series_id);
    auto* w = env->mutable_novelty_calibration();
    w->set_state(c.state);
    w->set_reason(c.reason);
    w->set_false_alarm_rate(options_.monitor.detector.false_alarm_rate);
    w->set_calibration_spectra(options_.monitor.detector.calibration_spectra);
    if (c.state == "monitoring") {
      const TailFit& dev = detector.deviance_fit();
      w->set_deviance_threshold(dev.threshold);
      w->set_deviance_tail_start(dev.initial_threshold);
      w->set_deviance_tail_scale(dev.scale);
      w->set_deviance_tail_shape(dev.shape);
      if (options_.monitor.detector.use_hotelling) {
        const TailFit& t2 = detector.hotelling_fit();
        w->set_hotelling_threshold(t2.threshold);
        w->set_hotelling_tail_start(t2.initial_threshold);
        w->set_hotelling_tail_scale(t2.scale);
        w->set_hotelling_tail_shape(t2.shape);
      }
    }
    w->set_reference_region(monitor_->reference_region().has_value());
    log_->info("series '{}': novelty {} ({}){}", series_id, c.state, c.reason,
               c.state == "monitoring" ? fmt::format(": deviance z threshold {:.3f}, T2 threshold {:.3f}",
                                                     w->deviance_threshold(), w->hotelling_threshold())
                                       : std::string());
    OutMessage m;
    m.topic = "novelty";
    m.envelope = std::move(env);
    out_.Push(std::move(m));
  }
}

void MonitorStage::PublishDrift(const DriftReport& d, const std::string& series_id, uint64_t frame_number,
                                double time_s, double onset_time_s, uint64_t model_version, const EnergyAxis& axis,
                                const std::vector<double>& angles) {
  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(series_id);
  auto* w = env->mutable_drift_event();
  w->set_kind(d.kind);
  w->set_magnitude(d.magnitude);
  w->set_unit(d.unit);
  w->set_confidence(d.confidence);
  w->set_onset_spectrum(d.onset_spectrum);
  w->set_detected_spectrum(d.detected_spectrum);
  w->set_detected_frame_number(frame_number);
  w->set_detected_time_s(time_s);
  w->set_onset_time_s(onset_time_s);
  if (d.kind == "energy") {
    w->set_shift_channels(d.shift_channels);
    w->set_shift_energy(d.shift_channels * axis.dispersion);
    w->set_total_shift_channels(d.total_shift_channels);
    w->set_corrected(d.corrected);
  }
  for (double a : angles) w->add_angles_deg(a);
  w->set_model_version(model_version);
  *w->mutable_energy_axis() = AxisToWire(axis);
  metrics_.DriftEvents(d.kind).Increment();
  log_->warn("series '{}': drift '{}' of {:.4g} {} (confidence {:.3g}), onset at spectrum {}, reported at {}{}",
             series_id, d.kind, d.magnitude, d.unit, d.confidence, d.onset_spectrum, d.detected_spectrum,
             d.corrected ? "; the model follows the shift" : "");
  OutMessage m;
  m.topic = "drift";
  m.envelope = std::move(env);
  out_.Push(std::move(m));
}

void MonitorStage::AfterModelUpdate(const PcaModel& model, uint64_t spectra_learnt, const std::string& series_id,
                                    const LearnDecision& decision) {
  if (!options_.subspace_drift_enabled || !subspace_reference_) return;
  learnt_since_check_ += spectra_learnt;
  if (learnt_since_check_ < options_.subspace_check_spectra) return;
  learnt_since_check_ = 0;
  if (series_id != check_series_) {
    check_series_ = series_id;
    check_times_.Clear();
  }
  check_times_.Add(decision.series_spectrum, decision.acquisition_time_s);
  // Onset and detection as spectra of the series, like the other drift kinds.
  const auto event = subspace_.Check(model.basis, decision.series_spectrum);
  {
    std::lock_guard lock(snapshot_mutex_);
    snapshot_.subspace_angle_deg = subspace_.last_max_angle_deg();
  }
  metrics_.subspace_angle.Set(subspace_.last_max_angle_deg());
  if (!event) return;
  DriftReport d;
  d.kind = "subspace";
  d.magnitude = event->max_angle_deg;
  d.unit = "degrees";
  d.confidence = event->max_angle_deg / options_.subspace_drift.threshold_deg;
  d.onset_spectrum = event->onset_spectra;
  d.detected_spectrum = decision.series_spectrum;
  std::vector<double> angles(event->angles_deg.data(), event->angles_deg.data() + event->angles_deg.size());
  PublishDrift(d, series_id, decision.frame_number, decision.acquisition_time_s,
               check_times_.TimeOf(event->onset_spectra), model.version, EnergyAxis{}, angles);
}

void MonitorStage::TakeSubspaceReference(const PcaModel& model) {
  if (!options_.subspace_drift_enabled) return;
  const int r = ReferenceRank(model, options_.subspace_drift);
  if (r < 1) return;
  subspace_.SetReference(model.basis, r);
  subspace_reference_ = true;
  learnt_since_check_ = 0;
}

void MonitorStage::ModelReset() {
  subspace_.Reset();
  subspace_reference_ = false;
  learnt_since_check_ = 0;
}

MonitorSnapshot MonitorStage::Snapshot() const {
  std::lock_guard lock(snapshot_mutex_);
  return snapshot_;
}

void MonitorStage::UpdateGauges() {
  const NoveltyDetector& detector = monitor_->detector();
  const std::string state = options_.monitor.novelty ? ToString(detector.state()) : "off";
  const double threshold = detector.state() == NoveltyState::kMonitoring ? detector.deviance_fit().threshold : 0.0;
  const double shift = monitor_->total_shift_channels();
  metrics_.novelty_state.Set(StateValue(state));
  metrics_.novelty_threshold.Set(threshold);
  metrics_.energy_shift_channels.Set(shift);
  // eV when the axis is in eV or keV (EELS, EDS); other axes (degrees, cm-1) in their own unit.
  metrics_.energy_shift_axis.Set(shift * axis_.dispersion * (axis_.unit == "keV" ? 1000.0 : 1.0));
  std::lock_guard lock(snapshot_mutex_);
  snapshot_.novelty_state = state;
  snapshot_.novelty_threshold = threshold;
  snapshot_.novel_spectra = monitor_->novel_spectra();
  snapshot_.energy_shift_channels = shift;
}

}  // namespace specwatch::server
