#pragma once
/// Keeps a young model from learning a rare phase before the novelty thresholds exist (docs/science.md §6).
///
/// Until the novelty detector monitors, the model learns what it is given; a rare inclusion scanned in that time
/// (0.2 % of the pixels, a few tens of spectra at high dose) is then learnt as a component of its own and is never
/// novel again. The guard screens every scored spectrum while the detector is not monitoring: a spectrum whose
/// standardised deviance z lies above median + sigma · robust σ (1.4826 · MAD) of the recent scores is held out
/// of the model. What is rare stays out; what is common must be learnt: when spectra above the bound reach
/// max_fraction of the last release_window_spectra (a phase the young model has not seen yet, a boundary region, a
/// model after a rank change) the guard lets them through, so the model catches up, and holds out again as soon as
/// they are rare. The release window is short (512 spectra, a few scan lines) so that the guard is open only while
/// the model catches up: a rare inclusion scanned meanwhile is learnt too, one scanned later is not. An inclusion
/// cluster crossing a line (a few adjacent pixels) is far below 5 % of 512.
///
///   recent   the last window_spectra scores (held-out ones included: the median and MAD are robust to them)
///   bound    recomputed every refresh_spectra scores, once min_samples are in; +inf before (nothing is held out)
///
/// Concurrency: stateful; one thread at a time, spectra in order (a serial flow-graph stage).

#include <cstdint>
#include <deque>
#include <vector>

namespace specwatch {

struct OutlierGuardOptions {
  bool enabled = true;
  int window_spectra = 4096;   ///< recent scores the bound and the held-out fraction are taken over
  int min_samples = 256;       ///< scores seen before anything is held out
  int refresh_spectra = 256;   ///< scores between two recomputations of the bound
  double sigma = 10.0;         ///< bound = median + sigma · robust σ
  int release_window_spectra = 512;  ///< recent spectra over which the fraction above the bound is taken
  double max_fraction = 0.05;  ///< fraction above the bound at which the guard lets them through
  /// Throws ConfigError naming the field ("sigma ..."; operators/core/config_error.hpp).
  void Validate() const;
};

class OutlierGuard {
 public:
  explicit OutlierGuard(OutlierGuardOptions options);  ///< throws ConfigError

  /// One scored spectrum (z finite): true when it is to be held out of the model.
  bool Screen(float z);
  /// Forgets the recent scores (the model was reset: its scores change meaning).
  void Reset();

  double bound() const { return bound_; }     ///< +inf until min_samples scores were seen
  uint64_t held_out() const { return held_out_total_; }  ///< since construction
  /// Spectra let through above the bound because held-out ones were common (since construction).
  uint64_t released() const { return released_total_; }

 private:
  void Refresh();

  OutlierGuardOptions options_;
  std::deque<float> recent_;
  std::deque<uint64_t> above_recent_;  // indices of spectra above the bound (held out or not), release window
  uint64_t index_ = 0;                    // scores seen since the last Reset
  uint64_t since_refresh_ = 0;
  double bound_;
  uint64_t held_out_total_ = 0, released_total_ = 0;
  std::vector<float> workspace_;
};

}  // namespace specwatch
