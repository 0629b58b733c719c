#pragma once
/// Novelty events with a calibrated false-alarm rate (docs/science.md §6).
///
/// Each spectrum comes with two scores from Denoise: the standardised Poisson deviance z of its residual
/// (something the model lacks) and the Hotelling T² of its scores (an unusual mixture of what it has). The
/// detector learns, from a calibration window of nominal spectra, the thresholds z exceeds with probability
/// (1 − hotelling_share) · false_alarm_rate and T² with hotelling_share · false_alarm_rate (tail_threshold.hpp: a
/// GPD fit to the upper tail, robust to a little contamination), then flags spectra above either as novel.
///
/// States: calibrating → monitoring → (regime change) absorbing → calibrating → ...
/// - calibrating: spectra collect as calibration samples (only those marked in the reference region, when the
///   client names one). Once exclusion_min_samples were collected, a spectrum far above them (z above median +
///   exclusion_sigma · robust σ of the samples so far) is excluded: it enters neither the calibration nor, by its
///   verdict, the model. Not by T²: on a scan with phase domains it is multi-modal (pure-phase pixels sit far
///   out on one axis), a robust spread says nothing about its outliers, and excluding by it kept whole phases
///   from the model.
///   When calibration_spectra samples are in, both tails are fitted; if a fit fails the detector keeps
///   collecting (samples capped at 4 x calibration_spectra, the oldest dropped) and refits every
///   calibration_spectra / 4 more samples, rather than monitor with a bad threshold.
/// - monitoring: the thresholds are fixed; novel spectra are published and never learnt (OperandoMonitor does not
///   give the detector first-visit spectra it lets through as common: those are learnt). When the novel
///   fraction of the last regime_window_spectra spectra reaches regime_fraction and stays there for
///   regime_min_span_spectra, what is novel is no longer rare:
///   a regime change is reported once, and the detector absorbs.
/// - absorbing: for absorb_spectra spectra everything is nominal (the model learns the new regime), then the
///   detector recalibrates on it.
///
/// A spectrum whose score is not finite (no model yet: pass NaN) is nominal and not scored; it changes nothing.
///
/// Concurrency: stateful; one thread at a time, spectra in order (a serial flow-graph stage).

#include "operators/monitor/tail_threshold.hpp"

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace specwatch {

/// Options of the novelty detector (config section "novelty").
struct NoveltyOptions {
  double false_alarm_rate = 1e-4;  ///< per spectrum, both scores together (hotelling_share)
  bool use_hotelling = true;       ///< also flag spectra by the Hotelling T² of their scores
  /// T²'s share of false_alarm_rate (z gets the rest). T² of a scan is bounded by its pure phases and depends on
  /// where the calibration window lay and on the model learning on: on the simulator's EDS its tail fit was ~4x
  /// optimistic over 10^6 spectra (docs/novelty_and_drift.md), so it gets the smaller share.
  double hotelling_share = 0.1;
  int calibration_spectra = 20000; ///< samples collected before the thresholds are fitted
  TailFitOptions tail;             ///< "novelty.tail"
  int exclusion_min_samples = 1000;  ///< provisional exclusion during calibration starts after this many samples
  double exclusion_sigma = 10.0;     ///< ... for spectra above median + exclusion_sigma · robust σ
  int regime_window_spectra = 4096;  ///< spectra over which the novel fraction is watched
  double regime_fraction = 0.05;     ///< novel fraction of the window that is a regime change
  int absorb_spectra = 4096;         ///< spectra learnt as nominal after a regime change, before recalibrating
  /// ... and only once the fraction has held for this many spectra (at most half the window): time for a drift
  /// tracker to explain it first. OperandoMonitor raises it to the energy tracker's worst confirmation
  /// delay (a block straddling the step plus confirm_blocks blocks: 3 x 512, plus a frame).
  int regime_min_span_spectra = 1536;
  /// Throws ConfigError naming the field ("false_alarm_rate ..."; operators/core/config_error.hpp).
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
  /// Forgets the novel spectra of the regime window (their cause is known and corrected: an energy shift the
  /// model now follows), so they do not count towards a new phase.
  void ClearRegimeWindow() {
    recent_novel_.clear();
    regime_since_.reset();
  }

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
  double z_exclusion_ = 0;
  bool exclusion_active_ = false;
  TailFit deviance_fit_, hotelling_fit_;
  std::string calibration_problem_;
  // Monitoring.
  double z_threshold_ = 0, t2_threshold_ = 0;
  std::deque<uint64_t> recent_novel_;  // indices of novel spectra within the regime window
  std::optional<uint64_t> regime_since_;  // index at which the novel fraction reached regime_fraction
  uint64_t absorb_left_ = 0;
  // Counters.
  uint64_t scored_ = 0, novel_ = 0, excluded_ = 0, regime_changes_ = 0;
};

}  // namespace specwatch
