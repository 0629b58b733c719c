#pragma once
/// The provisional novelty threshold: novelty from the first scored spectra, before (and whenever) the novelty
/// detector's tail fit is not in force (docs/science.md §6 "Provisional threshold").
///
/// The Poisson null of the deviance score z has mean 0 and sd 1 when the reconstruction is the true mean; a young
/// model (a few hundred spectra, an estimated mean and basis) adds variance and moves the centre. So the guard
/// standardises by the recent scores themselves, robustly, and sets a threshold for the user's false-alarm rate α
/// on the standardised score u = (z − location) / scale:
///
///   location = median, scale = max(1.4826 · MAD, min_scale) of the last window_spectra scores
///   u_α      = max( q(α) + (q(α)² − 1) · skewness / 6,                   normal quantile, Cornish–Fisher
///                   u99 + (u99 − u90) · log10(0.01 / α) )                 the recent tail, extrapolated
///                                                                         exponentially (one decade per u99 − u90)
///   u90, u99 the standardised 90th and 99th percentiles of the recent scores with u < tail_sigma
///   bound    = location + scale · min(u_α, sigma)
///
/// The extrapolation takes over where the recent scores' tail is heavier than a Gaussian's (as a young model's
/// is); the normal term where the window is too short to show its tail. The window holds every score, held-out
/// ones too (the median, the MAD and the 90th and 99th percentiles are robust to the rare ones, and a common
/// novelty makes the bound conservative, not permissive). Refreshed after 64, 128, 256 scores, then every
/// refresh_spectra; +inf (nothing held out) before min_samples scores.
///
/// A spectrum above the bound is provisionally novel: held out of the model (and of the detector's calibration)
/// and published. What is rare stays out; what is common must be learnt: when spectra above the bound reach
/// max_fraction of the last release_window_spectra, or come release_run_spectra in a row (a phase the young model
/// has not seen yet, a model after a rank change), the guard lets them through, so the model catches up, and holds
/// out again as soon as they are rare. An inclusion crossing a scan line (a few adjacent pixels) is below both.
///
/// While the detector's fitted thresholds are in force the caller passes scores to Track: the window stays
/// current, so the provisional threshold is ready the moment it is needed again (a rank change, a recalibration).
///
/// Concurrency: stateful; one thread at a time, spectra in order (a serial flow-graph stage).

#include <cstdint>
#include <deque>
#include <vector>

namespace specwatch {

struct OutlierGuardOptions {
  bool enabled = true;
  int window_spectra = 1024;   ///< recent scores the bound and the held-out fraction are taken over
  int min_samples = 64;        ///< scores seen before anything is held out
  int refresh_spectra = 256;   ///< scores between two recomputations of the bound, once 256 are in
  /// The per-spectrum false-alarm rate α the bound is set for. OperandoMonitor sets it to the detector's
  /// novelty.false_alarm_rate (one rate, chosen by the user, for both thresholds).
  double false_alarm_rate = 1e-4;
  double skewness = 0.3;       ///< Cornish–Fisher allowance: the deviance's null is right-skewed
  double min_scale = 0.25;     ///< floor of the robust scale (a window of near-identical scores)
  /// Ceiling: the bound is never above median + sigma · scale (a window whose tail a common novelty inflates).
  /// Not lower: an exponential tail at α = 1e-4 already extrapolates to ~12 robust σ (10 gave 4x the rate).
  double sigma = 25.0;
  /// The 90th and 99th percentiles are those of the recent scores below median + tail_sigma · scale: what is
  /// that far out is not the nominal tail (a phase domain crossed in the window, inclusions).
  double tail_sigma = 10.0;
  int release_window_spectra = 256;  ///< recent spectra over which the fraction above the bound is taken
  double max_fraction = 0.05;  ///< fraction above the bound at which the guard lets them through
  /// ... or this many consecutive scored spectra above the bound: in a raster scan a phase domain the model has
  /// not seen starts as a run along the line, while an inclusion crosses a line in a few pixels.
  int release_run_spectra = 6;
  /// Throws ConfigError naming the field ("sigma ..."; operators/core/config_error.hpp).
  void Validate() const;
};

/// The standard normal's upper quantile: P(N(0,1) > q) = p, for p in (0, 1).
double NormalUpperQuantile(double p);

class OutlierGuard {
 public:
  explicit OutlierGuard(OutlierGuardOptions options);  ///< throws ConfigError

  /// One scored spectrum (z finite): true when it is provisionally novel, to be held out of the model.
  bool Screen(float z);
  /// One scored spectrum while the fitted thresholds are in force: updates the window, holds nothing out, and
  /// returns true when the spectrum is above `threshold` (the one in force) and what is above it is common (the
  /// release rules): the caller's cue that a first visit of the scan has reached a phase the model has yet to
  /// learn.
  bool Track(float z, double threshold);
  /// Forgets the recent scores (the model was reset: its scores change meaning).
  void Reset();

  double bound() const { return bound_; }     ///< +inf until min_samples scores were seen
  double location() const { return location_; }
  double scale() const { return scale_; }
  /// P(z' > z) for a nominal z' under the exponential extrapolation of the recent tail, at most 0.01 (the fit
  /// says nothing about the bulk); 1 before the bound exists.
  double TailProbability(double z) const;
  uint64_t held_out() const { return held_out_total_; }  ///< since construction
  /// Spectra let through above the bound because held-out ones were common (since construction).
  uint64_t released() const { return released_total_; }

 private:
  void Push(float z);
  void Refresh();
  /// Counts a spectrum above the bound or not (release window, run); true when what is above is common.
  bool Common(bool above, uint64_t index);

  OutlierGuardOptions options_;
  std::deque<float> recent_;
  std::deque<uint64_t> above_recent_;  // indices of spectra above the bound (held out or not), release window
  uint64_t index_ = 0;                    // scores seen since the last Reset
  uint64_t next_refresh_ = 0;             // index_ at which the bound is recomputed
  int run_ = 0;                           // consecutive scored spectra above the bound
  double bound_;
  double location_ = 0, scale_ = 1, u90_ = 0, u99_ = 0;
  uint64_t held_out_total_ = 0, released_total_ = 0;
  std::vector<float> workspace_;
};

}  // namespace specwatch
