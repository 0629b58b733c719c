#pragma once
/// Novelty events with a calibrated false-alarm rate (DOMAIN.md sections 5 to 7).
///
/// Each spectrum comes with two scores from Denoise: the standardised Poisson deviance z of its residual
/// (something the model lacks) and the Hotelling T² of its scores (an unusual mixture of what it has). The
/// detector learns, from a calibration window of nominal spectra, the thresholds each score exceeds with
/// probability false_alarm_rate / 2 (tail_threshold.hpp: a GPD fit to the upper tail, robust to a little
/// contamination), then flags spectra above either as novel.
///
/// States: calibrating → monitoring → (regime change) absorbing → calibrating → ...
/// - calibrating: spectra collect as calibration samples (only those marked in the reference region, when the
///   client names one). Once exclusion_min_samples were collected, a spectrum far above them (either score above
///   median + exclusion_sigma · robust σ of the samples so far; T² on a sqrt scale, where its chi-square-like
///   law is near Gaussian) is excluded: it enters neither the calibration nor, by its verdict, the model.
///   When calibration_spectra samples are in, both tails are fitted; if a fit fails the detector keeps
///   collecting (samples capped at 4 x calibration_spectra, the oldest dropped) and refits every
///   calibration_spectra / 4 more samples, rather than monitor with a bad threshold.
/// - monitoring: the thresholds are fixed; novel spectra are published and never learnt. When the novel
///   fraction of the last regime_window_spectra spectra reaches regime_fraction, what is novel is no longer rare:
///   a regime change is reported once, and the detector absorbs.
/// - absorbing: for absorb_spectra spectra everything is nominal (the model learns the new regime), then the
///   detector recalibrates on it.
///
/// A spectrum whose score is not finite (no model yet: pass NaN) is nominal and not scored; it changes nothing.
///
/// Concurrency: stateful; one thread at a time, spectra in order (a serial flow-graph stage).

#include "operators/tail_threshold.hpp"

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace specwatch {

/// Options of the novelty detector (config section "novelty").
struct NoveltyOptions {
  double false_alarm_rate = 1e-4;  ///< per spectrum; split in halves between z and T² when use_hotelling
  bool use_hotelling = true;       ///< also flag spectra by the Hotelling T² of their scores
  int calibration_spectra = 20000; ///< samples collected before the thresholds are fitted
  TailFitOptions tail;             ///< "novelty.tail"
  int exclusion_min_samples = 1000;  ///< provisional exclusion during calibration starts after this many samples
  double exclusion_sigma = 10.0;     ///< ... for spectra above median + exclusion_sigma · robust σ
  int regime_window_spectra = 4096;  ///< spectra over which the novel fraction is watched
  double regime_fraction = 0.05;     ///< novel fraction of the window that is a regime change
  int absorb_spectra = 4096;         ///< spectra learnt as nominal after a regime change, before recalibrating
  /// Throws ConfigError naming the field ("novelty.false_alarm_rate ...").
  void Validate() const;
};

enum class NoveltyState { kCalibrating, kMonitoring, kAbsorbing };
const char* ToString(NoveltyState state);

/// Per-spectrum outcome.
enum class NoveltyVerdict : uint8_t {
  kNominal = 0,   ///< learnt by the model
  kNovel = 1,     ///< monitoring: above a threshold. Publish; never learn; never calibrate on it
  kExcluded = 2,  ///< calibrating: a provisional outlier. Not learnt, not published
};

/// The novel fraction of the recent spectra reached regime_fraction: not a rare phase but a new regime.
struct RegimeChange {
  uint64_t onset_spectrum = 0;  ///< index (counted from the detector's construction) of the window's first novel one
  double fraction = 0;          ///< novel fraction of the window
  int window_spectra = 0;
};

class NoveltyDetector {
 public:
  explicit NoveltyDetector(NoveltyOptions options);  ///< throws ConfigError

  /// One frame's spectra, in order. `z` and `t2` (same length m; t2 may be empty when use_hotelling is false)
  /// are Denoise's deviance_z and hotelling_t2. `in_reference` is empty (every spectrum may calibrate) or holds m
  /// flags (only those != 0 calibrate). `verdicts` receives m verdicts. Returns the regime change, if this frame
  /// completed one (then the spectra after it in the frame are already absorbed). Span sizes that disagree are a
  /// caller bug: std::invalid_argument.
  std::optional<RegimeChange> Observe(std::span<const float> z, std::span<const float> t2,
                                      std::span<const uint8_t> in_reference, std::span<NoveltyVerdict> verdicts);

  /// Forgets the calibration and the regime window and starts calibrating again (a client's request, a new
  /// sample). Counters are kept.
  void Recalibrate();

  NoveltyState state() const { return state_; }
  /// Calibration samples collected (while calibrating), and the count at which the (next) fit is tried.
  uint64_t collected() const { return z_samples_.size(); }
  uint64_t needed() const;
  /// collected / needed while calibrating, 1 otherwise.
  double progress() const;
  /// The last fits (ok = false before any, or when the last attempt failed: see failure).
  const TailFit& deviance_fit() const { return deviance_fit_; }
  const TailFit& hotelling_fit() const { return hotelling_fit_; }
  /// Why the detector is still calibrating after a fit attempt ("" if it is not, or never tried).
  const std::string& calibration_problem() const { return calibration_problem_; }

  uint64_t scored() const { return scored_; }      ///< spectra with finite scores
  uint64_t novel() const { return novel_; }
  uint64_t excluded() const { return excluded_; }
  uint64_t regime_changes() const { return regime_changes_; }

 private:
  NoveltyVerdict Calibrate(float z, float t2, bool reference);
  void RefreshExclusion();
  void TryFit();

  NoveltyOptions options_;
  NoveltyState state_ = NoveltyState::kCalibrating;
  uint64_t index_ = 0;  // spectra observed since construction
  // Calibration.
  std::deque<double> z_samples_, t2_samples_;
  bool attempted_ = false;        // a fit was tried (and failed) in this calibration
  uint64_t since_attempt_ = 0;    // samples collected since the calibration began or the last attempt
  uint64_t exclusion_refreshed_at_ = 0;  // since_attempt_ at the last refresh of the exclusion bounds
  double z_exclusion_ = 0, root_t2_exclusion_ = 0;
  bool exclusion_active_ = false;
  TailFit deviance_fit_, hotelling_fit_;
  std::string calibration_problem_;
  // Monitoring.
  double z_threshold_ = 0, t2_threshold_ = 0;
  std::deque<uint64_t> recent_novel_;  // indices of novel spectra within the regime window
  uint64_t absorb_left_ = 0;
  // Counters.
  uint64_t scored_ = 0, novel_ = 0, excluded_ = 0, regime_changes_ = 0;
};

}  // namespace specwatch
