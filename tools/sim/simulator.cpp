#include "tools/sim/simulator.hpp"

#include "tools/sim/dose.hpp"
#include "tools/sim/random.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

namespace specwatch::sim {

static_assert(std::endian::native == std::endian::little, "payloads are written in native (little-endian) order");

namespace {

constexpr uint64_t kFrameStream = 0x4652414D45ull;  // "FRAME"
constexpr int kNoiseTableBits = 16;
/// Above this many expected counts per channel a component is drawn channel by channel (inversion or
/// PTRS, 30–45 ns a channel) instead of count by count through the alias table (~2 ns a count).
constexpr double kDenseCountsPerChannel = 20.0;

SceneOptions MakeSceneOptions(const SimOptions& o) {
  SceneOptions s;
  s.width = o.scan_width;
  s.height = o.scan_height;
  s.base_phases = o.phases;
  s.inclusion_fraction = o.inclusion_fraction;
  s.grow = o.grow_phase;
  s.passes = o.passes;
  s.seed = o.seed;
  return s;
}

EnergyAxis ResolveAxis(const SimOptions& o) {
  EnergyAxis a = DefaultAxis(o.modality, o.channels);
  if (!std::isnan(o.energy_offset)) a.offset = o.energy_offset;
  if (!std::isnan(o.dispersion)) a.dispersion = o.dispersion;
  return a;
}

Scene MakeScene(const SimOptions& o) {
  try {
    return Scene(MakeSceneOptions(o));
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
}

}  // namespace

double InverseNormalCdf(double p) {
  // P. J. Acklam's algorithm (2003).
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01,  -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  const double plow = 0.02425;
  double x;
  if (p < plow) {
    const double q = std::sqrt(-2.0 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  } else if (p <= 1.0 - plow) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  } else {
    const double q = std::sqrt(-2.0 * std::log(1.0 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  }
  // One Halley step on Φ(x) − p.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2.0 * 3.14159265358979323846) * std::exp(x * x / 2.0);
  return x - u / (1.0 + x * u / 2.0);
}

Simulator::Simulator(const SimOptions& options)
    : options_(options), axis_(ResolveAxis(options)), scene_(MakeScene(options)) {
  const int ch = options_.channels;
  if (ch < 2) throw ConfigError("--channels: must be >= 2");
  if (!(axis_.dispersion > 0.0)) throw ConfigError("--dispersion: must be > 0");
  if (!(options_.mean_counts > 0.0)) throw ConfigError("--counts: must be > 0");
  total_spectra_ = options_.TotalSpectra();
  const uint64_t fs = options_.FrameSpectra();
  frame_count_ = (total_spectra_ + fs - 1) / fs;
  dose_per_spectrum_ = DosePerSpectrum_e_per_A2(options_.beam_current_pA, options_.DwellUs(), options_.pixel_A);

  try {
    phases_ = BasePhases(options_.modality, options_.phases, axis_, ch);
    if (scene_.InclusionIndex() >= 0) phases_.push_back(InclusionPhase(options_.modality, axis_, ch));
    if (scene_.GrowIndex() >= 0) phases_.push_back(GrowPhase(options_.modality, axis_, ch));
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }

  const uint64_t drift_start = options_.energy_drift_start_spectrum;
  if (options_.energy_drift_channels != 0.0 && drift_start > 0 && drift_start >= total_spectra_) {
    throw ConfigError("--energy-drift-start: " + std::to_string(drift_start) + " is beyond the run's " +
                      std::to_string(total_spectra_) + " spectra");
  }
  if (options_.energy_drift_ramp_spectra >= 0) {
    drift_ramp_spectra_ = options_.energy_drift_ramp_spectra;
  } else if (total_spectra_ > drift_start + 1) {
    drift_ramp_spectra_ = static_cast<int64_t>(total_spectra_ - 1 - drift_start);
  }
  const int64_t total_level = std::llround(kShiftSubdivisions * options_.energy_drift_channels);
  level_min_ = std::min<int64_t>(0, total_level);
  level_max_ = std::max<int64_t>(0, total_level);

  // Fine grid: x_k = −½ + 1/(2S) − level_max/S + k/S (channel coordinates), so that channel j at level q
  // is the mean of samples k0 .. k0+S−1 with k0 = j·S − q + level_max (midpoint rule over the channel).
  const int S = kShiftSubdivisions;
  const int64_t fine = int64_t{ch} * S + (level_max_ - level_min_);
  const double x0 = -0.5 + 0.5 / S - static_cast<double>(level_max_) / S;
  const bool damage = DamageEnabled();
  for (int p = 0; p < static_cast<int>(phases_.size()); ++p) {
    for (int v = 0; v < (damage ? 2 : 1); ++v) {
      Component c;
      c.phase = p;
      c.damaged = v == 1;
      const Density& f = c.damaged ? phases_[p].damaged : phases_[p].intact;
      c.prefix.assign(static_cast<size_t>(fine) + 1, 0.0);
      for (int64_t k = 0; k < fine; ++k) {
        const double x = x0 + static_cast<double>(k) / S;
        const double e = axis_.offset + axis_.dispersion * x;
        c.prefix[k + 1] = c.prefix[k] + std::max(0.0, f(e)) * axis_.dispersion / S;
      }
      components_.push_back(std::move(c));
    }
  }
  // Normalise: a pure, intact phase at zero shift has mean_counts expected counts in the channels. The
  // damaged variant keeps the intact phase's scale (its total is what the physics gives).
  std::vector<double> values;
  for (int p = 0; p < static_cast<int>(phases_.size()); ++p) {
    ComponentValues(components_[ComponentIndex(p, false)], 0, values);
    double total = 0.0;
    for (double v : values) total += v;
    if (!(total > 0.0)) throw ConfigError("phase " + phases_[p].name + " has no intensity on this energy axis");
    const double scale = options_.mean_counts / total;
    for (int v = 0; v < (damage ? 2 : 1); ++v) {
      for (double& x : components_[ComponentIndex(p, v == 1)].prefix) x *= scale;
    }
  }

  // Readout noise: stratified normal quantiles, rescaled to unit variance (the cut tails would otherwise
  // make it 0.9997).
  const size_t n = size_t{1} << kNoiseTableBits;
  noise_table_.resize(n);
  std::vector<double> z(n);
  double sum2 = 0.0;
  for (size_t k = 0; k < n; ++k) {
    z[k] = InverseNormalCdf((static_cast<double>(k) + 0.5) / static_cast<double>(n));
    sum2 += z[k] * z[k];
  }
  const double norm = 1.0 / std::sqrt(sum2 / static_cast<double>(n));
  for (size_t k = 0; k < n; ++k) noise_table_[k] = static_cast<float>(z[k] * norm);
  // For integer payloads: σ·z already rounded half up (same entry index = same draw as the float table).
  rounded_noise_table_.resize(n);
  const float sigma = static_cast<float>(options_.readout_noise_counts);
  for (size_t k = 0; k < n; ++k) {
    rounded_noise_table_[k] = static_cast<int32_t>(std::floor(sigma * noise_table_[k] + 0.5f));
  }
}

FrameInfo Simulator::Frame(uint64_t frame_number) const {
  const uint64_t fs = options_.FrameSpectra();
  FrameInfo f;
  f.frame_number = frame_number;
  f.start_index = frame_number * fs;
  f.spectrum_count = static_cast<uint32_t>(
      f.start_index >= total_spectra_ ? 0 : std::min<uint64_t>(fs, total_spectra_ - f.start_index));
  return f;
}

SpectrumPosition Simulator::Position(uint64_t i) const {
  const uint64_t raster = options_.RasterSpectra();
  if (i >= raster) {  // a revisit of the region of interest
    const uint64_t j = i - raster;
    const uint64_t area = options_.RoiPositions();
    const uint64_t k = j % area;
    const uint32_t w = options_.roi_x1 - options_.roi_x0 + 1;
    return {options_.roi_x0 + static_cast<uint32_t>(k % w), options_.roi_y0 + static_cast<uint32_t>(k / w),
            options_.passes + static_cast<uint32_t>(j / area)};
  }
  const uint64_t per_pass = scene_.Pixels();
  const uint64_t r = i % per_pass;
  return {static_cast<uint32_t>(r % options_.scan_width), static_cast<uint32_t>(r / options_.scan_width),
          static_cast<uint32_t>(i / per_pass)};
}

size_t Simulator::BytesPerSample() const {
  switch (options_.payload) {
    case PayloadKind::kUint16: return 2;
    case PayloadKind::kUint32: return 4;
    case PayloadKind::kFloat32: return 4;
  }
  return 0;
}

int64_t Simulator::ShiftLevel(uint64_t i) const {
  if (options_.energy_drift_channels == 0.0 || drift_ramp_spectra_ < 0) return 0;
  const uint64_t start = options_.energy_drift_start_spectrum;
  if (i < start) return 0;
  const double t = drift_ramp_spectra_ == 0
                       ? 1.0
                       : std::min(1.0, static_cast<double>(i - start) / static_cast<double>(drift_ramp_spectra_));
  return std::llround(kShiftSubdivisions * options_.energy_drift_channels * t);
}

std::vector<std::pair<uint64_t, double>> Simulator::DriftChangePoints() const {
  std::vector<std::pair<uint64_t, double>> out;
  if (total_spectra_ == 0) return out;
  uint64_t i = 0;
  int64_t level = ShiftLevel(0);
  out.emplace_back(0, static_cast<double>(level) / kShiftSubdivisions);
  const uint64_t last = total_spectra_ - 1;
  while (ShiftLevel(last) != level) {
    // First index whose level differs from `level` (levels are monotonic in i).
    uint64_t lo = i, hi = last;
    while (hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      (ShiftLevel(mid) == level ? lo : hi) = mid;
    }
    i = hi;
    level = ShiftLevel(i);
    out.emplace_back(i, static_cast<double>(level) / kShiftSubdivisions);
  }
  return out;
}

double Simulator::IntactWeight(uint32_t pass) const {
  return sim::IntactWeight(pass, dose_per_spectrum_, options_.critical_dose_e_per_A2);
}

void Simulator::ComponentValues(const Component& c, int64_t level, std::vector<double>& out) const {
  const int S = kShiftSubdivisions;
  const int ch = options_.channels;
  out.resize(ch);
  const double* p = c.prefix.data();
  const int64_t base = -level + level_max_;
  for (int j = 0; j < ch; ++j) {
    const int64_t k0 = int64_t{j} * S + base;
    out[j] = std::max(0.0, p[k0 + S] - p[k0]);
  }
}

std::vector<double> Simulator::PhaseSpectrum(int phase, bool damaged, int64_t level) const {
  std::vector<double> v;
  if (damaged && !DamageEnabled()) damaged = false;
  level = std::clamp(level, level_min_, level_max_);
  ComponentValues(components_[ComponentIndex(phase, damaged)], level, v);
  return v;
}

std::vector<double> Simulator::ExpectedSpectrum(uint64_t i) const {
  const SpectrumPosition pos = Position(i);
  const int64_t level = ShiftLevel(i);
  std::vector<double> a(scene_.PhaseCount());
  scene_.Abundances(pos.x, pos.y, pos.pass, a);
  const double w = IntactWeight(pos.pass);
  std::vector<double> out(options_.channels, 0.0), v;
  for (int p = 0; p < scene_.PhaseCount(); ++p) {
    if (a[p] <= 0.0) continue;
    ComponentValues(components_[ComponentIndex(p, false)], level, v);
    for (int j = 0; j < options_.channels; ++j) out[j] += a[p] * w * v[j];
    if (DamageEnabled() && w < 1.0) {
      ComponentValues(components_[ComponentIndex(p, true)], level, v);
      for (int j = 0; j < options_.channels; ++j) out[j] += a[p] * (1.0 - w) * v[j];
    }
  }
  return out;
}

void Simulator::PrepareLevel(FrameWorkspace& ws, int64_t level) const {
  if (ws.level_ == level) return;
  ws.tables_.resize(components_.size());
  for (size_t c = 0; c < components_.size(); ++c) {
    auto& t = ws.tables_[c];
    ComponentValues(components_[c], level, t.values);
    t.total = 0.0;
    for (double v : t.values) t.total += v;
    t.alias = t.total > 0.0 ? AliasTable(t.values) : AliasTable();
  }
  ws.level_ = level;
}

namespace {

template <typename T>
uint64_t ConvertInteger(const uint32_t* hist, int ch, T* out) {
  constexpr uint32_t kMax = std::numeric_limits<T>::max();
  uint64_t saturated = 0;
  for (int j = 0; j < ch; ++j) {
    const uint32_t v = hist[j];
    saturated += v > kMax;
    out[j] = static_cast<T>(std::min(v, kMax));
  }
  return saturated;
}

/// Fills noise[0..ch) with table entries picked by 16-bit slices of the generator (4 per draw).
template <typename V>
void DrawNoise(Rng& rng, const V* table, int ch, V* noise) {
  int j = 0;
  for (; j + 4 <= ch; j += 4) {
    const uint64_t bits = rng.Next();
    noise[j] = table[bits & 0xFFFF];
    noise[j + 1] = table[(bits >> 16) & 0xFFFF];
    noise[j + 2] = table[(bits >> 32) & 0xFFFF];
    noise[j + 3] = table[bits >> 48];
  }
  if (j < ch) {
    uint64_t bits = rng.Next();
    for (; j < ch; ++j, bits >>= 16) noise[j] = table[bits & 0xFFFF];
  }
}

/// counts + round(σ·z), clamped to [0, max]. Since counts are integers, floor(c + σz + ½) = c + floor(σz + ½):
/// the rounding is done once, in the table, and this loop is integer-only (vectorises, no branches).
template <typename T, typename I>
uint64_t ConvertIntegerNoisy(const uint32_t* hist, const int32_t* noise, int ch, T* out) {
  constexpr I kMax = static_cast<I>(std::numeric_limits<T>::max());
  I saturated = 0;
  for (int j = 0; j < ch; ++j) {
    const I v = static_cast<I>(hist[j]) + static_cast<I>(noise[j]);
    saturated += v > kMax ? 1 : 0;
    const I lo = v < 0 ? 0 : v;
    out[j] = static_cast<T>(lo > kMax ? kMax : lo);
  }
  return static_cast<uint64_t>(saturated);
}

}  // namespace

uint64_t Simulator::GenerateFrame(uint64_t frame_number, FrameWorkspace& ws, std::span<std::byte> out) const {
  const FrameInfo info = Frame(frame_number);
  const int ch = options_.channels;
  const size_t bytes = PayloadBytes(info.spectrum_count);
  if (out.size() < bytes) throw std::invalid_argument("GenerateFrame: output buffer too small");
  Rng rng(MixSeed(options_.seed ^ kFrameStream, frame_number));
  ws.histogram_.resize(ch);
  ws.abundances_.resize(scene_.PhaseCount());
  const bool damage = DamageEnabled();
  const float sigma = static_cast<float>(options_.readout_noise_counts);
  const float* table = noise_table_.data();
  uint64_t saturated = 0;
  uint32_t* hist = ws.histogram_.data();
  ws.histogram2_.resize(ch);
  uint32_t* hist2 = ws.histogram2_.data();
  // Two interleaved histograms pay off once the draws outnumber the channels (zeroing and adding the
  // second one costs ~2 passes over the channels).
  const uint64_t kTwoHistogramCounts = 2 * static_cast<uint64_t>(ch);
  ws.dense_mu_.resize(ch);
  double* dense_mu = ws.dense_mu_.data();
  ws.noise_.resize(ch);
  float* noise = ws.noise_.data();
  ws.rounded_noise_.resize(ch);
  int32_t* rounded_noise = ws.rounded_noise_.data();

  for (uint32_t s = 0; s < info.spectrum_count; ++s) {
    const uint64_t i = info.start_index + s;
    const SpectrumPosition pos = Position(i);
    PrepareLevel(ws, ShiftLevel(i));
    scene_.Abundances(pos.x, pos.y, pos.pass, ws.abundances_);
    const double w = damage ? IntactWeight(pos.pass) : 1.0;
    std::memset(hist, 0, sizeof(uint32_t) * ch);
    bool hist2_used = false;
    bool dense_used = false;

    for (int p = 0; p < scene_.PhaseCount(); ++p) {
      const double a = ws.abundances_[p];
      if (a <= 0.0) continue;
      for (int v = 0; v < (damage ? 2 : 1); ++v) {
        const double weight = a * (v == 0 ? w : 1.0 - w);
        if (weight <= 0.0) continue;
        const auto& t = ws.tables_[ComponentIndex(p, v == 1)];
        const double lambda = weight * t.total;
        if (!(lambda > 0.0)) continue;
        if (lambda > kDenseCountsPerChannel * ch) {
          // Collected and drawn once per channel below: a sum of independent Poissons is Poisson.
          if (!dense_used) std::fill(dense_mu, dense_mu + ch, 0.0);
          dense_used = true;
          const double* values = t.values.data();
          for (int j = 0; j < ch; ++j) dense_mu[j] += weight * values[j];
        } else {
          const uint64_t n = SamplePoisson(rng, lambda);
          if (n >= kTwoHistogramCounts) {
            if (!hist2_used) std::memset(hist2, 0, sizeof(uint32_t) * ch);
            hist2_used = true;
            t.alias.DrawInto2(rng, n, hist, hist2);
          } else {
            t.alias.DrawInto(rng, n, hist);
          }
        }
      }
    }
    if (hist2_used) {
      for (int j = 0; j < ch; ++j) hist[j] += hist2[j];
    }
    if (dense_used) {
      for (int j = 0; j < ch; ++j) hist[j] += static_cast<uint32_t>(SamplePoisson(rng, dense_mu[j]));
    }

    std::byte* dst = out.data() + size_t{s} * ch * BytesPerSample();
    switch (options_.payload) {
      case PayloadKind::kUint16:
        if (sigma > 0.0f) {
          DrawNoise(rng, rounded_noise_table_.data(), ch, rounded_noise);
          saturated += ConvertIntegerNoisy<uint16_t, int32_t>(hist, rounded_noise, ch, reinterpret_cast<uint16_t*>(dst));
        } else {
          saturated += ConvertInteger(hist, ch, reinterpret_cast<uint16_t*>(dst));
        }
        break;
      case PayloadKind::kUint32:
        if (sigma > 0.0f) {
          DrawNoise(rng, rounded_noise_table_.data(), ch, rounded_noise);
          saturated += ConvertIntegerNoisy<uint32_t, int64_t>(hist, rounded_noise, ch, reinterpret_cast<uint32_t*>(dst));
        } else {
          saturated += ConvertInteger(hist, ch, reinterpret_cast<uint32_t*>(dst));
        }
        break;
      case PayloadKind::kFloat32: {
        auto* f = reinterpret_cast<float*>(dst);
        if (sigma > 0.0f) {
          DrawNoise(rng, table, ch, noise);
          for (int j = 0; j < ch; ++j) f[j] = static_cast<float>(hist[j]) + sigma * noise[j];
        } else {
          for (int j = 0; j < ch; ++j) f[j] = static_cast<float>(hist[j]);
        }
        break;
      }
    }
  }
  return saturated;
}

}  // namespace specwatch::sim
