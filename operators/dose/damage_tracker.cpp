#include "operators/dose/damage_tracker.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace specwatch {
namespace {

// Dwell average of exp(−D/D_c) over a visit from dose a to a + d.
double IntactWeight(double a, double d, double critical) {
  const double start = std::exp(-a / critical);
  if (!(d > 0.0)) return start;
  return start * (-std::expm1(-d / critical)) * critical / d;
}

constexpr uint32_t kCheckEvery = 32;  // group sizes between two detection checks
constexpr int kLagReach = 2;  // lags searched either side of the group's most frequent one

}  // namespace

void DamageOptions::Validate() const {
  RequireOption(bins >= 8, "bins", ">= 8", bins);
  RequireOption(max_lag >= 0 && max_lag <= 256, "max_lag", "in [0, 256]", max_lag);
  RequireOption(max_positions >= 16, "max_positions", ">= 16", max_positions);
  RequireOption(min_group >= 16, "min_group", ">= 16", min_group);
  RequireOption(detect_sigma > 0.0, "detect_sigma", "> 0", detect_sigma);
  RequireOption(position_sigma > 0.0, "position_sigma", "> 0", position_sigma);
}

DamageTracker::DamageTracker(DamageOptions options) : options_(options) { options_.Validate(); }

void DamageTracker::StartSeries(const ScanShape& shape, int channels) {
  shape_ = ScanShape{};
  first_.clear();
  first_dose_.clear();
  first_start_.clear();
  visits_.clear();
  affected_.clear();
  groups_acc_.clear();
  groups_.clear();
  warned_ = false;
  affected_count_ = 0;
  new_affected_.clear();
  SetShape(shape, channels);
}

void DamageTracker::SetShape(const ScanShape& shape, int channels) {
  if (!options_.enabled || shape_.Positions() != 0 || shape.Positions() == 0 || channels < 8 + 2 * options_.max_lag) {
    return;
  }
  shape_ = shape;
  channels_ = channels;
  bins_ = std::min(options_.bins, channels);
  // The smallest stride whose subgrid holds at most max_positions positions.
  stride_ = 1;
  auto count = [&](uint32_t s) { return uint64_t{(shape.width + s - 1) / s} * ((shape.height + s - 1) / s); };
  while (count(stride_) > options_.max_positions) ++stride_;
  tracked_w_ = (shape.width + stride_ - 1) / stride_;
  tracked_h_ = (shape.height + stride_ - 1) / stride_;
  const size_t n = size_t{tracked_w_} * tracked_h_;
  first_.assign(n * static_cast<size_t>(channels_), 0.0f);
  first_dose_.assign(n, 0.0f);
  first_start_.assign(n, 0.0f);
  visits_.assign(n, 0);
  affected_.assign(n, 0);
}

void DamageTracker::Bin(const float* counts, int first_channel, int last_channel, Eigen::VectorXf* out) const {
  // Bins over [first_channel, last_channel), `counts` indexed from first_channel (counts[0] is that channel).
  out->setZero(bins_);
  for (int b = 0; b < bins_; ++b) {
    const int lo = std::max(first_channel, static_cast<int>(int64_t{b} * channels_ / bins_));
    const int hi = std::min(last_channel, static_cast<int>(int64_t{b + 1} * channels_ / bins_));
    float sum = 0.0f;
    for (int j = lo; j < hi; ++j) sum += counts[j - first_channel];
    (*out)(b) = sum;
  }
}

int DamageTracker::Align(const float* x, const Eigen::Ref<const Eigen::VectorXf>& y, int centre) {
  const int m = options_.max_lag;
  if (m == 0) return 0;
  // The lag L near `centre` (the lag most chosen in this visit group so far: drift moves slowly) minimising
  // χ²(L) = Σ_j (y_{j+L} − x_j)² / (x_j + y_{j+L}) over j in [m, D − m): the statistic compared afterwards, at full
  // resolution, symmetric in the two visits (whole-array steps: vectorised).
  const int n = channels_ - 2 * m;
  const Eigen::Map<const Eigen::ArrayXf> xs(x + m, n);
  auto chi2 = [&](int l) {
    const auto ys = y.segment(m + l, n).array();
    const auto s = (xs + ys).max(1e-30f);
    return ((ys - xs).square() / s).sum();
  };
  int lag = 0;
  float best = chi2(0);
  for (int l = std::max(-m, centre - kLagReach); l <= std::min(m, centre + kLagReach); ++l) {
    if (l == 0) continue;
    const float c = chi2(l);
    if (c < best) {
      best = c;
      lag = l;
    }
  }
  return lag;
}

std::optional<DamageReport> DamageTracker::Add(const ScanPosition& p, const Eigen::Ref<const Eigen::VectorXf>& counts,
                                               double dose_before, double dose_visit) {
  if (first_.empty() || p.x >= shape_.width || p.y >= shape_.height || counts.size() != channels_ ||
      p.x % stride_ != 0 || p.y % stride_ != 0) {
    return std::nullopt;
  }
  const size_t i = size_t{p.y / stride_} * tracked_w_ + p.x / stride_;
  const float* x_full = first_.data() + i * static_cast<size_t>(channels_);
  if (visits_[i] == 0) {
    std::copy(counts.data(), counts.data() + channels_, first_.data() + i * static_cast<size_t>(channels_));
    first_dose_[i] = static_cast<float>(dose_visit);
    first_start_[i] = static_cast<float>(dose_before);
    visits_[i] = 1;
    return std::nullopt;
  }
  const uint32_t visit = visits_[i]++;
  // Align the revisit with the first visit (integer lag), then bin both over the channels both cover.
  if (groups_acc_.size() < visit) groups_acc_.resize(visit);
  Accumulator& g = groups_acc_[visit - 1];
  if (g.lags.empty()) g.lags.assign(2 * static_cast<size_t>(options_.max_lag) + 1, 0);
  const int centre = static_cast<int>(std::max_element(g.lags.begin(), g.lags.end()) - g.lags.begin()) - options_.max_lag;
  const int lag = Align(x_full, counts, centre);
  ++g.lags[static_cast<size_t>(lag + options_.max_lag)];
  const int lo = std::max(0, -lag), hi = std::min(channels_, channels_ - lag);
  Bin(counts.data() + lo + lag, lo, hi, &y_);
  Bin(x_full + lo, lo, hi, &xb_);
  const float* x = xb_.data();
  // Counts scale with the electrons of the visit: compare at the first visit's dose (a known parameter).
  if (dose_visit > 0.0 && first_dose_[i] > 0.0 && std::abs(dose_visit - first_dose_[i]) > 1e-9 * dose_visit) {
    y_ *= static_cast<float>(first_dose_[i] / dose_visit);
  }
  if (g.change.size() != bins_) g.change = Eigen::VectorXd::Zero(bins_);
  // What a sub-channel shift does to a bin, to first order: it moves counts across the bin's two edges, so the
  // regressor is s at the upper edge minus s at the lower edge, s = x + y at full resolution (uncorrelated with
  // y − x when nothing changed).
  // Second order (shifts up to about a channel, what the integer alignment leaves): the slope of s at the edges.
  derivative_.resize(bins_);
  curvature_.resize(bins_);
  auto s_at = [&](int channel) {
    const int c = std::clamp(channel, lo, hi - 1);
    return x_full[c] + counts(c + lag);
  };
  for (int b = 0; b < bins_; ++b) {
    const int first = std::max(lo, static_cast<int>(int64_t{b} * channels_ / bins_));
    const int last = std::min(hi, static_cast<int>(int64_t{b + 1} * channels_ / bins_));
    if (last <= first) {
      derivative_(b) = curvature_(b) = 0.0f;
      continue;
    }
    derivative_(b) = 0.5f * (s_at(last - 1) + s_at(last)) - 0.5f * (s_at(first - 1) + s_at(first));
    curvature_(b) = (s_at(last) - s_at(last - 1)) - (s_at(first) - s_at(first - 1));
  }
  double chi2 = 0.0;
  double p1 = 0.0, p2 = 0.0, n11 = 0.0, n12 = 0.0, n22 = 0.0;  // projections and normal matrix, weights 1/s
  int effective = 0;
  for (int b = 0; b < bins_; ++b) {
    const double s = static_cast<double>(x[b]) + y_(b);
    if (!(s > 0.0)) continue;
    const double delta = static_cast<double>(y_(b)) - x[b];
    const double g1 = derivative_(b), g2 = curvature_(b);
    chi2 += delta * delta / s;
    p1 += delta * g1 / s;
    p2 += delta * g2 / s;
    n11 += g1 * g1 / s;
    n12 += g1 * g2 / s;
    n22 += g2 * g2 / s;
    g.change(b) += delta / std::sqrt(s);
    ++effective;
  }
  if (effective < 3) return std::nullopt;
  // The part of χ² a shift explains: the projection onto span(g1, g2) in the 1/s metric.
  double explained = 0.0;
  const double det = n11 * n22 - n12 * n12;
  if (det > 1e-12 * n11 * n22 && n11 > 0.0 && n22 > 0.0) {
    explained = (n22 * p1 * p1 - 2.0 * n12 * p1 * p2 + n11 * p2 * p2) / det;
  } else if (n11 > 0.0) {
    explained = p1 * p1 / n11;
  }
  const double excess = chi2 - explained - (effective - 2);
  const double scale = std::sqrt(2.0 * (effective - 2));
  if (excess / scale >= options_.position_sigma && !affected_[i]) {
    affected_[i] = 1;
    ++affected_count_;
    new_affected_.push_back(p);
  }
  ++g.n;
  g.sum += excess;
  g.sum_sq += excess * excess;
  g.sum_beff += effective;
  g.first_a += first_start_[i];
  g.first_d += first_dose_[i];
  g.a += dose_before;
  g.d += dose_visit;
  // A scan of few positions (a fixed spot, a small area dose series) makes small groups: the whole group then.
  const uint64_t tracked = uint64_t{tracked_w_} * tracked_h_;
  const uint64_t needed = std::min<uint64_t>(options_.min_group, tracked);
  if (warned_ || g.n < needed || (g.n % kCheckEvery != 0 && g.n != needed)) return std::nullopt;
  const DamageGroup s = Summarise(visit, g);
  if (s.z < options_.detect_sigma) return std::nullopt;
  warned_ = true;
  DamageReport r = Report();
  r.warning = true;
  r.group = s;
  return r;
}

DamageGroup DamageTracker::Summarise(uint32_t visit, const Accumulator& a) const {
  DamageGroup s;
  s.visit = visit;
  s.positions = a.n;
  if (a.n == 0) return s;
  const double n = static_cast<double>(a.n);
  s.mean_excess = a.sum / n;
  const double variance = std::max(0.0, a.sum_sq / n - s.mean_excess * s.mean_excess);
  s.standard_error = std::sqrt(variance / n);
  s.null_standard_error = std::sqrt(2.0 * std::max(1.0, a.sum_beff / n - 2.0) / n);
  s.z = s.mean_excess / s.null_standard_error;
  s.first_dose_start = a.first_a / n;
  s.first_dose_width = a.first_d / n;
  s.dose_start = a.a / n;
  s.dose_width = a.d / n;
  return s;
}

const std::vector<DamageGroup>& DamageTracker::groups() const {
  groups_.clear();
  for (size_t v = 0; v < groups_acc_.size(); ++v) groups_.push_back(Summarise(static_cast<uint32_t>(v + 1), groups_acc_[v]));
  return groups_;
}

CriticalDoseFit DamageTracker::Fit() const {
  CriticalDoseFit fit;
  std::vector<DamageGroup> used;
  double mean_visit = 0.0;
  for (const DamageGroup& g : groups()) {
    if (g.positions < std::min<uint64_t>(32, uint64_t{tracked_w_} * tracked_h_)) continue;
    used.push_back(g);
    mean_visit += g.dose_width;
  }
  fit.groups = static_cast<int>(used.size());
  if (used.size() < 2) return fit;
  mean_visit /= static_cast<double>(used.size());
  if (!(mean_visit > 0.0)) return fit;
  // Profile over D_c on a log grid from 1/50 of a visit to 10^4 visits.
  constexpr int kGrid = 600;
  const double lo = std::log(0.02 * mean_visit), hi = std::log(1e4 * mean_visit);
  std::vector<double> chi2(kGrid), amplitude(kGrid), grid(kGrid);
  int best = -1;
  for (int k = 0; k < kGrid; ++k) {
    const double critical = std::exp(lo + (hi - lo) * k / (kGrid - 1));
    grid[k] = critical;
    double sgy = 0, sgg = 0;
    std::vector<double> g(used.size()), w(used.size());
    for (size_t j = 0; j < used.size(); ++j) {
      const DamageGroup& u = used[j];
      const double d = IntactWeight(u.first_dose_start, u.first_dose_width, critical) -
                       IntactWeight(u.dose_start, u.dose_width, critical);
      g[j] = d * d;
      const double se = std::max(u.standard_error, u.null_standard_error);
      w[j] = 1.0 / (se * se);
      sgy += g[j] * u.mean_excess * w[j];
      sgg += g[j] * g[j] * w[j];
    }
    const double a = sgg > 0.0 ? std::max(0.0, sgy / sgg) : 0.0;
    double c = 0.0;
    for (size_t j = 0; j < used.size(); ++j) {
      const double r = used[j].mean_excess - a * g[j];
      c += r * r * w[j];
    }
    chi2[k] = c;
    amplitude[k] = a;
    if (best < 0 || c < chi2[best]) best = k;
  }
  if (best < 0 || !(amplitude[best] > 0.0)) return fit;
  fit.ok = true;
  fit.critical_dose_e_per_A2 = grid[best];
  fit.amplitude = amplitude[best];
  fit.chi2 = chi2[best];
  // Δχ² = 1, scaled by the reduced χ² when the groups scatter more than their errors say (the Birge ratio: the
  // model is the mean over positions of different phases, each damaging at its own pace).
  const double dof = static_cast<double>(used.size()) - 2.0;
  const double step = dof > 0.0 ? std::max(1.0, chi2[best] / dof) : 1.0;
  int first = best, last = best;
  while (first > 0 && chi2[first - 1] <= chi2[best] + step) --first;
  while (last < kGrid - 1 && chi2[last + 1] <= chi2[best] + step) ++last;
  // The grid's own resolution is the least uncertainty claimed.
  first = std::max(0, std::min(first, best - 1));
  last = std::min(kGrid - 1, std::max(last, best + 1));
  fit.lower_e_per_A2 = first == 0 ? 0.0 : grid[first];
  fit.upper_e_per_A2 = last == kGrid - 1 ? std::numeric_limits<double>::infinity() : grid[last];
  return fit;
}

std::vector<ChangedEnergy> DamageTracker::Energies(size_t max) const {
  // The group with the most positions among the latest ones: the best-measured recent change.
  const Accumulator* best = nullptr;
  for (const Accumulator& a : groups_acc_) {
    if (a.n > 0 && (best == nullptr || a.n * 2 >= best->n)) best = &a;
  }
  std::vector<ChangedEnergy> out;
  if (best == nullptr || best->change.size() != bins_) return out;
  const double n = static_cast<double>(best->n);
  for (int b = 0; b < bins_; ++b) {
    ChangedEnergy e;
    e.bin = b;
    e.first_channel = static_cast<int>(int64_t{b} * channels_ / bins_);
    e.last_channel = static_cast<int>(int64_t{b + 1} * channels_ / bins_) - 1;
    e.mean_change_sd = best->change(b) / n;
    e.z = e.mean_change_sd * std::sqrt(n);
    out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [](const ChangedEnergy& a, const ChangedEnergy& b) { return std::abs(a.z) > std::abs(b.z); });
  if (out.size() > max) out.resize(max);
  return out;
}

DamageReport DamageTracker::Report(size_t max_energies) {
  DamageReport r;
  const auto& gs = groups();
  for (auto it = gs.rbegin(); it != gs.rend(); ++it) {
    if (it->positions >= std::min<uint64_t>(options_.min_group, uint64_t{tracked_w_} * tracked_h_) ||
        std::next(it) == gs.rend()) {
      r.group = *it;
      break;
    }
  }
  r.fit = Fit();
  r.energies = Energies(max_energies);
  r.affected_positions = affected_count_;
  r.affected.swap(new_affected_);
  new_affected_.clear();
  return r;
}

}  // namespace specwatch
