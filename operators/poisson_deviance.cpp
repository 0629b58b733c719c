#include "operators/poisson_deviance.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace specwatch {
namespace {

// The grid is read through the float's bit pattern: exponent and the top kMantissaBits of the mantissa give the
// node, the remaining bits the interpolation weight. That makes the lookup a shift and a mask (no logarithm),
// with nodes 2^e (1 + j/64): relative spacing 1/128 .. 1/64, where linear interpolation errs by < 2e-5.
constexpr int kMantissaBits = 6;
constexpr int kNodesPerOctave = 1 << kMantissaBits;
constexpr int kShift = 23 - kMantissaBits;
constexpr int kLowestExponent = -10;   // 2^-10 ≈ 9.8e-4
constexpr int kHighestExponent = 17;   // 2^17 = 131072
constexpr int kNodes = (kHighestExponent - kLowestExponent) * kNodesPerOctave + 1;
constexpr uint32_t kLowBits = static_cast<uint32_t>(127 + kLowestExponent) << 23;
constexpr uint32_t kHighBits = (static_cast<uint32_t>(127 + kHighestExponent) << 23) - 1;  // just below 2^17
constexpr uint32_t kBase = kLowBits >> kShift;
constexpr float kFractionScale = 1.0f / static_cast<float>(1u << kShift);
constexpr double kGridLow = 0x1p-10;
constexpr double kGridHigh = 0x1p17;

// Asymptotic series above the grid, f = 1 + a1/μ + a2/μ², g = 2 + b1/μ + b2/μ² (a1 = 1/6 is the Bartlett
// correction; the rest read off direct summation at μ = 1e3 .. 1e5, where ((f − 1)μ − a1)μ and ((g − 2)μ − b1)μ
// settle at 1/6 and 4/3). At μ > 1.3e5 the μ^-3 terms are below 1e-14.
constexpr double kMeanA1 = 1.0 / 6.0;
constexpr double kMeanA2 = 1.0 / 6.0;
constexpr double kVarB1 = 2.0 / 3.0;
constexpr double kVarB2 = 4.0 / 3.0;

struct Entry {
  float f, df, g, dg;  // value at the node and the step to the next node
};

struct Table {
  std::array<Entry, kNodes> entries;
  Table() {
    std::vector<double> f(kNodes), g(kNodes);
    for (int k = 0; k < kNodes; ++k) {
      const double mu = std::ldexp(1.0 + static_cast<double>(k % kNodesPerOctave) / kNodesPerOctave,
                                   kLowestExponent + k / kNodesPerOctave);
      PoissonDevianceMomentsExact(mu, &f[k], &g[k]);
    }
    for (int k = 0; k < kNodes; ++k) {
      const int next = std::min(k + 1, kNodes - 1);
      entries[k] = {static_cast<float>(f[k]), static_cast<float>(f[next] - f[k]), static_cast<float>(g[k]),
                    static_cast<float>(g[next] - g[k])};
    }
  }
};

const Table& GetTable() {
  static const Table table;  // built once, on first use; C++11 guarantees thread-safe initialisation
  return table;
}

// Node index and interpolation weight of μ inside the grid (μ clamped to it).
inline void Locate(float mu, uint32_t* node, float* fraction) {
  const uint32_t bits = std::clamp(std::bit_cast<uint32_t>(mu), kLowBits, kHighBits);
  *node = (bits >> kShift) - kBase;
  *fraction = static_cast<float>(bits & ((1u << kShift) - 1)) * kFractionScale;
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
  if (mu > kGridHigh) return 1.0 + (kMeanA1 + kMeanA2 / mu) / mu;
  if (mu < kGridLow) {
    double f, g;
    PoissonDevianceMomentsExact(mu, &f, &g);
    return f;
  }
  uint32_t node;
  float fraction;
  Locate(static_cast<float>(mu), &node, &fraction);
  const Entry& e = GetTable().entries[node];
  return static_cast<double>(e.f) + static_cast<double>(fraction) * e.df;
}

double PoissonDevianceVariance(double mu) {
  if (!(mu > 0.0)) return 0.0;
  if (mu > kGridHigh) return 2.0 + (kVarB1 + kVarB2 / mu) / mu;
  if (mu < kGridLow) {
    double f, g;
    PoissonDevianceMomentsExact(mu, &f, &g);
    return g;
  }
  uint32_t node;
  float fraction;
  Locate(static_cast<float>(mu), &node, &fraction);
  const Entry& e = GetTable().entries[node];
  return static_cast<double>(e.g) + static_cast<double>(fraction) * e.dg;
}

void SumPoissonDevianceMoments(std::span<const float> mu, double* sum_mean, double* sum_variance) {
  const Entry* table = GetTable().entries.data();
  const size_t n = mu.size();
  size_t j = 0;
  double f = 0.0, g = 0.0;
#if defined(__AVX512F__)
  // Compilers do not vectorise the table reads. By hand: per 8 channels, one 64-bit gather of the (f, df) pairs and
  // one of the (g, dg) pairs (gathers cost per element, so pairs halve it), each multiplied by (1, fraction)
  // lane pairs and summed: only the sums Σ f + fraction · df are needed, never the per-channel values.
  static_assert(sizeof(Entry) == 4 * sizeof(float));
  const __m256i low = _mm256_set1_epi32(static_cast<int>(kLowBits));
  const __m256i high = _mm256_set1_epi32(static_cast<int>(kHighBits));
  const __m256i base = _mm256_set1_epi32(static_cast<int>(kBase));
  const __m256i mask = _mm256_set1_epi32((1 << kShift) - 1);
  const __m256 scale = _mm256_set1_ps(kFractionScale);
  const __m512i spread = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512 ones = _mm512_set1_ps(1.0f);
  const auto* fields = reinterpret_cast<const long long*>(table);  // 2 x 64 bits per entry
  __m512 vf = _mm512_setzero_ps(), vg = _mm512_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    // Positive floats order like their bit patterns, so the clamp can be done on integers (μ >= floor > 0).
    __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(mu.data() + j));
    bits = _mm256_min_epu32(_mm256_max_epu32(bits, low), high);
    const __m256i node = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_srli_epi32(bits, kShift), base), 1);
    const __m256 fraction = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(bits, mask)), scale);
    const __m512 weight =
        _mm512_mask_blend_ps(0xAAAA, ones, _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(fraction)));
    const __m512 fdf = _mm512_castsi512_ps(_mm512_i32gather_epi64(node, fields, 8));
    const __m512 gdg = _mm512_castsi512_ps(_mm512_i32gather_epi64(node, fields + 1, 8));
    vf = _mm512_fmadd_ps(fdf, weight, vf);
    vg = _mm512_fmadd_ps(gdg, weight, vg);
  }
  f = _mm512_reduce_add_ps(vf);
  g = _mm512_reduce_add_ps(vg);
#endif
  // Eight independent partial sums: one running sum would serialise on the add latency.
  constexpr size_t kLanes = 8;
  std::array<float, kLanes> sf{}, sg{};
  for (; j + kLanes <= n; j += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) {
      uint32_t node;
      float fraction;
      Locate(mu[j + l], &node, &fraction);
      const Entry& e = table[node];
      sf[l] += e.f + fraction * e.df;
      sg[l] += e.g + fraction * e.dg;
    }
  }
  for (; j < n; ++j) {
    uint32_t node;
    float fraction;
    Locate(mu[j], &node, &fraction);
    const Entry& e = table[node];
    sf[0] += e.f + fraction * e.df;
    sg[0] += e.g + fraction * e.dg;
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
                                   DevianceWorkspace* workspace) {
  DevianceWorkspace local;
  DevianceWorkspace& w = workspace != nullptr ? *workspace : local;
  const auto x = counts.array();
  w.mu = reconstruction.array().max(kDevianceFloor);
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
                                                      int n) {
  const Eigen::Index d = std::min(counts.size(), reconstruction.size());
  std::vector<DevianceContribution> all(static_cast<size_t>(d));
  for (Eigen::Index j = 0; j < d; ++j) {
    const float x = counts(j);
    const float mu = std::max(reconstruction(j), kDevianceFloor);
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
