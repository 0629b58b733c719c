#include "server/dose_stage.hpp"

#include "results.pb.h"

#include "server/clock.hpp"

#include <algorithm>

namespace specwatch::server {

DoseStage::DoseStage(const ServiceOptions& options, ServiceMetrics& metrics, OutputQueue& out,
                     std::shared_ptr<spdlog::logger> log)
    : options_(options),
      metrics_(metrics),
      out_(out),
      log_(std::move(log)),
      advisor_(options.advice),
      damage_(options.damage),
      budget_(options.dose_budget) {
  ledger_.StartSeries(ScanShape{}, budget_);
}

void DoseStage::StartSeries(const stream::SeriesInfo& series) {
  series_id_ = series.id;
  axis_ = series.energy_axis;
  std::optional<DoseBudget> requested;
  {
    std::lock_guard lock(mutex_);
    std::swap(requested, requested_);
  }
  if (requested) budget_ = *requested;  // set before the series started: its budget
  ledger_.StartSeries(series.scan_shape, budget_);
  advisor_.StartSeries(series.scan_shape);
  damage_.StartSeries(series.scan_shape, static_cast<int>(series.channel_count));
  metrics_.damage_critical_dose.Set(0.0);
  metrics_.damage_affected_positions.Set(0.0);
  last_codes_.clear();
  advice_version_ = 0;
  UpdateGauges();
}

void DoseStage::RequestBudget(const DoseBudget& budget) {
  std::lock_guard lock(mutex_);
  requested_ = budget;
}

DoseSnapshot DoseStage::Snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

std::shared_ptr<const wire::AcquisitionAdvice> DoseStage::LatestAdvice() const {
  std::lock_guard lock(mutex_);
  return latest_advice_;
}

void DoseStage::Observe(const SpectrumBatch& b, std::span<const uint8_t> novel) {
  alarms_.clear();
  std::optional<DoseBudget> requested;
  {
    std::lock_guard lock(mutex_);
    std::swap(requested, requested_);
  }
  if (b.meta.series_id != series_id_) {  // a frame of a series whose start never came through here
    stream::SeriesInfo s;
    s.id = b.meta.series_id;
    s.scan_shape = b.meta.scan_shape;
    s.channel_count = static_cast<uint32_t>(b.Channels());
    s.energy_axis = b.meta.energy_axis;
    StartSeries(s);
  } else if (ledger_.shape().Positions() == 0 && b.meta.scan_shape.Positions() > 0) {
    // The scan shape became known from a frame header: positions are laid out from here on.
    ledger_.SetShape(b.meta.scan_shape);
    advisor_.SetShape(b.meta.scan_shape);
    damage_.SetShape(b.meta.scan_shape, b.Channels());
    log_->info("series '{}': dose map laid out on the scan shape {}x{} from a frame header", series_id_,
               b.meta.scan_shape.width, b.meta.scan_shape.height);
  }
  if (requested) {
    budget_ = *requested;
    ledger_.SetBudget(*requested, &alarms_);
    log_->info("series '{}': dose budget set to {:.6g} e-/A^2 per position, {:.6g} e-/A^2 per run (warning at {:.0f} %)",
               series_id_, requested->position_e_per_A2, requested->run_e_per_A2, 100 * requested->warning_fraction);
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
        PublishDamage(*r, b.meta.frame_number, b.meta.acquisition_time_s);
      }
    }
  }
  last_frame_number_ = b.meta.frame_number;
  last_time_s_ = b.meta.acquisition_time_s;
  ledger_.AddFrame(static_cast<uint64_t>(b.Spectra()), b.positions, dose, b.meta.dwell_s, &alarms_);
  last_positions_ = b.positions;
  last_dose_ = dose > 0.0 ? dose : 0.0;
  last_spectra_ = static_cast<uint64_t>(b.Spectra());
  if (!alarms_.empty()) PublishAlarms(alarms_, b.meta.frame_number, b.meta.acquisition_time_s);
  for (size_t i = 0; i < novel.size() && i < b.positions.size(); ++i) {
    if (novel[i]) advisor_.MarkNovel(b.positions[i]);
  }
  UpdateGauges();
  if (advisor_.shape().Positions() > 0 && NowSteady() >= next_advice_s_) Advise("change", 0, false);
}

void DoseStage::Advise(const std::string& trigger, uint32_t pass, bool force) {
  next_advice_s_ = NowSteady() + options_.advice.min_interval_s;
  const AdviceMap map = advisor_.Advise(ledger_);
  std::string codes(map.tiles.size(), '\0');
  for (size_t t = 0; t < map.tiles.size(); ++t) codes[t] = static_cast<char>(map.tiles[t].advice);
  if (!force && codes == last_codes_) return;
  last_codes_ = codes;
  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(series_id_);
  auto* a = env->mutable_advice();
  a->set_width(map.shape.width);
  a->set_height(map.shape.height);
  a->set_tile_px(map.tile_px);
  a->set_tiles_x(map.tiles_x);
  a->set_tiles_y(map.tiles_y);
  a->set_tile_codes(codes);
  for (uint32_t ty = 0; ty < map.tiles_y; ++ty) {
    for (uint32_t tx = 0; tx < map.tiles_x; ++tx) {
      const TileVerdict& v = map.tiles[size_t{ty} * map.tiles_x + tx];
      if (v.advice == TileAdvice::kContinue) continue;
      auto* t = a->add_tiles();
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
  a->set_continue_tiles(map.Count(TileAdvice::kContinue));
  a->set_revisit_tiles(map.Count(TileAdvice::kRevisit));
  a->set_skip_tiles(map.Count(TileAdvice::kSkip));
  a->set_dose_per_spectrum_e_per_a2(ledger_.last_dose_per_spectrum_e_per_A2());
  a->set_revisit_dose_e_per_a2(map.revisit_dose_e_per_A2);
  a->set_trigger(trigger);
  a->set_scan_pass(pass);
  a->set_version(++advice_version_);
  {
    std::lock_guard lock(mutex_);
    latest_advice_ = std::make_shared<const wire::AcquisitionAdvice>(*a);
  }
  OutMessage m;
  m.topic = "advice";
  m.envelope = std::move(env);
  out_.Push(std::move(m));
}

void DoseStage::PublishAlarms(const std::vector<DoseAlarm>& alarms, uint64_t frame_number, double time_s) {
  for (const DoseAlarm& a : alarms) {
    auto env = std::make_shared<wire::Envelope>();
    env->set_series_id(series_id_);
    auto* w = env->mutable_dose_alarm();
    w->set_level(ToString(a.level));
    w->set_scope(a.run ? "run" : "position");
    w->set_budget_e_per_a2(a.budget_e_per_A2);
    w->set_threshold_e_per_a2(a.threshold_e_per_A2);
    for (size_t i = 0; i < a.positions.size(); ++i) {
      auto* p = w->add_positions();
      p->set_x(a.positions[i].x);
      p->set_y(a.positions[i].y);
      p->set_scan_pass(a.positions[i].pass);
      w->add_position_dose_e_per_a2(a.doses_e_per_A2[i]);
    }
    w->set_run_dose_e_per_a2(a.run_dose_e_per_A2);
    w->set_frame_number(frame_number);
    w->set_acquisition_time_s(time_s);
    metrics_.DoseAlarms(ToString(a.level), a.run ? "run" : "position")
        .Increment(a.run ? 1.0 : static_cast<double>(a.positions.size()));
    if (a.run) {
      log_->warn("series '{}': run dose {:.6g} e-/A^2 reached the {} of {:.6g} e-/A^2", series_id_, a.run_dose_e_per_A2,
                 a.level == DoseLevel::kWarning ? "warning level" : "budget", a.budget_e_per_A2);
    } else {
      log_->warn("series '{}': {} scan positions reached the dose {} ({:.6g} e-/A^2 of a {:.6g} budget), first ({}, {})",
                 series_id_, a.positions.size(), a.level == DoseLevel::kWarning ? "warning level" : "budget",
                 a.threshold_e_per_A2, a.budget_e_per_A2, a.positions.front().x, a.positions.front().y);
    }
    OutMessage m;
    m.topic = "dose";
    m.envelope = std::move(env);
    out_.Push(std::move(m));
  }
}

void DoseStage::PublishMap(uint32_t pass, const std::string& closed_by, const std::string& series_id) {
  const ScanShape& shape = ledger_.shape();
  if (shape.Positions() == 0 || series_id != series_id_) return;
  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(series_id_);
  auto* w = env->mutable_dose_map();
  w->set_width(shape.width);
  w->set_height(shape.height);
  w->set_scan_pass(pass);
  w->set_closed_by(closed_by);
  auto values = std::make_shared<std::vector<double>>(ledger_.position_dose());
  double run = ledger_.run_dose_e_per_A2();
  uint64_t spectra = ledger_.spectra();
  if (closed_by == "next_pass") {  // the frame that closed the pass belongs to the next one
    for (const ScanPosition& p : last_positions_) {
      if (p.x < shape.width && p.y < shape.height) (*values)[static_cast<size_t>(p.y) * shape.width + p.x] -= last_dose_;
    }
    run -= last_dose_ * static_cast<double>(last_spectra_);
    spectra -= last_spectra_;
  }
  w->set_run_dose_e_per_a2(run);
  w->set_max_position_dose_e_per_a2(values->empty() ? 0.0 : *std::max_element(values->begin(), values->end()));
  w->set_dose_per_spectrum_e_per_a2(ledger_.last_dose_per_spectrum_e_per_A2());
  w->set_dose_rate_e_per_a2_per_s(ledger_.dose_rate_e_per_A2_per_s());
  const DoseBudget& budget = ledger_.budget();
  w->set_position_budget_e_per_a2(budget.position_e_per_A2);
  w->set_run_budget_e_per_a2(budget.run_e_per_A2);
  w->set_warning_fraction(budget.warning_fraction);
  w->set_positions_over_warning(ledger_.positions_over_warning());
  w->set_positions_over_limit(ledger_.positions_over_limit());
  w->set_spectra(spectra);
  w->set_spectra_without_dose(ledger_.spectra_without_dose());
  OutMessage m;
  m.topic = "dose";
  m.envelope = std::move(env);
  m.payload = stream::Payload{values, values->data(), values->size() * sizeof(double)};
  out_.Push(std::move(m));
  if (damage_.warned()) PublishDamage(damage_.Report(), last_frame_number_, last_time_s_);
  Advise("pass", pass, true);
}

void DoseStage::PublishDamage(const DamageReport& r, uint64_t frame_number, double time_s) {
  for (const ScanPosition& p : r.affected) advisor_.MarkDamaged(p);
  auto env = std::make_shared<wire::Envelope>();
  env->set_series_id(series_id_);
  auto* w = env->mutable_damage_event();
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
  const EnergyAxis& axis = axis_;
  for (const ChangedEnergy& e : r.energies) {
    auto* x = w->add_energies();
    x->set_first_channel(static_cast<uint32_t>(e.first_channel));
    x->set_last_channel(static_cast<uint32_t>(e.last_channel));
    x->set_energy_low(axis.offset + axis.dispersion * e.first_channel);
    x->set_energy_high(axis.offset + axis.dispersion * e.last_channel);
    x->set_mean_change_sd(e.mean_change_sd);
    x->set_z(e.z);
  }
  w->set_affected_positions(r.affected_positions);
  for (size_t i = 0; i < r.affected.size() && i < 4096; ++i) {
    auto* p = w->add_newly_affected();
    p->set_x(r.affected[i].x);
    p->set_y(r.affected[i].y);
    p->set_scan_pass(r.affected[i].pass);
  }
  w->set_tracked_stride(damage_.stride());
  w->set_frame_number(frame_number);
  w->set_acquisition_time_s(time_s);
  if (r.warning) {
    metrics_.damage_warnings.Increment();
    log_->warn("series '{}': beam damage: spectra change with dose at visit {} ({:.4g} e-/A^2, z {:.1f}); critical dose "
               "{:.4g} e-/A^2 [{:.4g}, {:.4g}]", series_id_, r.group.visit, r.group.dose_start + r.group.dose_width,
               r.group.z, r.fit.critical_dose_e_per_A2, r.fit.lower_e_per_A2, r.fit.upper_e_per_A2);
  }
  if (r.fit.ok) metrics_.damage_critical_dose.Set(r.fit.critical_dose_e_per_A2);
  metrics_.damage_affected_positions.Set(static_cast<double>(r.affected_positions));
  OutMessage m;
  m.topic = "damage";
  m.envelope = std::move(env);
  out_.Push(std::move(m));
}

void DoseStage::UpdateGauges() {
  metrics_.dose_run.Set(ledger_.run_dose_e_per_A2());
  metrics_.dose_max_position.Set(ledger_.max_position_dose_e_per_A2());
  metrics_.dose_rate.Set(ledger_.dose_rate_e_per_A2_per_s());
  metrics_.dose_positions_over_warning.Set(static_cast<double>(ledger_.positions_over_warning()));
  metrics_.dose_positions_over_limit.Set(static_cast<double>(ledger_.positions_over_limit()));
  std::lock_guard lock(mutex_);
  snapshot_.run_dose_e_per_A2 = ledger_.run_dose_e_per_A2();
  snapshot_.max_position_dose_e_per_A2 = ledger_.max_position_dose_e_per_A2();
  snapshot_.budget = ledger_.budget();
}

}  // namespace specwatch::server
