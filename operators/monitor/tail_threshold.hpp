#pragma once
/// A threshold with a chosen exceedance probability, from a generalised Pareto fit to the upper tail
/// (peaks over threshold, as SPOT: Siffer et al. 2017, "Anomaly detection in streams with extreme value theory").
/// docs/science.md §6: novelty scores have a heavier tail than a Gaussian, so a threshold for a false-alarm rate
/// of 1e-4 or 1e-5 cannot come from the bulk of the data; it comes from the tail.
///
///   u      = initial_quantile of the samples (default the 98th percentile)
///   peaks  y = x − u for the N_t samples above u, fitted by maximum likelihood with a GPD(σ, γ):
///            P(X > u + y | X > u) = (1 + γ y/σ)^(−1/γ)
///   z_α    = u + σ/γ ((α n / N_t)^(−γ) − 1)      (γ → 0: u − σ ln(α n / N_t))
///
/// The MLE is profiled over θ = γ/σ, which gives γ in closed form (Grimshaw's reduction): a 1-D scan of the
/// profile likelihood plus golden-section refinement. γ is kept >= −0.5 (below it the likelihood is unbounded
/// near the sample maximum). Should the profile yield nothing finite, the exponential fit (γ = 0, σ = mean peak)
/// is the fallback.
///
/// Contamination: a calibration window may hold up to max_trim_fraction genuine anomalies, far in the tail (a rare
/// phase on 0.2 % of the pixels). Fitted as they are, they make the tail look heavy and inflate the threshold
/// many-fold; a single one left in is enough. Trimming, in two steps (trimmed samples leave the sample: n counts
/// the rest; at most max_trim_fraction of the samples are trimmed in all):
/// 1. rounds of a robust fit, with the top max_trim_fraction of the samples (less what is already trimmed)
///    right-censored: only their number enters, not their values. Under that fit, with the shape raised to
///    >= 0 plus one standard error (a light or bounded fitted tail must not make the sample's own extremes look
///    impossible), the fewest top samples are trimmed whose removal leaves each remaining j-th largest plausible:
///    P(Poisson(n · S(x_(j))) >= j) >= trim_p_value / 10. Repeated until nothing more is trimmed.
/// 2. leave-k-out for k = 1 .. 20: fit with the top k censored; the largest k whose k-th largest sample is
///    implausible (P < trim_p_value) under that fit is trimmed. This catches the one or two anomalies just above
///    the genuine maximum that step 1's coarser fit lets through.
/// The final fit is uncensored, on what is left. Censoring many samples costs the fit its precision (the shape is
/// read from the far tail), which is why the final fit does not keep them censored.
///
/// Concurrency: FitTailThreshold is a pure function; TailFit is a value.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace specwatch {

/// Options of the tail fit (config section "novelty.tail").
struct TailFitOptions {
  double initial_quantile = 0.98;    ///< u: the quantile of the samples above which peaks are fitted
  double max_trim_fraction = 0.005;  ///< at most this fraction of the samples is trimmed as contamination
  double trim_p_value = 1e-4;        ///< a top sample is trimmed when its rank is this improbable under the fit
  int min_peaks = 30;                ///< fewer peaks above u: the fit fails
  /// Throws ConfigError naming the field ("<prefix>.initial_quantile ...").
  void Validate() const;
};

/// The fitted tail and the threshold it gives.
struct TailFit {
  bool ok = false;
  std::string failure;            ///< why the fit failed; empty when ok
  double alpha = 0;               ///< the exceedance probability asked for
  uint64_t samples = 0;           ///< samples given
  uint64_t trimmed = 0;           ///< of them, trimmed as contamination (n = samples − trimmed)
  uint64_t peaks = 0;             ///< N_t: kept samples above u
  double initial_threshold = 0;   ///< u
  double scale = 0;               ///< σ of the GPD
  double shape = 0;               ///< γ of the GPD (0: exponential tail; > 0 heavy; < 0 bounded)
  bool exponential_fallback = false;  ///< the GPD likelihood gave nothing usable; γ = 0 was fitted instead
  double threshold = 0;           ///< z_α: exceeded with probability alpha

  /// P(X > value) under the fit, for reporting how extreme a value is. For value <= u it returns N_t / n
  /// (the probability is at least that; the fit says nothing below u). 0 for a failed fit.
  double TailProbability(double value) const;
};

/// Fits the upper tail of `samples` (any order; non-finite values are ignored) and returns the threshold exceeded
/// with probability `alpha`. Never throws for data-dependent problems: too few peaks, no spread above u, or alpha
/// not below N_t / n give ok = false with the reason. Cost O(n log n) (a sort) + O(N_t) per likelihood evaluation
/// (a few hundred of them).
TailFit FitTailThreshold(std::span<const double> samples, double alpha, const TailFitOptions& options = {});

}  // namespace specwatch
