#include "operators/core/poisson_deviance.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include <Eigen/QR>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace specwatch {
namespace {

// f and g are read off per-octave polynomials: μ = 2^e · m, m in [1, 2), and in octave e
//   f(μ) ≈ Σ_c F[c][e] · t^c,  t = m − 1.5,  degree 6,
// fitted by least squares to direct summation at 32 Chebyshev nodes per octave (relative error < 2e-5, measured
// against direct summation in the unit test). The octave is the float's exponent and t comes from its mantissa
// bits, so a lookup is a shift, a mask and a Horner sum; the 32 octaves [2^-16, 2^16) fit two AVX-512 registers
// per coefficient, read with one in-register permute per coefficient instead of a memory gather. The grid reaches
// down to kDevianceFloor, so sparse spectra (a few counts over thousands of channels, μ ~ 1e-3 per channel and
// less) are scored with their own moments; above 2^16 counts per channel the hot path reads the last octave, off
// by < 1/(6 · 2^16) ≈ 2.5e-6 per channel.
constexpr int kDegree = 6;
constexpr int kCoefficients = kDegree + 1;
constexpr int kLowestExponent = -16;   // 2^-16 ≈ 1.5e-5 = kDevianceFloor
constexpr int kOctaves = 32;           // up to 2^16 = 65536
constexpr int kHighestExponent = kLowestExponent + kOctaves;
constexpr uint32_t kLowBits = static_cast<uint32_t>(127 + kLowestExponent) << 23;
constexpr uint32_t kHighBits = (static_cast<uint32_t>(127 + kHighestExponent) << 23) - 1;  // just below 2^16
constexpr uint32_t kMantissaMask = (1u << 23) - 1;
constexpr uint32_t kOneBits = 127u << 23;  // 1.0f
constexpr double kGridLow = 0x1p-16;
constexpr double kGridHigh = 0x1p16;
// Above this the asymptotic series is exact to < 1e-11 and replaces direct summation when fitting.
constexpr double kSeriesFrom = 0x1p13;

// Asymptotic series, f = 1 + a1/μ + a2/μ², g = 2 + b1/μ + b2/μ² (a1 = 1/6 is the Bartlett correction; the rest
// read off direct summation at μ = 1e3 .. 1e5, where ((f − 1)μ − a1)μ and ((g − 2)μ − b1)μ settle at 1/6 and
// 4/3). The μ^-3 terms are below 1e-11 above 2^13.
constexpr double kMeanA1 = 1.0 / 6.0;
constexpr double kMeanA2 = 1.0 / 6.0;
constexpr double kVarB1 = 2.0 / 3.0;
constexpr double kVarB2 = 4.0 / 3.0;

struct Table {
  // Coefficient-major: f[c] holds coefficient c of the 32 octaves, contiguous (two 16-float registers).
  alignas(64) float f[kCoefficients][kOctaves];
  alignas(64) float g[kCoefficients][kOctaves];
  Table() {
    constexpr int kNodes = 32;
    Eigen::MatrixXd vandermonde(kNodes, kCoefficients);
    Eigen::VectorXd t(kNodes);
    for (int i = 0; i < kNodes; ++i) {
      t(i) = 0.5 * std::cos(std::numbers::pi * (i + 0.5) / kNodes);  // Chebyshev nodes on [-0.5, 0.5]
      for (int c = 0; c < kCoefficients; ++c) vandermonde(i, c) = std::pow(t(i), c);
    }
    const Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(vandermonde);
    Eigen::VectorXd fv(kNodes), gv(kNodes);
    for (int o = 0; o < kOctaves; ++o) {
      for (int i = 0; i < kNodes; ++i) {
        const double mu = std::ldexp(1.5 + t(i), kLowestExponent + o);
        if (mu >= kSeriesFrom) {
          fv(i) = 1.0 + (kMeanA1 + kMeanA2 / mu) / mu;
          gv(i) = 2.0 + (kVarB1 + kVarB2 / mu) / mu;
        } else {
          PoissonDevianceMomentsExact(mu, &fv(i), &gv(i));
        }
      }
      const Eigen::VectorXd cf = qr.solve(fv), cg = qr.solve(gv);
      for (int c = 0; c < kCoefficients; ++c) {
        f[c][o] = static_cast<float>(cf(c));
        g[c][o] = static_cast<float>(cg(c));
      }
    }
  }
};

const Table& GetTable() {
  static const Table table;  // built once, on first use; C++11 guarantees thread-safe initialisation
  return table;
}

// Octave and polynomial variable of μ inside the grid (μ clamped to it).
inline void Locate(float mu, uint32_t* octave, float* t) {
  const uint32_t bits = std::clamp(std::bit_cast<uint32_t>(mu), kLowBits, kHighBits);
  *octave = (bits >> 23) - (127 + kLowestExponent);
  *t = std::bit_cast<float>((bits & kMantissaMask) | kOneBits) - 1.5f;
}

inline float Horner(const float (&coefficients)[kCoefficients][kOctaves], uint32_t octave, float t) {
  float v = coefficients[kDegree][octave];
  for (int c = kDegree - 1; c >= 0; --c) v = v * t + coefficients[c][octave];
  return v;
}

// d(x; μ) in double, with the cancellation between x ln(x/μ) and x − μ done through log1p.
inline double UnitDeviance(double x, double mu) {
  if (x <= 0.0) return 2.0 * mu;
  const double delta = x - mu;
  return 2.0 * (x * std::log1p(delta / mu) - delta);
}

}  // namespace

void PoissonDevianceMomentsExact(double mu, double* mean, double* variance) {
  *mean = 0.0;
  *variance = 0.0;
  if (!(mu > 0.0) || !std::isfinite(mu)) return;
  // Unnormalised pmf by recurrence outwards from the mode, normalised by its sum: no lgamma, no underflow at the
  // mode. 12 standard deviations (plus a margin for the skew at small μ) leave < 1e-30 of the mass out.
  const double mode = std::floor(mu);
  const double reach = std::ceil(12.0 * std::sqrt(mu) + 30.0);
  const double lo = std::max(0.0, mode - reach);
  const double hi = mode + reach;
  const auto count = static_cast<size_t>(hi - lo) + 1;
  std::vector<double> weight(count), dev(count);
  const auto at_mode = static_cast<size_t>(mode - lo);
  weight[at_mode] = 1.0;
  for (size_t i = at_mode + 1; i < count; ++i) weight[i] = weight[i - 1] * mu / (lo + static_cast<double>(i));
  for (size_t i = at_mode; i-- > 0;) weight[i] = weight[i + 1] * (lo + static_cast<double>(i + 1)) / mu;
  double total = 0.0, sum = 0.0;
  for (size_t i = 0; i < count; ++i) {
    dev[i] = UnitDeviance(lo + static_cast<double>(i), mu);
    total += weight[i];
    sum += weight[i] * dev[i];
  }
  const double f = sum / total;
  double squares = 0.0;  // second pass about the mean: no cancellation in E d² − f²
  for (size_t i = 0; i < count; ++i) squares += weight[i] * (dev[i] - f) * (dev[i] - f);
  *mean = f;
  *variance = squares / total;
}

double PoissonDevianceMean(double mu) {
  if (!(mu > 0.0)) return 0.0;
  if (mu >= kGridHigh) return 1.0 + (kMeanA1 + kMeanA2 / mu) / mu;
  if (mu < kGridLow) {
    double f, g;
    PoissonDevianceMomentsExact(mu, &f, &g);
    return f;
  }
  uint32_t octave;
  float t;
  Locate(static_cast<float>(mu), &octave, &t);
  return Horner(GetTable().f, octave, t);
}

double PoissonDevianceVariance(double mu) {
  if (!(mu > 0.0)) return 0.0;
  if (mu >= kGridHigh) return 2.0 + (kVarB1 + kVarB2 / mu) / mu;
  if (mu < kGridLow) {
    double f, g;
    PoissonDevianceMomentsExact(mu, &f, &g);
    return g;
  }
  uint32_t octave;
  float t;
  Locate(static_cast<float>(mu), &octave, &t);
  return Horner(GetTable().g, octave, t);
}

void SumPoissonDevianceMoments(std::span<const float> mu, double* sum_mean, double* sum_variance) {
  const Table& table = GetTable();
  const size_t n = mu.size();
  size_t j = 0;
  double f = 0.0, g = 0.0;
#if defined(__AVX512F__)
  // Per 16 channels: the octave index from the exponent bits, t from the mantissa bits, and per coefficient one
  // two-register permute (32 octaves) and one FMA, for f and for g. Only the sums are needed.
  const __m512i low = _mm512_set1_epi32(static_cast<int>(kLowBits));
  const __m512i high = _mm512_set1_epi32(static_cast<int>(kHighBits));
  const __m512i bias = _mm512_set1_epi32(127 + kLowestExponent);
  const __m512i mantissa = _mm512_set1_epi32(static_cast<int>(kMantissaMask));
  const __m512i one = _mm512_set1_epi32(static_cast<int>(kOneBits));
  const __m512 half_and_one = _mm512_set1_ps(1.5f);
  __m512 fl[kCoefficients], fh[kCoefficients], gl[kCoefficients], gh[kCoefficients];
  for (int c = 0; c < kCoefficients; ++c) {
    fl[c] = _mm512_load_ps(table.f[c]);
    fh[c] = _mm512_load_ps(table.f[c] + 16);
    gl[c] = _mm512_load_ps(table.g[c]);
    gh[c] = _mm512_load_ps(table.g[c] + 16);
  }
  __m512 vf = _mm512_setzero_ps(), vg = _mm512_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    // Positive floats order like their bit patterns, so the clamp can be done on integers (μ >= floor > 0).
    __m512i bits = _mm512_castps_si512(_mm512_loadu_ps(mu.data() + j));
    bits = _mm512_min_epu32(_mm512_max_epu32(bits, low), high);
    const __m512i octave = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), bias);
    const __m512 t = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, mantissa), one)),
                                   half_and_one);
    __m512 pf = _mm512_permutex2var_ps(fl[kDegree], octave, fh[kDegree]);
    __m512 pg = _mm512_permutex2var_ps(gl[kDegree], octave, gh[kDegree]);
    for (int c = kDegree - 1; c >= 0; --c) {
      pf = _mm512_fmadd_ps(pf, t, _mm512_permutex2var_ps(fl[c], octave, fh[c]));
      pg = _mm512_fmadd_ps(pg, t, _mm512_permutex2var_ps(gl[c], octave, gh[c]));
    }
    vf = _mm512_add_ps(vf, pf);
    vg = _mm512_add_ps(vg, pg);
  }
  f = _mm512_reduce_add_ps(vf);
  g = _mm512_reduce_add_ps(vg);
#endif
  // Eight independent partial sums: one running sum would serialise on the add latency.
  constexpr size_t kLanes = 8;
  std::array<float, kLanes> sf{}, sg{};
  for (; j + kLanes <= n; j += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) {
      uint32_t octave;
      float t;
      Locate(mu[j + l], &octave, &t);
      sf[l] += Horner(table.f, octave, t);
      sg[l] += Horner(table.g, octave, t);
    }
  }
  for (; j < n; ++j) {
    uint32_t octave;
    float t;
    Locate(mu[j], &octave, &t);
    sf[0] += Horner(table.f, octave, t);
    sg[0] += Horner(table.g, octave, t);
  }
  for (size_t l = 0; l < kLanes; ++l) {
    f += sf[l];
    g += sg[l];
  }
  *sum_mean = f;
  *sum_variance = g;
}

DevianceScore ScorePoissonDeviance(const Eigen::Ref<const Eigen::VectorXf>& counts,
                                   const Eigen::Ref<const Eigen::VectorXf>& reconstruction,
                                   DevianceWorkspace* workspace, const Eigen::ArrayXf* lower) {
  DevianceWorkspace local;
  DevianceWorkspace& w = workspace != nullptr ? *workspace : local;
  const auto x = counts.array();
  w.mu = reconstruction.array().max(kDevianceFloor);
  if (lower != nullptr) w.mu = w.mu.max(*lower);
  // Whole-array steps so Eigen vectorises the log (a select() around it compiles to a scalar loop, 5x slower);
  // x = 0 gives 0 · log(tiny / μ) = 0.
  w.log_ratio = (x.max(std::numeric_limits<float>::min()) / w.mu).log();
  DevianceScore s;
  s.deviance = 2.0 * static_cast<double>((x * w.log_ratio - (x - w.mu)).sum());
  SumPoissonDevianceMoments(std::span<const float>(w.mu.data(), static_cast<size_t>(w.mu.size())), &s.expected,
                            &s.variance);
  s.z = s.variance > 0.0 ? (s.deviance - s.expected) / std::sqrt(s.variance) : 0.0;
  return s;
}

std::vector<DevianceContribution> TopDevianceChannels(const Eigen::Ref<const Eigen::VectorXf>& counts,
                                                      const Eigen::Ref<const Eigen::VectorXf>& reconstruction,
                                                      int n, const Eigen::ArrayXf* lower) {
  const Eigen::Index d = std::min(counts.size(), reconstruction.size());
  std::vector<DevianceContribution> all(static_cast<size_t>(d));
  for (Eigen::Index j = 0; j < d; ++j) {
    const float x = counts(j);
    float mu = std::max(reconstruction(j), kDevianceFloor);
    if (lower != nullptr && j < lower->size()) mu = std::max(mu, (*lower)(j));
    const double excess = UnitDeviance(std::max(x, 0.0f), mu) - PoissonDevianceMean(mu);
    all[j] = {static_cast<int>(j), x, mu, static_cast<float>(excess), x > mu ? 1 : (x < mu ? -1 : 0)};
  }
  const size_t keep = std::min(all.size(), static_cast<size_t>(std::max(n, 0)));
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(),
                    [](const DevianceContribution& a, const DevianceContribution& b) { return a.excess > b.excess; });
  all.resize(keep);
  return all;
}

}  // namespace specwatch
