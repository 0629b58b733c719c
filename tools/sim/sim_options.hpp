#pragma once
/// specwatch-sim's command line: one options struct with its defaults, a small hand-written parser
/// ("--name value" or "--name=value") that validates once and throws ConfigError naming the option.

#include "operators/core/spectrum_batch.hpp"

#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace specwatch::sim {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class SocketKind { kPub, kPush };
enum class PayloadKind { kUint16, kUint32, kFloat32 };

struct SimOptions {
  Modality modality = Modality::kEels;
  int channels = 2048;
  uint32_t scan_width = 64;
  uint32_t scan_height = 64;
  uint32_t passes = 1;
  /// After the full passes, roi_passes more over the rectangle roi_x0..roi_x1, roi_y0..roi_y1 (inclusive): a
  /// region revisited (adaptive acquisition, a dose series). Frames of those passes carry explicit positions.
  uint32_t roi_passes = 0;
  uint32_t roi_x0 = 0, roi_y0 = 0, roi_x1 = 0, roi_y1 = 0;
  double rate_spectra_per_s = 1000.0;  ///< 0 = as fast as possible
  std::string endpoint;                ///< required to run; "@" bind (default), ">" connect
  int phases = 3;
  double mean_counts = 1000.0;         ///< expected counts of a pure-phase spectrum, undamaged, undrifted
  double inclusion_fraction = 0.0;     ///< fraction of pixels in the rare-inclusion mask; 0 = none
  uint64_t seed = 1;
  std::string truth_path;              ///< empty: no truth file
  uint32_t frame_spectra = 0;          ///< 0 = one scan line
  SocketKind socket = SocketKind::kPub;
  PayloadKind payload = PayloadKind::kUint16;
  double readout_noise_counts = 0.0;   ///< Gaussian σ added per channel
  std::string series_id;               ///< empty: "sim-<modality>-<seed>"
  double start_delay_s = 0.5;
  bool send_series_start = true;
  double energy_drift_channels = 0.0;  ///< total energy-axis shift, reached linearly over the ramp
  uint64_t energy_drift_start_spectrum = 0;  ///< spectrum index (across passes) where the drift begins
  int64_t energy_drift_ramp_spectra = -1;    ///< spectra to reach the total; -1 = the end of the run, 0 = a step
  bool grow_phase = false;
  double critical_dose_e_per_A2 = 0.0; ///< 0 = no beam damage
  double beam_current_pA = 50.0;
  double dwell_us = 0.0;               ///< 0 = 1e6/rate (10 µs when rate is 0)
  double pixel_A = 1.0;                ///< pixel edge; area = edge²
  double energy_offset = std::numeric_limits<double>::quiet_NaN();  ///< NaN = modality default
  double dispersion = std::numeric_limits<double>::quiet_NaN();     ///< NaN = modality default
  int generator_threads = 1;
  uint32_t queue_frames = 0;           ///< 0 = auto
  bool pregenerate = false;
  int send_hwm = 0;                    ///< 0 = ZeroMQ default (1000 messages)
  bool help = false;

  // Resolved values (the defaults that depend on other options).
  uint32_t FrameSpectra() const { return frame_spectra ? frame_spectra : scan_width; }
  double DwellUs() const { return dwell_us > 0.0 ? dwell_us : (rate_spectra_per_s > 0.0 ? 1e6 / rate_spectra_per_s : 10.0); }
  std::string SeriesId() const;
  uint64_t RasterSpectra() const { return uint64_t{scan_width} * scan_height * passes; }
  uint64_t RoiPositions() const { return uint64_t{roi_x1 - roi_x0 + 1} * (roi_y1 - roi_y0 + 1); }
  uint64_t TotalSpectra() const { return RasterSpectra() + (roi_passes > 0 ? RoiPositions() * roi_passes : 0); }
  bool InRoi(uint32_t x, uint32_t y) const {
    return roi_passes > 0 && x >= roi_x0 && x <= roi_x1 && y >= roi_y0 && y <= roi_y1;
  }
};

/// Parses argv[1..]. Throws ConfigError with a message naming the option on any bad or missing value.
/// `--help` sets `help` and skips the checks for required options.
SimOptions ParseSimArgs(std::span<const std::string> args);
std::string SimUsage();

const char* ModalityName(Modality m);
const char* PayloadName(PayloadKind p);
const char* SocketName(SocketKind s);

/// Every option with its resolved value, as (name, text) pairs, in help order: for the truth file.
std::vector<std::pair<std::string, std::string>> ResolvedArguments(const SimOptions& o);

}  // namespace specwatch::sim
