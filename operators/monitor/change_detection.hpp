#pragma once
/// Change detection on the novelty score (docs/science.md §7.3): a two-sided CUSUM on block means of a
/// per-spectrum score.
///
/// A per-spectrum threshold catches a rare phase; it cannot see a small shift of the whole distribution (a dose
/// change, a detector gain drift, a thin film thickening), which moves every score a little. Averaged over a
/// block of b spectra the shift stands out of noise shrunk by sqrt(b), and the CUSUM accumulates evidence over
/// blocks. Block means are also close to Gaussian whatever the score's tail (docs/science.md §6: p99.9 of z is
/// 3.5-5), which is what makes the run-length formula below hold.
///
/// Why CUSUM and not Page–Hinkley: Page–Hinkley measures the deviation from the running mean of everything
/// seen, so a long in-control history and the change itself move its reference; it has no in-control run length
/// in closed form. The CUSUM with a calibrated baseline is the same recursion with a fixed reference, so its
/// in-control average run length (ARL) is given by Siegmund's approximation and h can be chosen for a false-alarm
/// budget; and where its statistic last left 0 estimates the onset of the change.
///
/// Method. Scores are clipped to [−clip, clip] (so a few rare novel spectra, the business of the threshold, do
/// not move a block mean) and non-finite ones skipped. Every block_spectra scores give a block mean m. The first
/// calibration_blocks block means give the baseline μ, σ robustly: median and 1.4826·MAD, then the mean and
/// standard deviation of the block means within 3.5 robust σ of the median (full efficiency on Gaussian block
/// means, blind to a few outlying ones). σ is floored at 1e-9·max(1, |μ|). Then, with u = (m − μ)/σ,
///   S⁺ ← max(0, S⁺ + u − k),  S⁻ ← max(0, S⁻ − u − k),  alarm when S⁺ > h or S⁻ > h.
/// The onset is the first spectrum of the first block of the alarming side's current excursion (the block after
/// its statistic was last 0); the magnitude is the mean of the block means since the onset minus μ, in score
/// units (equal to σ·(k + S/N) over the N blocks of the excursion). After an alarm both statistics reset and the
/// baseline is calibrated again from the next calibration_blocks blocks (no alarm while calibrating).
/// The onset can be early when a chance excursion runs into the change. That is mostly the baseline's error: μ
/// from 64 blocks is off by σ/8 typically, and μ 0.25σ low makes in-control increments average −0.25 instead of
/// −0.5 (measured: a 0.1-sd shift, 20 runs: onset within 1 block of the truth in 11, within 2 in 14, 2-7 blocks
/// early in 5, 71 blocks early in the run whose μ was 0.25σ low). The maximum likelihood change point within the
/// excursion (Hinkley 1971) was tried and did no better: it inherits the same baseline error.
/// In-control ARL (Siegmund 1985), one-sided, for increments N(δ + k, 1) and reference k, in blocks:
///   ARL(δ) ≈ (exp(−2δb) + 2δb − 1) / (2δ²),  δ ≠ 0;   b²,  δ = 0;   b = h + 1.166,
/// in control δ = −k: ARL₀ ≈ (exp(2kb) − 2kb − 1) / (2k²).
/// Two-sided: 1/ARL = 1/ARL⁺ + 1/ARL⁻ (Lucas & Crosier 1982).
/// Default h (h_sd = 0): the smallest h with two-sided ARL₀ >= in_control_arl_spectra / block_spectra blocks,
/// in_control_arl_spectra = 10⁸ = one false alarm per 10⁷ spectra with a factor 10 margin (for σ estimated from
/// 64 blocks, ±9%, and a block mean's residual skewness). With k = 0.5 and 256 spectra per block: h ≈ 11.7.
///
/// Concurrency: stateful, one thread at a time (a serial flow-graph stage, frames in order). Memory: O(1) plus
/// calibration_blocks doubles.

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace specwatch {

/// Options of the CUSUM on block means (config section "drift.cusum").
struct BlockCusumOptions {
  int block_spectra = 256;      ///< scores averaged per block
  int calibration_blocks = 64;  ///< blocks learning the baseline (at the start and after each alarm)
  double k_sd = 0.5;            ///< reference value, in block-mean sd; detects best a shift of 2k sd
  double h_sd = 0.0;            ///< decision interval, in block-mean sd; 0 = from in_control_arl_spectra
  double in_control_arl_spectra = 1e8;  ///< in-control average run length wanted when h_sd = 0, in spectra
  /// h in block-mean sd: h_sd, or when 0 the smallest h meeting in_control_arl_spectra (CusumHForArl).
  double DecisionInterval() const;
  /// Throws ConfigError naming the field ("block_spectra ...").
  void Validate() const;
};

/// Siegmund's approximation of a one-sided CUSUM's average run length, in blocks, for standardised increments
/// of mean `mean_sd` (0 in control), reference k and decision interval h (both in sd).
double SiegmundArl(double k, double h, double mean_sd);
/// The same for the two-sided CUSUM (1/ARL = 1/ARL⁺ + 1/ARL⁻).
double SiegmundArlTwoSided(double k, double h, double mean_sd);
/// The smallest h (to 1e-6) whose two-sided in-control ARL is >= arl_blocks.
double CusumHForArl(double k, double arl_blocks);

enum class ChangeDirection : int8_t { kDown = -1, kUp = 1 };

struct ChangeAlarm {
  ChangeDirection direction = ChangeDirection::kUp;
  uint64_t onset_spectrum = 0;     ///< estimated start: first spectrum of the excursion's first block
  uint64_t detected_spectrum = 0;  ///< last spectrum of the block that raised the alarm
  double magnitude = 0;            ///< shift of the mean since the onset, score units (negative when down)
  double statistic_sd = 0;         ///< S⁺ or S⁻ at the alarm, block-mean sd
  double baseline_mean = 0;        ///< μ the shift is measured from
  double baseline_sd = 0;          ///< σ of a block mean
};

class BlockCusum {
 public:
  /// Scores are clipped to [−clip, clip]: the caller passes its novelty threshold, a value of the data, not an
  /// option (so never validated as one): a clip that is not > 0 (or NaN) clips nothing. Throws ConfigError for
  /// bad options (options.Validate).
  explicit BlockCusum(BlockCusumOptions options = {}, double clip = std::numeric_limits<double>::infinity());

  /// Scores of consecutive spectra; scores[i] is spectrum first_spectrum + i. Returns the alarms raised
  /// (usually none; at most one per block).
  std::vector<ChangeAlarm> Add(std::span<const float> scores, uint64_t first_spectrum);
  /// Forgets everything: the baseline is calibrated again (series boundary, re-baseline).
  void Reset();
  /// Uses a known baseline (block-mean mean and sd, sd > 0) instead of calibrating; statistics restart at 0 and
  /// the open block is kept. For a baseline restored from a previous run, and for tests. After the next alarm
  /// the baseline is calibrated again as usual.
  void SetBaseline(double mean, double sd);

  bool calibrated() const { return calibrated_; }
  double baseline_mean() const { return mean_; }
  double baseline_sd() const { return sd_; }
  double decision_interval_sd() const { return h_; }
  double upper_statistic() const { return up_.s; }
  double lower_statistic() const { return down_.s; }
  uint64_t blocks() const { return blocks_; }                  ///< completed blocks since Reset
  uint64_t skipped_spectra() const { return skipped_; }        ///< non-finite scores since Reset
  const BlockCusumOptions& options() const { return options_; }

 private:
  struct Side {
    double s = 0;         // statistic, sd units
    uint64_t blocks = 0;  // blocks in the current excursion (since s was last 0)
    double sum = 0;       // sum of their block means
    uint64_t onset = 0;   // first spectrum of the excursion's first block
  };

  void CloseBlock(std::vector<ChangeAlarm>& alarms);
  void Calibrate();
  static void Step(Side& side, double increment, double block_mean, uint64_t block_first);

  BlockCusumOptions options_;
  double clip_;
  double h_;
  // Open block.
  double block_sum_ = 0;
  int block_count_ = 0;
  uint64_t block_first_ = 0;
  uint64_t block_last_ = 0;
  // Baseline.
  bool calibrated_ = false;
  std::vector<double> calibration_;  // block means
  double mean_ = 0;
  double sd_ = 0;
  Side up_;
  Side down_;
  uint64_t blocks_ = 0;
  uint64_t skipped_ = 0;
};

}  // namespace specwatch
