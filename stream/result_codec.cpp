#include "stream/result_codec.hpp"

#include <cmath>
#include <type_traits>

namespace specwatch::stream {
namespace {

template <typename T>
Payload OwnedPayload(std::shared_ptr<std::vector<T>> values) {
  const void* data = values->data();
  const size_t bytes = values->size() * sizeof(T);
  return Payload{std::move(values), data, bytes};
}

void SetPosition(const ScanPosition& p, wire::ScanPosition* w) {
  w->set_x(p.x);
  w->set_y(p.y);
  w->set_scan_pass(p.pass);
}

EncodedMessage Message(const char* topic, const std::string& series_id) {
  EncodedMessage m;
  m.topic = topic;
  m.envelope = std::make_shared<wire::Envelope>();
  m.envelope->set_series_id(series_id);
  return m;
}

EncodedMessage EncodeCalibration(const CalibrationEvent& c, const std::string& series_id) {
  EncodedMessage m = Message("novelty", series_id);
  auto* w = m.envelope->mutable_novelty_calibration();
  w->set_state(c.state);
  w->set_reason(c.reason);
  w->set_false_alarm_rate(c.false_alarm_rate);
  w->set_calibration_spectra(c.calibration_spectra);
  if (c.deviance) {
    w->set_deviance_threshold(c.deviance->threshold);
    w->set_deviance_tail_start(c.deviance->initial_threshold);
    w->set_deviance_tail_scale(c.deviance->scale);
    w->set_deviance_tail_shape(c.deviance->shape);
  }
  if (c.hotelling) {
    w->set_hotelling_threshold(c.hotelling->threshold);
    w->set_hotelling_tail_start(c.hotelling->initial_threshold);
    w->set_hotelling_tail_scale(c.hotelling->scale);
    w->set_hotelling_tail_shape(c.hotelling->shape);
  }
  w->set_reference_region(c.reference_region);
  return m;
}

EncodedMessage EncodeNovelty(const NoveltyEvent& n, const std::string& series_id) {
  EncodedMessage m = Message("novelty", series_id);
  auto* e = m.envelope->mutable_novelty_event();
  const NoveltyHit& hit = n.hit;
  e->set_frame_number(n.frame_number);
  e->set_spectrum_index(hit.spectrum);
  SetPosition(hit.position, e->mutable_position());
  e->set_acquisition_time_s(n.acquisition_time_s);
  e->set_trigger(hit.by_deviance && hit.by_hotelling ? "deviance+hotelling"
                 : hit.by_deviance                   ? "deviance"
                                                     : "hotelling");
  e->set_deviance_z(hit.deviance_z);
  e->set_deviance_threshold(n.deviance_threshold);
  e->set_hotelling_t2(hit.hotelling_t2);
  e->set_hotelling_threshold(n.hotelling_threshold);
  e->set_tail_probability(hit.tail_probability);
  e->set_region_id(hit.region_id);
  e->set_retrospective(n.retrospective);
  for (const ChannelShare& c : hit.contributions) {
    auto* w = e->add_contributions();
    w->set_channel(static_cast<uint32_t>(c.channel));
    w->set_energy(c.energy);
    w->set_excess_deviance(c.excess_deviance);
    w->set_counts(c.counts);
    w->set_expected(c.expected);
  }
  e->set_channel_count(static_cast<uint32_t>(n.spectra.size() / 3));
  *e->mutable_energy_axis() = ToWire(n.axis);
  e->set_rank(n.rank);
  e->set_model_version(n.model_version);
  e->set_false_alarm_rate(n.false_alarm_rate);
  m.payload = OwnedPayload(std::make_shared<std::vector<float>>(n.spectra));
  return m;
}

EncodedMessage EncodeRegion(const RegionEvent& r, const std::string& series_id) {
  EncodedMessage m = Message("novelty", series_id);
  auto* w = m.envelope->mutable_novelty_region();
  const NoveltyRegion& s = r.region;
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
  for (uint32_t id : r.merged_region_ids) w->add_merged_region_ids(id);
  m.payload = OwnedPayload(std::make_shared<std::vector<float>>(s.mean_counts));
  return m;
}

EncodedMessage EncodeDrift(const DriftEvent& e, const std::string& series_id) {
  EncodedMessage m = Message("drift", series_id);
  auto* w = m.envelope->mutable_drift_event();
  const DriftReport& d = e.report;
  w->set_kind(d.kind);
  w->set_magnitude(d.magnitude);
  w->set_unit(d.unit);
  w->set_confidence(d.confidence);
  w->set_onset_spectrum(d.onset_spectrum);
  w->set_detected_spectrum(d.detected_spectrum);
  w->set_detected_frame_number(e.frame_number);
  w->set_detected_time_s(e.time_s);
  w->set_onset_time_s(e.onset_time_s);
  if (e.kind == DriftKind::kEnergy) {
    w->set_shift_channels(d.shift_channels);
    w->set_shift_energy(d.shift_channels * e.axis.dispersion);
    w->set_total_shift_channels(d.total_shift_channels);
    w->set_corrected(d.corrected);
  }
  for (double a : e.angles_deg) w->add_angles_deg(a);
  w->set_model_version(e.model_version);
  *w->mutable_energy_axis() = ToWire(e.axis);
  return m;
}

EncodedMessage EncodeDoseAlarm(const DoseAlarmEvent& e, const std::string& series_id) {
  EncodedMessage m = Message("dose", series_id);
  auto* w = m.envelope->mutable_dose_alarm();
  const DoseAlarm& a = e.alarm;
  w->set_level(ToString(a.level));
  w->set_scope(a.run ? "run" : "position");
  w->set_budget_e_per_a2(a.budget_e_per_A2);
  w->set_threshold_e_per_a2(a.threshold_e_per_A2);
  for (size_t i = 0; i < a.positions.size(); ++i) {
    SetPosition(a.positions[i], w->add_positions());
    w->add_position_dose_e_per_a2(a.doses_e_per_A2[i]);
  }
  w->set_run_dose_e_per_a2(a.run_dose_e_per_A2);
  w->set_frame_number(e.frame_number);
  w->set_acquisition_time_s(e.time_s);
  return m;
}

EncodedMessage EncodeDamage(const DamageEvent& e, const std::string& series_id) {
  EncodedMessage m = Message("damage", series_id);
  auto* w = m.envelope->mutable_damage_event();
  const DamageReport& r = e.report;
  w->set_kind(r.warning ? "warning" : "update");
  w->set_visit(r.group.visit);
  w->set_positions(r.group.positions);
  w->set_mean_excess(r.group.mean_excess);
  w->set_z(r.group.z);
  w->set_dose_e_per_a2(r.group.dose_start + r.group.dose_width);
  w->set_critical_dose_ok(r.fit.ok);
  w->set_critical_dose_e_per_a2(r.fit.critical_dose_e_per_A2);
  w->set_critical_dose_lower_e_per_a2(r.fit.lower_e_per_A2);
  w->set_critical_dose_upper_e_per_a2(r.fit.upper_e_per_A2);
  w->set_groups(r.fit.groups);
  for (const ChangedEnergy& c : r.energies) {
    auto* x = w->add_energies();
    x->set_first_channel(static_cast<uint32_t>(c.first_channel));
    x->set_last_channel(static_cast<uint32_t>(c.last_channel));
    x->set_energy_low(e.axis.offset + e.axis.dispersion * c.first_channel);
    x->set_energy_high(e.axis.offset + e.axis.dispersion * c.last_channel);
    x->set_mean_change_sd(c.mean_change_sd);
    x->set_z(c.z);
  }
  w->set_affected_positions(r.affected_positions);
  for (size_t i = 0; i < r.affected.size() && i < 4096; ++i) SetPosition(r.affected[i], w->add_newly_affected());
  w->set_tracked_stride(e.tracked_stride);
  w->set_frame_number(e.frame_number);
  w->set_acquisition_time_s(e.time_s);
  return m;
}

EncodedMessage EncodeResidualMap(const ResidualMapEvent& e, const std::string& series_id) {
  EncodedMessage m = Message("residual_map", series_id);
  auto* r = m.envelope->mutable_residual_map();
  const PassMap& map = e.map;
  r->set_width(map.shape.width);
  r->set_height(map.shape.height);
  r->set_scan_pass(map.pass);
  r->set_statistic(map.statistic);
  r->set_closed_by(map.closed_by);
  r->set_positions_scored(map.positions_scored);
  r->set_spectra(map.spectra);
  r->set_spectra_unscored(map.spectra_unscored);
  r->set_spectra_outside(map.spectra_outside);
  const RobustSummary& s = map.summary;
  r->set_median(s.median);
  r->set_robust_sigma(s.robust_sigma);
  r->set_outlier_threshold(s.outlier_threshold);
  r->set_outliers(s.outliers);
  r->set_max(s.max);
  r->set_first_frame_number(map.first_frame);
  r->set_last_frame_number(map.last_frame);
  r->set_model_version(map.model_version);
  r->set_novel_positions(map.novel_positions);
  r->set_novelty_threshold(e.novelty_threshold);
  m.payload = OwnedPayload(std::make_shared<std::vector<float>>(map.values));
  return m;
}

EncodedMessage EncodeDoseMap(const DoseMapEvent& e, const std::string& series_id) {
  EncodedMessage m = Message("dose", series_id);
  auto* w = m.envelope->mutable_dose_map();
  w->set_width(e.shape.width);
  w->set_height(e.shape.height);
  w->set_scan_pass(e.scan_pass);
  w->set_closed_by(e.closed_by);
  w->set_run_dose_e_per_a2(e.run_dose_e_per_A2);
  w->set_max_position_dose_e_per_a2(e.max_position_dose_e_per_A2);
  w->set_dose_per_spectrum_e_per_a2(e.dose_per_spectrum_e_per_A2);
  w->set_dose_rate_e_per_a2_per_s(e.dose_rate_e_per_A2_per_s);
  w->set_position_budget_e_per_a2(e.budget.position_e_per_A2);
  w->set_run_budget_e_per_a2(e.budget.run_e_per_A2);
  w->set_warning_fraction(e.budget.warning_fraction);
  w->set_positions_over_warning(e.positions_over_warning);
  w->set_positions_over_limit(e.positions_over_limit);
  w->set_spectra(e.spectra);
  w->set_spectra_without_dose(e.spectra_without_dose);
  m.payload = OwnedPayload(std::make_shared<std::vector<double>>(e.position_dose_e_per_A2));
  return m;
}

EncodedMessage EncodeRankChange(const RankChangeEvent& e, const std::string& series_id) {
  EncodedMessage m = Message("model", series_id);
  auto* c = m.envelope->mutable_rank_change();
  c->set_old_rank(e.old_rank);
  c->set_new_rank(e.new_rank);
  c->set_model_version(e.model_version);
  c->set_spectra_seen(e.spectra_seen);
  c->set_rank_threshold(e.rank_threshold);
  c->set_noise_sigma(e.noise_sigma);
  c->set_auto_rank(e.auto_rank);
  c->set_rank_hysteresis(e.rank_hysteresis);
  c->set_first_index(e.first_index);
  for (double s : e.singular_values) c->add_singular_values(s);
  return m;
}

}  // namespace

wire::EnergyAxis ToWire(const EnergyAxis& a) {
  wire::EnergyAxis w;
  w.set_offset(a.offset);
  w.set_dispersion(a.dispersion);
  w.set_unit(a.unit);
  return w;
}

EncodedMessage ResultCodec::Denoised(const SpectrumBatch& b, const FrameScoresPtr& scores) const {
  EncodedMessage m = Message("denoised", b.meta.series_id);
  const DenoiseResult& result = scores->result;
  const bool usable = scores->Usable();
  auto* d = m.envelope->mutable_denoised();
  d->set_frame_number(b.meta.frame_number);
  d->set_spectrum_count(static_cast<uint32_t>(b.Spectra()));
  d->set_channel_count(static_cast<uint32_t>(b.Channels()));
  d->mutable_positions()->Reserve(b.Spectra());
  for (const auto& pos : b.positions) SetPosition(pos, d->add_positions());
  d->mutable_residual_norm()->Add(result.residual_norm.data(), result.residual_norm.data() + result.residual_norm.size());
  *d->mutable_energy_axis() = ToWire(b.meta.energy_axis);
  d->set_rank(scores->Rank());
  d->set_model_version(scores->ModelVersion());
  d->mutable_scores()->Add(result.scores.data(), result.scores.data() + result.scores.size());
  if (usable) {
    d->mutable_residual_chi2()->Add(result.residual_chi2.data(), result.residual_chi2.data() + result.residual_chi2.size());
    d->mutable_hotelling_t2()->Add(result.hotelling_t2.data(), result.hotelling_t2.data() + result.hotelling_t2.size());
  }
  if (usable && scores->weighted) {
    d->mutable_deviance_z()->Add(result.deviance_z.data(), result.deviance_z.data() + result.deviance_z.size());
    d->mutable_spectrum_scale()->Reserve(b.Spectra());
    for (float total : result.totals) d->add_spectrum_scale(std::sqrt(total));
  }
  const bool omitted = usable && omit_denoised_spectra_;
  d->set_spectra_omitted(omitted);
  d->set_scan_pass(b.positions.empty() ? 0 : b.positions.front().pass);
  d->set_acquisition_time_s(b.meta.acquisition_time_s);
  if (!omitted) {
    m.payload = Payload{scores, result.denoised.data(), static_cast<size_t>(result.denoised.size()) * sizeof(float)};
  }
  return m;
}

wire::AcquisitionAdvice ResultCodec::Advice(const AdviceEvent& e) {
  wire::AcquisitionAdvice a;
  const AdviceMap& map = e.map;
  a.set_width(map.shape.width);
  a.set_height(map.shape.height);
  a.set_tile_px(map.tile_px);
  a.set_tiles_x(map.tiles_x);
  a.set_tiles_y(map.tiles_y);
  a.set_tile_codes(e.tile_codes);
  for (uint32_t ty = 0; ty < map.tiles_y; ++ty) {
    for (uint32_t tx = 0; tx < map.tiles_x; ++tx) {
      const TileVerdict& v = map.tiles[size_t{ty} * map.tiles_x + tx];
      if (v.advice == TileAdvice::kContinue) continue;
      auto* t = a.add_tiles();
      t->set_tile_x(tx);
      t->set_tile_y(ty);
      t->set_advice(ToString(v.advice));
      t->set_reason(v.reason);
      t->set_novel_positions(v.novel_positions);
      t->set_damaged_positions(v.damaged_positions);
      t->set_max_dose_e_per_a2(v.max_dose_e_per_A2);
      t->set_remaining_e_per_a2(v.remaining_e_per_A2);
    }
  }
  a.set_continue_tiles(map.Count(TileAdvice::kContinue));
  a.set_revisit_tiles(map.Count(TileAdvice::kRevisit));
  a.set_skip_tiles(map.Count(TileAdvice::kSkip));
  a.set_dose_per_spectrum_e_per_a2(e.dose_per_spectrum_e_per_A2);
  a.set_revisit_dose_e_per_a2(map.revisit_dose_e_per_A2);
  a.set_trigger(e.trigger == AdviceTrigger::kPass ? "pass" : "change");
  a.set_scan_pass(e.scan_pass);
  a.set_version(e.version);
  return a;
}

std::optional<EncodedMessage> ResultCodec::Encode(const SeriesEvent& se) const {
  const std::string& id = se.series_id;
  return std::visit(
      [&](const auto& e) -> std::optional<EncodedMessage> {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, CalibrationEvent>) {
          return EncodeCalibration(e, id);
        } else if constexpr (std::is_same_v<T, NoveltyEvent>) {
          return EncodeNovelty(e, id);
        } else if constexpr (std::is_same_v<T, RegionEvent>) {
          return EncodeRegion(e, id);
        } else if constexpr (std::is_same_v<T, DriftEvent>) {
          return EncodeDrift(e, id);
        } else if constexpr (std::is_same_v<T, DoseAlarmEvent>) {
          return EncodeDoseAlarm(e, id);
        } else if constexpr (std::is_same_v<T, DamageEvent>) {
          return EncodeDamage(e, id);
        } else if constexpr (std::is_same_v<T, AdviceEvent>) {
          EncodedMessage m = Message("advice", id);
          *m.envelope->mutable_advice() = Advice(e);
          return m;
        } else if constexpr (std::is_same_v<T, ResidualMapEvent>) {
          return EncodeResidualMap(e, id);
        } else if constexpr (std::is_same_v<T, DoseMapEvent>) {
          return EncodeDoseMap(e, id);
        } else if constexpr (std::is_same_v<T, RankChangeEvent>) {
          return EncodeRankChange(e, id);
        } else {
          return std::nullopt;  // DenoisedFrameEvent, ModelVersionEvent, SnapshotDueEvent, Notice
        }
      },
      se.event);
}

std::shared_ptr<std::vector<float>> FillSnapshot(const PcaModel& model, const std::string& reason,
                                                 const EnergyAxis& energy_axis, wire::ModelSnapshot* s) {
  *s->mutable_energy_axis() = ToWire(energy_axis);
  const int rank = model.rank;
  const auto channels = model.mean.size();
  s->set_rank(static_cast<uint32_t>(rank));
  s->set_channel_count(static_cast<uint32_t>(channels));
  for (int i = 0; i < rank; ++i) s->add_singular_values(model.singular_values[i]);
  const Eigen::VectorXd explained = model.ExplainedVarianceRatio();
  for (int i = 0; i < rank && i < explained.size(); ++i) s->add_explained_variance(explained[i]);
  s->set_spectra_seen(model.spectra_seen);
  s->set_effective_memory(model.effective_memory);
  s->set_model_version(model.version);
  s->set_reason(reason);
  s->set_poisson_weighted(model.Weighted());
  s->set_noise_sigma(model.noise_sigma);
  s->set_rank_threshold(model.rank_threshold);
  s->set_tracked_components(static_cast<uint32_t>(model.basis.cols()));
  for (Eigen::Index i = 0; i < model.singular_values.size(); ++i) {
    s->add_tracked_singular_values(model.singular_values[i]);
  }
  s->set_total_variance(model.total_variance);
  if (model.Weighted()) {
    s->mutable_channel_scale()->Add(model.channel_scale.data(), model.channel_scale.data() + channels);
  }
  auto data = std::make_shared<std::vector<float>>(static_cast<size_t>((1 + rank) * channels));
  if (channels > 0) {
    Eigen::Map<Eigen::VectorXf> mean(data->data(), channels);
    Eigen::Map<Eigen::MatrixXf> eigenspectra(data->data() + channels, channels, rank);
    mean = model.mean;
    eigenspectra = model.basis.leftCols(rank);
    if (model.Weighted()) {  // back to counts (per sqrt(total counts)): results.proto, ModelSnapshot
      mean.array() *= model.channel_scale.array();
      eigenspectra.array().colwise() *= model.channel_scale.array();
    }
  }
  return data;
}

wire::Status EncodeStatus(const StatusFacts& f) {
  wire::Status s;
  s.set_state(f.state);
  s.set_series_id(f.series_id);
  s.set_series_started(f.series_started);
  s.set_frames_received(f.frames_received);
  s.set_spectra_received(f.spectra_received);
  s.set_spectra_published(f.spectra_published);
  s.set_frames_rejected(f.frames_rejected);
  s.set_spectra_rejected(f.spectra_rejected);
  s.set_sequence_gaps(f.sequence_gaps);
  s.set_rank(f.rank);
  s.set_model_version(f.model_version);
  s.set_uptime_s(f.uptime_s);
  for (const auto& [topic, count] : f.published) {
    auto* t = s.add_published();
    t->set_topic(topic);
    t->set_published(count);
  }
  s.set_frames_in_flight(f.frames_in_flight);
  s.set_spectra_in_model(f.spectra_in_model);
  s.set_publisher_epoch(f.publisher_epoch);
  s.set_model_spectra_skipped(f.model_spectra_skipped);
  const SessionStatus& m = f.session;
  s.set_novelty_state(m.novelty_state);
  s.set_novelty_threshold(m.novelty_threshold);
  s.set_novel_spectra(m.novel_spectra);
  s.set_energy_shift_channels(m.energy_shift_channels);
  s.set_subspace_angle_deg(m.subspace_angle_deg);
  s.set_dose_run_e_per_a2(m.run_dose_e_per_A2);
  s.set_dose_max_position_e_per_a2(m.max_position_dose_e_per_A2);
  s.set_dose_position_budget_e_per_a2(m.budget.position_e_per_A2);
  s.set_dose_run_budget_e_per_a2(m.budget.run_e_per_A2);
  return s;
}

EncodedMessage StatusMessage(const StatusFacts& facts) {
  EncodedMessage m = Message("status", facts.series_id);
  *m.envelope->mutable_status() = EncodeStatus(facts);
  return m;
}

EncodedMessage SnapshotMessage(const PcaModel& model, const std::string& reason, const std::string& series_id,
                               const EnergyAxis& axis) {
  EncodedMessage m = Message("snapshot", series_id);
  m.payload = OwnedPayload(FillSnapshot(model, reason, axis, m.envelope->mutable_snapshot()));
  return m;
}

}  // namespace specwatch::stream
