#include "operators/monitor/tail_threshold.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

namespace specwatch {
namespace {

constexpr double kMinShape = -0.5;
// |γ| below this is the exponential limit (σ/γ (r^−γ − 1) → −σ ln r), computed as such to avoid 0/0.
constexpr double kExponentialShape = 1e-9;
constexpr int kTrimRounds = 8;
constexpr size_t kMaxLeaveOut = 20;

struct Gpd {
  double scale = 0, shape = 0, loglik = -std::numeric_limits<double>::infinity();
};

// Peaks above u, `censored` of the largest of them known only to exceed `censor_at` (as peak heights).
// Profile likelihood over θ = γ/σ: for fixed θ, ∂ℓ/∂γ = 0 gives γ = (S + k C)/N_u with S = Σ ln(1 + θ y_i) over
// the N_u uncensored peaks and C = ln(1 + θ c), so ℓ_p(θ) = −N_u ln(γ/θ) − S − N_u (θ → 0: the exponential fit).
class ProfileLikelihood {
 public:
  ProfileLikelihood(std::span<const double> peaks, int censored, double censor_at)
      : peaks_(peaks), censored_(censored), censor_at_(censor_at) {
    for (double y : peaks) sum_ += y;
  }

  // γ and σ at θ; false outside the domain (1 + θ y <= 0 somewhere) or below the shape bound.
  bool At(double theta, Gpd* out) const {
    const double n = static_cast<double>(peaks_.size());
    if (std::abs(theta) * Largest() < 1e-12) {
      const double scale = (sum_ + censored_ * censor_at_) / n;
      if (!(scale > 0.0)) return false;
      *out = {scale, 0.0, -n * std::log(scale) - n};
      return true;
    }
    double s = 0.0;
    for (double y : peaks_) {
      const double a = theta * y;
      if (a <= -1.0) return false;
      s += std::log1p(a);
    }
    double c = 0.0;
    if (censored_ > 0) {
      if (theta * censor_at_ <= -1.0) return false;
      c = std::log1p(theta * censor_at_);
    }
    const double shape = (s + censored_ * c) / n;
    const double scale = shape / theta;
    if (!(scale > 0.0) || !std::isfinite(scale) || shape < kMinShape) return false;
    *out = {scale, shape, -n * std::log(scale) - s - n};
    return true;
  }

  double Largest() const { return std::max(peaks_.empty() ? 0.0 : peaks_.back(), censored_ > 0 ? censor_at_ : 0.0); }

 private:
  std::span<const double> peaks_;  // ascending
  int censored_;
  double censor_at_;
  double sum_ = 0.0;
};

// Maximises the profile likelihood over t = θ · y_max: a scan over (−1, 0) ∪ {0} ∪ (0, 1e6], then golden section
// between the neighbours of the best scan point.
Gpd FitGpd(std::span<const double> peaks, int censored, double censor_at) {
  const ProfileLikelihood profile(peaks, censored, censor_at);
  const double largest = profile.Largest();
  if (!(largest > 0.0)) return {};
  std::vector<double> ts;
  for (int i = 0; i <= 120; ++i) ts.push_back(-1.0 + std::exp(-14.0 * std::pow(1e-6, i / 120.0)));  // (−1, 0)
  ts.push_back(0.0);
  for (int i = 0; i <= 120; ++i) ts.push_back(std::pow(10.0, -6.0 + 12.0 * i / 120.0));  // 1e-6 .. 1e6
  std::sort(ts.begin(), ts.end());
  Gpd best;
  size_t best_at = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    Gpd g;
    if (profile.At(ts[i] / largest, &g) && g.loglik > best.loglik) {
      best = g;
      best_at = i;
    }
  }
  if (!std::isfinite(best.loglik)) return best;
  double lo = ts[best_at > 0 ? best_at - 1 : 0], hi = ts[std::min(best_at + 1, ts.size() - 1)];
  const double ratio = (std::sqrt(5.0) - 1.0) / 2.0;
  const auto value = [&](double t) {
    Gpd g;
    return profile.At(t / largest, &g) ? g.loglik : -std::numeric_limits<double>::infinity();
  };
  double a = hi - ratio * (hi - lo), b = lo + ratio * (hi - lo);
  double fa = value(a), fb = value(b);
  for (int it = 0; it < 80 && hi - lo > 1e-12 * (1.0 + std::abs(lo)); ++it) {
    if (fa < fb) {
      lo = a;
      a = b;
      fa = fb;
      b = lo + ratio * (hi - lo);
      fb = value(b);
    } else {
      hi = b;
      b = a;
      fb = fa;
      a = hi - ratio * (hi - lo);
      fa = value(a);
    }
  }
  Gpd refined;
  if (profile.At(0.5 * (lo + hi) / largest, &refined) && refined.loglik > best.loglik) best = refined;
  return best;
}

// P(Poisson(λ) >= j) = P(j, λ), the regularised lower incomplete gamma function, by its series.
double PoissonAtLeast(int j, double lambda) {
  if (j <= 0) return 1.0;
  if (!(lambda > 0.0)) return 0.0;
  const double a = j;
  double term = 1.0 / a, sum = term;
  for (int k = 1; k < 100000; ++k) {
    term *= lambda / (a + k);
    sum += term;
    if (term < sum * 1e-15) break;
  }
  return std::min(1.0, std::exp(a * std::log(lambda) - lambda - std::lgamma(a)) * sum);
}

double Survival(const TailFit& fit, double value, double n) {
  const double peaks = static_cast<double>(fit.peaks);
  const double y = value - fit.initial_threshold;
  if (y <= 0.0) return peaks / n;
  if (std::abs(fit.shape) < kExponentialShape) return peaks / n * std::exp(-y / fit.scale);
  const double base = 1.0 + fit.shape * y / fit.scale;
  if (base <= 0.0) return 0.0;
  return peaks / n * std::pow(base, -1.0 / fit.shape);
}

}  // namespace

void TailFitOptions::Validate() const {
  RequireOption(initial_quantile >= 0.5 && initial_quantile < 1.0, "initial_quantile", "in [0.5, 1)", initial_quantile);
  RequireOption(max_trim_fraction >= 0.0 && 2.0 * max_trim_fraction < 1.0 - initial_quantile, "max_trim_fraction",
                "in [0, (1 - initial_quantile) / 2)", max_trim_fraction);
  RequireOption(trim_p_value > 0.0 && trim_p_value < 1.0, "trim_p_value", "in (0, 1)", trim_p_value);
  RequireOption(min_peaks >= 10, "min_peaks", ">= 10", min_peaks);
}

double TailFit::TailProbability(double value) const {
  const double n = static_cast<double>(samples - trimmed);
  if (!ok || n <= 0.0) return 0.0;
  return Survival(*this, value, n);
}

TailFit FitTailThreshold(std::span<const double> samples, double alpha, const TailFitOptions& options) {
  TailFit fit;
  fit.alpha = alpha;
  std::vector<double> x;
  x.reserve(samples.size());
  for (double v : samples) {
    if (std::isfinite(v)) x.push_back(v);
  }
  std::sort(x.begin(), x.end());
  fit.samples = x.size();
  const auto max_trim = static_cast<size_t>(options.max_trim_fraction * static_cast<double>(x.size()));
  size_t kept = x.size();  // x[0, kept) are the samples not trimmed

  // Fits the kept samples; the top `censored` of them right-censored at the largest uncensored one.
  const auto fit_kept = [&](size_t censored) {
    fit.ok = false;
    fit.trimmed = x.size() - kept;
    if (kept < 2) {
      fit.failure = "too few samples";
      return;
    }
    const auto at = static_cast<size_t>(options.initial_quantile * static_cast<double>(kept - 1));
    const double u = x[at];
    const size_t first_peak = static_cast<size_t>(std::upper_bound(x.begin(), x.begin() + kept, u) - x.begin());
    const size_t peaks = kept - first_peak;
    fit.initial_threshold = u;
    fit.peaks = peaks;
    if (peaks < static_cast<size_t>(options.min_peaks)) {
      fit.failure = "too few peaks above the initial threshold (" + std::to_string(peaks) + " < " +
                    std::to_string(options.min_peaks) + "; ties at u?)";
      return;
    }
    censored = std::min(censored, peaks - static_cast<size_t>(options.min_peaks) / 2);
    std::vector<double> y(x.begin() + static_cast<std::ptrdiff_t>(first_peak),
                          x.begin() + static_cast<std::ptrdiff_t>(kept - censored));
    for (double& v : y) v -= u;
    const double censor_at = y.empty() ? 0.0 : y.back();
    Gpd gpd = FitGpd(y, static_cast<int>(censored), censor_at);
    fit.exponential_fallback = !std::isfinite(gpd.loglik);
    if (fit.exponential_fallback) {
      double sum = censor_at * static_cast<double>(censored);
      for (double v : y) sum += v;
      gpd = {sum / static_cast<double>(y.size()), 0.0, 0.0};
    }
    if (!(gpd.scale > 0.0) || !std::isfinite(gpd.scale)) {
      fit.failure = "no spread above the initial threshold";
      return;
    }
    fit.scale = gpd.scale;
    fit.shape = gpd.shape;
    const double n = static_cast<double>(kept);
    const double r = alpha * n / static_cast<double>(peaks);
    if (!(alpha > 0.0) || r >= 1.0) {
      fit.failure = "alpha must be in (0, peaks / samples = " + std::to_string(static_cast<double>(peaks) / n) + ")";
      return;
    }
    fit.threshold = std::abs(gpd.shape) < kExponentialShape
                        ? u - gpd.scale * std::log(r)
                        : u + gpd.scale / gpd.shape * (std::pow(r, -gpd.shape) - 1.0);
    fit.ok = std::isfinite(fit.threshold);
    fit.failure = fit.ok ? "" : "threshold not finite";
  };
  // The fewest top samples (at most `limit`) whose removal leaves every remaining top sample plausible: the j-th
  // largest of the rest is implausible when P(Poisson(n · S(x)) >= j) < trim_p_value / 10 (stricter than the
  // leave-k-out test below: this fit, with many samples censored, is the coarser one). S is the fit's tail with the
  // shape raised to at least 0 plus one standard error (≈ (1 + γ)/sqrt(N_t)): a bounded or light fitted tail must
  // not make the sample's own extremes look impossible; what is trimmed must be improbable even under that.
  const auto outliers = [&](size_t limit) {
    TailFit test = fit;  // Survival reads peaks, u, scale and shape
    test.shape = std::max(fit.shape, 0.0) + (1.0 + std::abs(fit.shape)) / std::sqrt(static_cast<double>(fit.peaks));
    for (size_t k = 0; k <= limit && k < kept; ++k) {
      const double n = static_cast<double>(kept - k);
      bool plausible = true;
      for (size_t j = 1; j + k <= limit && j + k <= kept && plausible; ++j) {
        const double lambda = n * Survival(test, x[kept - k - j], n);
        plausible = PoissonAtLeast(static_cast<int>(j), lambda) >= options.trim_p_value / 10.0;
      }
      if (plausible) return k;
    }
    return limit;
  };

  // Fits robust to the contamination: the top samples that may still be anomalies censored (only their number
  // counts). Each round trims what that fit finds implausible; fewer anomalies left, fewer censored, a sharper fit.
  for (int round = 0; round < kTrimRounds && max_trim > 0; ++round) {
    const size_t left = max_trim - (x.size() - kept);
    fit_kept(left);
    if (!fit.ok) return fit;
    const size_t trim = outliers(left);
    if (trim == 0) break;
    kept -= trim;
  }
  // The censored rounds can leave an anomaly or two just above the genuine maximum, and one such sample is
  // enough to make the uncensored MLE's tail heavy. So, leave-k-out: for k = 1 .. kMaxLeaveOut, fit with the top k
  // censored (a small k costs the fit little) and trim the largest k whose k-th largest sample is implausible.
  {
    const size_t budget = std::min(kMaxLeaveOut, max_trim - (x.size() - kept));
    size_t trim = 0;
    for (size_t k = 1; k <= budget; ++k) {
      fit_kept(k);
      if (!fit.ok) break;
      const double n = static_cast<double>(kept);
      if (PoissonAtLeast(static_cast<int>(k), n * Survival(fit, x[kept - k], n)) < options.trim_p_value) trim = k;
    }
    kept -= trim;
  }
  fit_kept(0);
  return fit;
}

}  // namespace specwatch
