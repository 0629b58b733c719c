#pragma once
/// Residual maps: one value per scan position of one scan pass (docs/science.md §11).
///
/// A phase present in a handful of pixels carries almost no variance, so the model leaves it out and the
/// denoised spectra hide it; its spectra keep a large residual. Laid out on the scan, those residuals show
/// where the model fails — the rare phase stays visible even when the reconstruction erases it.
///
/// ResidualMapper collects per-spectrum residual values of one series in scan order and hands out a finished
/// PassMap when a pass is complete (every position of the scan seen), when a spectrum of a later pass arrives,
/// or when the caller closes it (series end, new series, shutdown). One pass is open at a time: a spectrum of
/// an earlier pass than the open one, or of a pass already handed out, is ignored.
///
/// Concurrency: stateful, one thread at a time (a serial flow-graph stage, frames in order).

#include "operators/core/spectrum_batch.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace specwatch {

/// Robust location and scale of a set of values, and how many stand out above them.
struct RobustSummary {
  uint64_t count = 0;           ///< finite values summarised
  double median = 0;
  double robust_sigma = 0;      ///< 1.4826 · median absolute deviation (σ for Gaussian data)
  double outlier_threshold = 0; ///< median + outlier_sigma · robust_sigma
  uint64_t outliers = 0;        ///< values >= outlier_threshold; 0 when robust_sigma is 0
  double max = 0;
};

/// Summarises the finite entries of `values` (NaN and ±inf are skipped). One-sided: only values above the
/// median count as outliers (a small residual is never news). Cost O(n) (two nth_element passes).
RobustSummary SummariseRobust(std::span<const float> values, double outlier_sigma);

/// One scan pass laid out on the scan: values[y · width + x], NaN where no scored spectrum came.
struct PassMap {
  ScanShape shape;
  uint32_t pass = 0;
  std::string statistic;         ///< name of the value (set by the first scored spectrum); "" if none
  std::string closed_by;         ///< "complete", "next_pass", "scan_shape", or the reason given to Close
  std::vector<float> values;     ///< height x width, row-major
  uint64_t positions_scored = 0;
  uint64_t spectra = 0;          ///< spectra of the pass seen (revisits count each time)
  uint64_t spectra_unscored = 0; ///< seen without a value (no model yet, or another statistic)
  uint64_t spectra_outside = 0;  ///< positions outside the scan shape: ignored
  uint64_t first_frame = 0;
  uint64_t last_frame = 0;
  uint64_t model_version = 0;    ///< of the last scored spectrum
  uint64_t novel_positions = 0;  ///< positions with a spectrum flagged novel in this pass
  RobustSummary summary;         ///< of the scored positions; filled when the map is handed out
};

/// What one frame contributes: its spectra's positions, in payload order, and their residual values.
struct ResidualFrame {
  ScanShape shape;                        ///< the series' scan shape; 0 x 0 = unknown: no map is kept
  uint64_t frame_number = 0;
  std::span<const ScanPosition> positions;
  std::span<const float> values;          ///< one per position, or empty when the frame was not scored
  std::string_view statistic;             ///< what `values` are ("deviance_z", "residual_norm")
  uint64_t model_version = 0;
  std::span<const uint8_t> novel;         ///< one per position (1 = flagged novel), or empty
};

class ResidualMapper {
 public:
  /// `outlier_sigma`: the robust-σ multiple above the median that counts as an outlier (5).
  /// `max_positions`: larger scan shapes get no map (5 bytes per position are kept while a pass is open).
  explicit ResidualMapper(double outlier_sigma = 5.0, uint64_t max_positions = uint64_t{1} << 24)
      : outlier_sigma_(outlier_sigma), max_positions_(max_positions) {}

  /// Adds one frame. Returns the maps it finished, in pass order (usually none, at a pass boundary one).
  /// With an unknown (0 x 0) or too large scan shape nothing is kept (spectra_unmapped() counts them).
  /// A position revisited within the pass keeps the largest value.
  std::vector<PassMap> Add(const ResidualFrame& frame);
  /// Hands out the open pass, if any, marked `closed_by` = reason, and forgets which passes were handed
  /// out (call it at a series boundary).
  std::optional<PassMap> Close(const std::string& reason);

  bool open() const { return open_.has_value(); }
  uint64_t spectra_unmapped() const { return spectra_unmapped_; }

 private:
  PassMap Finish(std::string closed_by);
  void Open(const ScanShape& shape, uint32_t pass, uint64_t frame_number);

  double outlier_sigma_;

 public:
  double outlier_sigma() const { return outlier_sigma_; }

 private:
  uint64_t max_positions_;
  std::optional<PassMap> open_;
  std::vector<uint8_t> seen_;            // per position of the open pass: kSeen | kNovel
  uint64_t positions_seen_ = 0;
  std::optional<uint32_t> last_closed_;  // last pass handed out in this series
  uint64_t spectra_unmapped_ = 0;
};

}  // namespace specwatch
