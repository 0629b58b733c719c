#include "operators/monitor/operando_monitor.hpp"

#include "operators/core/config_error.hpp"
#include "operators/core/poisson_deviance.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace specwatch {

void MonitorOptions::Validate() const {
  ValidateMember("detector", [&] { detector.Validate(); });
  ValidateMember("regions", [&] { regions.Validate(); });
  ValidateMember("guard", [&] {
    OutlierGuardOptions g = guard;
    g.false_alarm_rate = detector.false_alarm_rate;  // as the monitor builds it
    g.Validate();
  });
  ValidateMember("retrospective", [&] { retrospective.Validate(); });
  ValidateMember("energy_shift", [&] { energy_shift.Validate(); });
  ValidateMember("cusum", [&] { cusum.Validate(); });
  RequireOption(contributions >= 0 && contributions <= 4096, "contributions", "in [0, 4096]", contributions);
  RequireOption(min_model_spectra >= 0.0 && std::isfinite(min_model_spectra), "min_model_spectra", ">= 0",
                min_model_spectra);
}

void MonitorOutput::Clear() {
  learn.clear();
  novel.clear();
  released.clear();
  novel_count = 0;
  events.clear();
  regions.clear();
  merges.clear();
  drifts.clear();
  calibrations.clear();
  shift_model_channels = 0.0;
  take_subspace_reference = false;
  drop_subspace_reference = false;
}

namespace {

// A new phase is declared only after novelty has lasted longer than the energy tracker needs to confirm a step
// (a block straddling the step, then confirm_blocks blocks, plus a frame): an energy step must be told apart
// from a phase forming.
NoveltyOptions DetectorOptions(const MonitorOptions& o) {
  NoveltyOptions d = o.detector;
  if (o.energy) {
    const int confirm = (o.energy_shift.confirm_blocks + 1) * o.energy_shift.block_spectra + 256;
    d.regime_min_span_spectra = std::max(d.regime_min_span_spectra, confirm);
  }
  return d;
}

// One false-alarm rate, the user's, for the provisional threshold as for the fitted ones.
OutlierGuardOptions GuardOptions(const MonitorOptions& o) {
  OutlierGuardOptions g = o.guard;
  g.false_alarm_rate = o.detector.false_alarm_rate;
  return g;
}

}  // namespace

OperandoMonitor::OperandoMonitor(MonitorOptions options)
    : options_(std::move(options)), detector_(DetectorOptions(options_)), guard_(GuardOptions(options_)), regions_(options_.regions), cusum_(options_.cusum) {
  options_.Validate();
}

double OperandoMonitor::deviance_threshold() const {
  if (detector_.state() == NoveltyState::kMonitoring) return detector_.deviance_fit().threshold;
  if (detector_.state() == NoveltyState::kCalibrating && options_.guard.enabled && std::isfinite(guard_.bound())) {
    return guard_.bound();
  }
  return 0.0;
}

double OperandoMonitor::hotelling_threshold() const {
  return detector_.state() == NoveltyState::kMonitoring && options_.detector.use_hotelling
             ? detector_.hotelling_fit().threshold
             : 0.0;
}

void OperandoMonitor::ReportCalibration(const std::string& reason, MonitorOutput* out) {
  if (options_.novelty) out->calibrations.push_back({ToString(detector_.state()), reason});
}

void OperandoMonitor::StartSeries(const MonitorSeries& series, MonitorOutput* out) {
  series_ = series;
  spectra_ = 0;
  reference_.reset();
  regions_.Reset(series.scan_shape);
  cusum_.Reset();
  cusum_running_ = false;
  energy_.reset();
  energy_model_.reset();
  energy_offset_channels_ = 0;
  last_rank_ = -1;
  guard_.Reset();
  const double dispersion = series.energy_axis.dispersion;
  const double last = series.energy_axis.offset + dispersion * (series.channels - 1);
  const bool zlp_in_range = dispersion > 0 && series.energy_axis.offset <= 0.0 && last >= 0.0;
  correct_energy_ = options_.energy && (options_.energy_correction == EnergyCorrection::kOn ||
                                        (options_.energy_correction == EnergyCorrection::kAuto &&
                                         series.modality == Modality::kEels && zlp_in_range));
  detector_.Recalibrate();
  ReportCalibration("series_start", out);
}

void OperandoMonitor::ModelReset(MonitorOutput* out) {
  detector_.Recalibrate();
  guard_.Reset();
  regions_.Reset(series_.scan_shape);
  cusum_.Reset();
  cusum_running_ = false;
  ReportCalibration("model_reset", out);
}

void OperandoMonitor::Recalibrate(std::optional<ScanRect> reference, const std::string& reason, MonitorOutput* out) {
  reference_ = reference;
  detector_.Recalibrate();
  cusum_.Reset();
  cusum_running_ = false;
  ReportCalibration(reason, out);
}

void OperandoMonitor::Observe(const MonitorFrame& frame, MonitorOutput* out) {
  out->Clear();
  const size_t m = static_cast<size_t>(frame.counts.cols());
  out->learn.assign(m, 1);
  out->novel.assign(m, 0);
  // Energy first: a step confirmed by this frame explains the novelty it caused (ClearRegimeWindow) before that
  // novelty can count as a new phase.
  if (options_.energy) ObserveEnergy(frame, out);
  if (options_.novelty) ObserveNovelty(frame, out);
  if (options_.statistics) ObserveStatistics(frame, out);
  spectra_ += m;
}

void OperandoMonitor::ObserveNovelty(const MonitorFrame& frame, MonitorOutput* out) {
  if (!frame.scored || frame.result == nullptr) return;  // no model to be novel against yet
  const DenoiseResult& r = *frame.result;
  const size_t m = static_cast<size_t>(frame.counts.cols());
  // Until the fitted thresholds are in force, the guard's provisional threshold flags rare outliers: held out of
  // the model and of the calibration, and published. While they are, it only follows the scores.
  const bool mature = frame.model && frame.model->spectra_seen >= options_.min_model_spectra;
  if (mature && last_rank_ >= 0 && frame.rank != last_rank_) {
    // T² has one term per component and z another reconstruction: the fitted thresholds no longer hold. The
    // guard's provisional threshold is in force from this frame on.
    detector_.Recalibrate();
    cusum_.Reset();
    cusum_running_ = false;
    ReportCalibration("rank_change", out);
  }
  if (mature) last_rank_ = frame.rank;
  const bool guarding = detector_.state() == NoveltyState::kCalibrating;
  guarded_.assign(m, 0);
  out->released.assign(m, 0);
  for (size_t i = 0; i < m; ++i) {
    const float z = r.deviance_z[static_cast<Eigen::Index>(i)];
    if (!std::isfinite(z)) continue;
    if (!guarding) {
      // A first visit that reaches a phase the model has yet to learn is unexplored ground, not a change: it is
      // learnt as the guard would let it through, not flagged by the detector (whose regime logic is for
      // revisits: a phase forming where the scan has been before).
      const bool common = guard_.Track(z, detector_.state() == NoveltyState::kMonitoring
                                              ? detector_.deviance_fit().threshold
                                              : std::numeric_limits<double>::infinity());
      out->released[i] = common && i < frame.positions.size() && frame.positions[i].pass == 0;
    } else {
      const double bound = guard_.bound();  // the one this spectrum is judged by (Screen may refresh it)
      const uint64_t released_before = guard_.released();
      if (guard_.Screen(z)) {
        guarded_[i] = 1;
        Flag(frame, i, /*by_deviance=*/true, /*by_hotelling=*/false, guard_.TailProbability(z), bound, out);
      }
      out->released[i] = guard_.released() != released_before;
    }
  }
  if (mature) ObserveDetector(frame, out);
  TakeRegionChanges(out);
}

void OperandoMonitor::TakeRegionChanges(MonitorOutput* out) {
  RegionChanges changes = regions_.TakeChanged();
  for (NoveltyRegion& region : changes.updated) out->regions.push_back(std::move(region));
  for (RegionMerge& merge : changes.merges) out->merges.push_back(std::move(merge));
}

void OperandoMonitor::Flag(const MonitorFrame& frame, size_t i, bool by_deviance, bool by_hotelling,
                           double tail_probability, double deviance_threshold, MonitorOutput* out) {
  out->learn[i] = 0;
  out->novel[i] = 1;
  ++out->novel_count;
  ++novel_total_;
  if (i >= frame.positions.size()) return;
  AddNovel(frame.positions[i], static_cast<uint32_t>(i), frame.frame_number, frame.counts, *frame.result,
           static_cast<Eigen::Index>(i), by_deviance, by_hotelling, tail_probability, deviance_threshold,
           frame.model.get(), out);
}

void OperandoMonitor::AddNovel(const ScanPosition& position, uint32_t spectrum_index, uint64_t frame_number,
                               const Eigen::Ref<const CountsMatrix>& counts_matrix, const DenoiseResult& r,
                               Eigen::Index column, bool by_deviance, bool by_hotelling, double tail_probability,
                               double deviance_threshold, const PcaModel* model, MonitorOutput* out) {
  const auto counts = counts_matrix.col(column);
  const RegionAddResult added =
      regions_.Add(position, std::span<const float>(counts.data(), static_cast<size_t>(counts.size())),
                   r.deviance_z[column], frame_number);
  if (!added.NewRegion()) return;
  NoveltyHit hit;
  hit.spectrum = spectrum_index;
  hit.position = position;
  hit.deviance_z = r.deviance_z[column];
  hit.hotelling_t2 = r.hotelling_t2.size() > column ? r.hotelling_t2[column] : 0.0;
  hit.by_deviance = by_deviance;
  hit.by_hotelling = by_hotelling;
  hit.tail_probability = tail_probability;
  hit.deviance_threshold = deviance_threshold;
  hit.region_id = added.region_id;
  const auto reconstruction = r.denoised.col(column);
  // The score's own floor (denoiser.hpp), so each channel's excess is its share of the z that flagged it.
  Eigen::ArrayXf lower;
  if (model != nullptr && r.totals.size() > column) lower = ReconstructionFloor(*model, r.totals(column));
  for (const DevianceContribution& c : TopDevianceChannels(counts, reconstruction, options_.contributions,
                                                           lower.size() == counts.size() ? &lower : nullptr)) {
    hit.contributions.push_back({c.channel, series_.energy_axis.offset + series_.energy_axis.dispersion * c.channel,
                                 c.excess, c.counts, c.expected});
  }
  out->events.push_back(std::move(hit));
}

void OperandoMonitor::Rescore(std::span<const ScanPosition> positions, std::span<const uint64_t> frame_numbers,
                              const Eigen::Ref<const CountsMatrix>& counts,
                              const DenoiseResult& r, const PcaModel* model, MonitorOutput* out) {
  out->Clear();
  const size_t m = positions.size();
  if (frame_numbers.size() != m || static_cast<size_t>(counts.cols()) != m ||
      static_cast<size_t>(r.deviance_z.size()) != m) {
    throw std::invalid_argument("OperandoMonitor::Rescore: positions, frames and spectra disagree");
  }
  out->novel.assign(m, 0);
  const double threshold = deviance_threshold();
  if (!options_.novelty || !(threshold > 0.0)) return;
  const bool fitted = detector_.state() == NoveltyState::kMonitoring;
  for (size_t i = 0; i < m; ++i) {
    const auto c = static_cast<Eigen::Index>(i);
    const float z = r.deviance_z[c];
    if (!(z > threshold)) continue;
    out->novel[i] = 1;
    ++out->novel_count;
    ++novel_total_;
    const double p = fitted ? detector_.deviance_fit().TailProbability(z) : guard_.TailProbability(z);
    AddNovel(positions[i], static_cast<uint32_t>(i), frame_numbers[i], counts, r, c, true, false, p, threshold, model,
             out);
  }
  TakeRegionChanges(out);
}

void OperandoMonitor::ObserveDetector(const MonitorFrame& frame, MonitorOutput* out) {
  const DenoiseResult& r = *frame.result;
  const size_t m = static_cast<size_t>(frame.counts.cols());
  const bool guarding = detector_.state() == NoveltyState::kCalibrating;
  std::span<const uint8_t> in_reference;
  if (reference_ || guarding) {
    in_reference_.resize(m);
    for (size_t i = 0; i < m; ++i) {
      in_reference_[i] = !guarded_[i] && (!reference_ || (i < frame.positions.size() &&
                                                          reference_->Contains(frame.positions[i])));
    }
    in_reference = in_reference_;
  }
  verdicts_.assign(m, NoveltyVerdict::kNominal);
  // Spectra let through as common on a first visit (while monitoring) are not scored by the detector (a NaN
  // score is nominal and changes nothing there); the frame's scores are copied only when there are some.
  std::span<const float> z(r.deviance_z.data(), m);
  if (!guarding && std::find(out->released.begin(), out->released.end(), uint8_t{1}) != out->released.end()) {
    detector_z_.assign(z.begin(), z.end());
    for (size_t i = 0; i < m; ++i) {
      if (out->released[i]) detector_z_[i] = std::numeric_limits<float>::quiet_NaN();
    }
    z = detector_z_;
  }
  const NoveltyState before = detector_.state();
  const auto regime = detector_.Observe(
      z,
      options_.detector.use_hotelling ? std::span<const float>(r.hotelling_t2.data(), m) : std::span<const float>(),
      in_reference, std::span<NoveltyVerdict>(verdicts_.data(), m));
  detector_spectra_ += m;
  const double dev_threshold = detector_.deviance_fit().threshold;
  const double t2_threshold = detector_.hotelling_fit().threshold;
  for (size_t i = 0; i < m; ++i) {
    const NoveltyVerdict verdict = verdicts_[i];
    if (verdict == NoveltyVerdict::kNominal || guarded_[i]) continue;
    out->learn[i] = 0;
    if (verdict != NoveltyVerdict::kNovel) continue;
    const double z = r.deviance_z[static_cast<Eigen::Index>(i)];
    const double t2 = r.hotelling_t2[static_cast<Eigen::Index>(i)];
    const bool by_deviance = z > dev_threshold;
    const bool by_hotelling = options_.detector.use_hotelling && t2 > t2_threshold;
    double p = 1.0;
    if (by_deviance) p = std::min(p, detector_.deviance_fit().TailProbability(z));
    if (by_hotelling) p = std::min(p, detector_.hotelling_fit().TailProbability(t2));
    Flag(frame, i, by_deviance, by_hotelling, p, dev_threshold, out);
  }
  // Before a new phase resets the regions: what this frame did to them is published first.
  TakeRegionChanges(out);

  if (regime) {
    DriftReport d;
    d.kind = "new_phase";
    d.magnitude = regime->fraction;
    d.unit = "fraction";
    d.confidence = regime->fraction / options_.detector.regime_fraction;
    // The detector counts the spectra it was given; those of the window were scored one after the other, so
    // the onset is as many spectra before this frame's end in the series.
    d.onset_spectrum = spectra_ + m - std::min<uint64_t>(spectra_ + m, detector_spectra_ - regime->onset_spectrum);
    d.detected_spectrum = spectra_ + m;
    out->drifts.push_back(d);
    // The new phase becomes part of the nominal: its regions are history, the CUSUM's baseline and the guard's
    // recent scores too.
    regions_.Reset(series_.scan_shape);
    guard_.Reset();
    out->drop_subspace_reference = true;
    cusum_.Reset();
    cusum_running_ = false;
    // The reference model does not know the new phase: the energy reference is taken anew from a later model.
    energy_offset_channels_ = total_shift_channels();
    energy_.reset();
    energy_model_.reset();
    ReportCalibration("regime_change", out);
  }
  if (!regime && before == NoveltyState::kCalibrating && detector_.state() == NoveltyState::kMonitoring &&
      options_.guard.enabled && std::isfinite(guard_.bound()) &&
      detector_.deviance_fit().threshold > kMaxFittedToProvisional * guard_.bound()) {
    // The fit and the guard estimate the same quantile, from the calibration window and from the recent scores.
    // Far apart, the window was not nominal: it holds the scores of a phase the model was still learning (a new
    // domain of a first pass, a rank change). Not put in force; calibration starts over, the guard stays.
    detector_.Recalibrate();
    ++calibrations_rejected_;
    ReportCalibration("not_nominal", out);
    return;
  }
  const NoveltyState after = detector_.state();
  if (!regime && after != before) {
    if (after == NoveltyState::kMonitoring) out->take_subspace_reference = true;
    ReportCalibration(after == NoveltyState::kMonitoring ? "complete" : "absorbed", out);
  }
}

void OperandoMonitor::ObserveEnergy(const MonitorFrame& frame, MonitorOutput* out) {
  if (frame.summed_counts == nullptr || frame.summed_counts->size() != series_.channels) return;
  if (!energy_model_) {
    if (!frame.model || frame.model->spectra_seen < options_.min_model_spectra ||
        frame.model->mean.size() != series_.channels) {
      return;
    }
    // Too few channels for the fit window: no energy tracking for this series.
    if (!options_.energy_shift.ChannelProblem(series_.channels).empty()) return;
    energy_.emplace(series_.channels, options_.energy_shift);
    energy_model_ = frame.model;
  }
  // The reference model's reconstruction of the frame's summed spectrum: what these spectra look like on the
  // reference axis, whatever their phase composition.
  // Of the frame's mean spectrum, times the spectra: a Poisson-weighted model reconstructs spectra of the counts
  // it learnt (x / sqrt(a b)); a sum of m spectra is not one of them.
  const double m = static_cast<double>(frame.counts.cols());
  frame_sum_ = (*frame.summed_counts / m).cast<float>();
  Denoise(*energy_model_, frame_sum_, &energy_workspace_);
  const Eigen::VectorXd expected = m * energy_workspace_.denoised.col(0).cast<double>();
  const auto event = energy_->Add(*frame.summed_counts, static_cast<uint64_t>(frame.counts.cols()), expected);
  if (!event) return;
  DriftReport d;
  d.kind = "energy";
  d.magnitude = event->magnitude_channels;
  d.unit = "channels";
  d.confidence = event->confidence;
  // The tracker counts the spectra it was given since it was created; the monitor since the series started.
  const uint64_t tracker_start = spectra_ + static_cast<uint64_t>(frame.counts.cols()) - energy_->spectra_seen();
  d.onset_spectrum = tracker_start + event->onset_spectrum;
  d.detected_spectrum = tracker_start + event->detected_spectrum;
  d.shift_channels = event->magnitude_channels;
  d.total_shift_channels = energy_offset_channels_ + event->shift_channels;
  d.corrected = correct_energy_;
  if (correct_energy_) {
    // The model moves to the new level (relative to where it was last corrected), and the tracker with it.
    const double delta = event->shift_channels - energy_->corrections_channels();
    out->shift_model_channels += delta;
    energy_->ApplyCorrection(delta);
    // What the shift made novel until the model followed it is explained now: it must not read as a new phase.
    detector_.ClearRegimeWindow();
  }
  out->drifts.push_back(d);
}

void OperandoMonitor::ObserveStatistics(const MonitorFrame& frame, MonitorOutput* out) {
  if (!frame.scored || frame.result == nullptr || detector_.state() != NoveltyState::kMonitoring) {
    if (cusum_running_) {
      cusum_.Reset();
      cusum_running_ = false;
    }
    return;
  }
  if (!cusum_running_) {
    // Scores clipped at the novelty threshold (a value of the data; one that is not > 0 clips nothing).
    cusum_ = BlockCusum(options_.cusum, detector_.deviance_fit().threshold);
    cusum_running_ = true;
  }
  const Eigen::VectorXf& z = frame.result->deviance_z;
  for (const ChangeAlarm& a : cusum_.Add(std::span<const float>(z.data(), static_cast<size_t>(z.size())), spectra_)) {
    DriftReport d;
    d.kind = "statistics";
    d.magnitude = a.magnitude;
    d.unit = "score_sd";
    d.confidence = a.statistic_sd / cusum_.decision_interval_sd();
    d.onset_spectrum = a.onset_spectrum;
    d.detected_spectrum = a.detected_spectrum;
    out->drifts.push_back(d);
  }
}

}  // namespace specwatch
