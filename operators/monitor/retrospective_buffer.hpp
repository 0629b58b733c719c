#pragma once
/// Spectra of the current pass kept for retrospective scoring (issue 15; docs/science.md §6 "Retrospective"):
/// at each pass end the Session scores them again with the pass-end model, and those novel then but not flagged
/// live are published as retrospective novelty events.
///
/// Not every spectrum of a pass is kept (a 256 x 256 pass of 2,048 channels is 512 MiB of floats): only the
/// candidates, the spectra a pass-end model could find novel that the live one did not flag:
///   - every spectrum scored before a threshold existed (no model yet, or fewer than the guard's first scores);
///   - every spectrum whose live score was above location + candidate_sigma · scale of the recent scores (the
///     guard's robust standardisation): a spectrum the young model already explained well is not kept.
/// At most max_spectra are kept per pass; when full, a candidate evicts the kept one of lowest priority (its
/// standardised live score; unscored spectra rank highest). Memory: max_spectra · channels · 4 bytes, 16 MiB at
/// the defaults and 2,048 channels.
///
/// Concurrency: stateful; one thread at a time (the Session's consume side).

#include "operators/core/spectrum_batch.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <limits>
#include <vector>

namespace specwatch {

struct RetrospectiveOptions {
  bool enabled = true;
  int max_spectra = 2048;        ///< candidates kept per pass
  double candidate_sigma = 3.0;  ///< live score above location + candidate_sigma · scale: kept
  /// Throws ConfigError naming the field.
  void Validate() const;
};

/// One kept spectrum and where it came from.
struct RetrospectiveCandidate {
  ScanPosition position;
  uint64_t frame_number = 0;
  uint32_t spectrum_index = 0;     ///< within its frame
  double acquisition_time_s = 0;   ///< of its frame
  double priority = 0;             ///< standardised live score; +inf when it was not scored
  float live_z = std::numeric_limits<float>::quiet_NaN();  ///< NaN when it was not scored
  Eigen::VectorXf counts;
};

class RetrospectiveBuffer {
 public:
  explicit RetrospectiveBuffer(RetrospectiveOptions options);  ///< throws ConfigError

  /// Offers one spectrum (priority as above); kept if there is room or it outranks the lowest kept one.
  void Offer(RetrospectiveCandidate candidate);
  /// Hands out and forgets the candidates of `pass` (in arrival order); those of other passes stay.
  std::vector<RetrospectiveCandidate> Take(uint32_t pass);
  void Clear() { kept_.clear(); }
  /// The candidates scored before any standardisation existed (live_z finite, priority +inf) get their
  /// priority, (live_z − location) / scale; those at or below min_priority are forgotten (the model explained
  /// them well). Unscored candidates (live_z NaN) stay unranked.
  void RankScored(double location, double scale, double min_priority);

  const RetrospectiveOptions& options() const { return options_; }
  size_t size() const { return kept_.size(); }
  uint64_t evicted() const { return evicted_; }  ///< candidates dropped for room, since construction

 private:
  RetrospectiveOptions options_;
  std::vector<RetrospectiveCandidate> kept_;  // arrival order
  uint64_t evicted_ = 0;
};

}  // namespace specwatch
