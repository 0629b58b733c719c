#pragma once
/// The currency of specwatch: one detector frame's spectra, decoded, with everything known about how they
/// were acquired. Created by the stream decoder, immutable once it enters the flow graph (passed as BatchPtr),
/// safe to read from any number of threads.

#include <Eigen/Core>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace specwatch {

/// Counts, channels x spectra, column-major: column i is spectrum i. Float whatever the wire type was.
using CountsMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

enum class Modality { kOther = 0, kEels = 1, kEds = 2, kXrd = 3, kRaman = 4 };

/// Energy (or 2-theta, or wavenumber) of channel j = offset + dispersion * j, in `unit`.
struct EnergyAxis {
  double offset = 0.0;
  double dispersion = 1.0;
  std::string unit;
};

struct ScanShape {
  uint32_t width = 0;
  uint32_t height = 0;
  uint64_t Positions() const { return uint64_t{width} * height; }
};

struct ScanPosition {
  uint32_t x = 0;
  uint32_t y = 0;
  uint32_t pass = 0;  ///< 0 for the first visit of the scan
};

/// How the spectra of a frame were acquired (frame header values, or the series defaults).
struct FrameMeta {
  std::string series_id;
  uint64_t frame_number = 0;     ///< detector's numbering within the series
  uint64_t receive_index = 0;    ///< service's numbering of accepted frames, gap-free (the graph orders its
                                 ///< own work items, series markers included)
  double acquisition_time_s = 0.0;
  double receive_time_s = 0.0;   ///< steady-clock seconds when the service received the frame
  Modality modality = Modality::kOther;
  EnergyAxis energy_axis;
  double dwell_s = 0.0;
  double beam_current_pA = 0.0;
  double pixel_area_A2 = 0.0;
  ScanShape scan_shape;          ///< 0x0 when unknown
  bool integer_counts = true;    ///< the payload was integer counts (uint16/uint32), not processed floats
};

struct SpectrumBatch {
  FrameMeta meta;
  CountsMatrix counts;                 ///< channels x spectra
  std::vector<ScanPosition> positions;  ///< one per spectrum
  int Channels() const { return static_cast<int>(counts.rows()); }
  int Spectra() const { return static_cast<int>(counts.cols()); }
};

using BatchPtr = std::shared_ptr<const SpectrumBatch>;

/// A series' parameters: from its start message, or inferred from a frame header.
struct SeriesInfo {
  std::string id;
  Modality modality = Modality::kOther;
  uint32_t channel_count = 0;
  EnergyAxis energy_axis;
  ScanShape scan_shape;
  double dwell_s = 0.0;
  double beam_current_pA = 0.0;
  double pixel_area_A2 = 0.0;
  uint32_t passes = 0;
  bool announced = false;    ///< false: inferred from a frame header (start message missed)
};

/// A series' end message.
struct SeriesEndInfo {
  std::string id;
  uint64_t frames_sent = 0;
  uint64_t spectra_sent = 0;
};

}  // namespace specwatch
