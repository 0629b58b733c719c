#include "operators/dose/dose_ledger.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace specwatch {
namespace {

// A dose "reaches" a threshold when it is at least the threshold less this relative margin: k visits of D summed
// in floating point may fall an ulp short of k·D, and a budget of exactly k visits must fire at the k-th.
constexpr double kReachMargin = 1e-12;

bool Reaches(double dose, double threshold) { return threshold > 0.0 && dose >= threshold * (1.0 - kReachMargin); }

constexpr uint8_t kWarningBit = 1, kLimitBit = 2;

}  // namespace

double DosePerSpectrum_e_per_A2(double beam_current_pA, double dwell_s, double pixel_area_A2) {
  if (!(beam_current_pA > 0.0) || !(dwell_s > 0.0) || !(pixel_area_A2 > 0.0) || !std::isfinite(beam_current_pA) ||
      !std::isfinite(dwell_s) || !std::isfinite(pixel_area_A2)) {
    return 0.0;
  }
  return kElectronsPerPicoampSecond * beam_current_pA * dwell_s / pixel_area_A2;
}

void DoseBudget::Validate() const {
  RequireOption(position_e_per_A2 >= 0.0 && std::isfinite(position_e_per_A2), "position_e_per_A2", ">= 0 (0 = none)",
                position_e_per_A2);
  RequireOption(run_e_per_A2 >= 0.0 && std::isfinite(run_e_per_A2), "run_e_per_A2", ">= 0 (0 = none)", run_e_per_A2);
  RequireOption(warning_fraction > 0.0 && warning_fraction < 1.0, "warning_fraction", "in (0, 1)", warning_fraction);
}

const char* ToString(DoseLevel level) { return level == DoseLevel::kWarning ? "warning" : "limit"; }

void DoseLedger::StartSeries(const ScanShape& shape, const DoseBudget& budget) {
  shape_ = shape;
  budget_ = budget;
  const uint64_t n = shape.Positions();
  position_dose_.assign(n, 0.0);
  fired_.assign(n, 0);
  run_fired_ = 0;
  run_dose_ = 0.0;
  max_position_dose_ = 0.0;
  dose_rate_ = 0.0;
  last_dose_per_spectrum_ = 0.0;
  spectra_ = 0;
  spectra_without_dose_ = 0;
  over_warning_ = over_limit_ = 0;
}

void DoseLedger::SetShape(const ScanShape& shape) {
  if (shape_.Positions() != 0) return;
  shape_ = shape;
  position_dose_.assign(shape.Positions(), 0.0);
  fired_.assign(shape.Positions(), 0);
}

void DoseLedger::SetBudget(const DoseBudget& budget, std::vector<DoseAlarm>* alarms) {
  budget_ = budget;
  std::fill(fired_.begin(), fired_.end(), uint8_t{0});
  run_fired_ = 0;
  over_warning_ = over_limit_ = 0;
  frame_alarms_begin_ = alarms->size();
  for (size_t i = 0; i < position_dose_.size(); ++i) {
    if (position_dose_[i] <= 0.0) continue;
    const ScanPosition p{static_cast<uint32_t>(i % shape_.width), static_cast<uint32_t>(i / shape_.width), 0};
    CheckPosition(i, p, alarms);
  }
  CheckRun(alarms);
  for (size_t i = frame_alarms_begin_; i < alarms->size(); ++i) (*alarms)[i].run_dose_e_per_A2 = run_dose_;
}

DoseAlarm& DoseLedger::AlarmFor(DoseLevel level, std::vector<DoseAlarm>* alarms, size_t first_of_frame) {
  for (size_t i = first_of_frame; i < alarms->size(); ++i) {
    if ((*alarms)[i].level == level && !(*alarms)[i].run) return (*alarms)[i];
  }
  DoseAlarm a;
  a.level = level;
  a.budget_e_per_A2 = budget_.position_e_per_A2;
  a.threshold_e_per_A2 = level == DoseLevel::kLimit ? budget_.position_e_per_A2
                                                    : budget_.warning_fraction * budget_.position_e_per_A2;
  alarms->push_back(std::move(a));
  return alarms->back();
}

void DoseLedger::CheckPosition(size_t index, const ScanPosition& p, std::vector<DoseAlarm>* alarms) {
  const double budget = budget_.position_e_per_A2;
  if (!(budget > 0.0)) return;
  const double dose = position_dose_[index];
  for (const DoseLevel level : {DoseLevel::kWarning, DoseLevel::kLimit}) {
    const uint8_t bit = level == DoseLevel::kWarning ? kWarningBit : kLimitBit;
    const double threshold = level == DoseLevel::kWarning ? budget_.warning_fraction * budget : budget;
    if ((fired_[index] & bit) || !Reaches(dose, threshold)) continue;
    fired_[index] |= bit;
    (level == DoseLevel::kWarning ? over_warning_ : over_limit_)++;
    DoseAlarm& a = AlarmFor(level, alarms, frame_alarms_begin_);
    a.positions.push_back(p);
    a.doses_e_per_A2.push_back(dose);
  }
}

void DoseLedger::CheckRun(std::vector<DoseAlarm>* alarms) {
  const double budget = budget_.run_e_per_A2;
  if (!(budget > 0.0)) return;
  for (const DoseLevel level : {DoseLevel::kWarning, DoseLevel::kLimit}) {
    const uint8_t bit = level == DoseLevel::kWarning ? kWarningBit : kLimitBit;
    const double threshold = level == DoseLevel::kWarning ? budget_.warning_fraction * budget : budget;
    if ((run_fired_ & bit) || !Reaches(run_dose_, threshold)) continue;
    run_fired_ |= bit;
    DoseAlarm a;
    a.level = level;
    a.run = true;
    a.budget_e_per_A2 = budget;
    a.threshold_e_per_A2 = threshold;
    alarms->push_back(std::move(a));
  }
}

void DoseLedger::AddFrame(uint64_t spectra, std::span<const ScanPosition> positions, double dose_per_spectrum,
                          double dwell_s, std::vector<DoseAlarm>* alarms) {
  frame_alarms_begin_ = alarms->size();
  spectra_ += spectra;
  if (!(dose_per_spectrum > 0.0) || !std::isfinite(dose_per_spectrum)) {
    spectra_without_dose_ += spectra;
    return;
  }
  last_dose_per_spectrum_ = dose_per_spectrum;
  if (dwell_s > 0.0) dose_rate_ = dose_per_spectrum / dwell_s;
  run_dose_ += dose_per_spectrum * static_cast<double>(spectra);
  if (!position_dose_.empty()) {
    for (const ScanPosition& p : positions) {
      if (p.x >= shape_.width || p.y >= shape_.height) continue;
      const size_t i = static_cast<size_t>(p.y) * shape_.width + p.x;
      position_dose_[i] += dose_per_spectrum;
      max_position_dose_ = std::max(max_position_dose_, position_dose_[i]);
      CheckPosition(i, p, alarms);
    }
  }
  CheckRun(alarms);
  for (size_t i = frame_alarms_begin_; i < alarms->size(); ++i) (*alarms)[i].run_dose_e_per_A2 = run_dose_;
}

double DoseLedger::RemainingAt(uint32_t x, uint32_t y) const {
  if (!(budget_.position_e_per_A2 > 0.0)) return std::numeric_limits<double>::infinity();
  if (x >= shape_.width || y >= shape_.height) return budget_.position_e_per_A2;
  return std::max(0.0, budget_.position_e_per_A2 - position_dose_[static_cast<size_t>(y) * shape_.width + x]);
}

}  // namespace specwatch
