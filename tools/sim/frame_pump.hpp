#pragma once
/// Generates frames on worker threads ahead of a pacing sender and hands them, in frame order, to a
/// FrameSink at their scheduled times.
///
/// Threads: RunPump's caller is the sender; it starts `generator_threads` workers (with SIGINT/SIGTERM
/// blocked) that fill a ring of `queue_frames` buffers; worker w generates frames w, w+G, w+2G, ...
/// Pacing: frame k is due at t0 + start_index_k / rate on the steady clock (absolute, so lateness never
/// accumulates); the sender sleeps until a frame is due unless it is less than kEarlySend away, so
/// single-spectrum frames at high rates leave in short bursts. With rate 0 frames leave as fast as the
/// sink takes them.

#include "tools/sim/simulator.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

namespace specwatch::sim {

/// Receives the paced frames, on the sender thread only.
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  /// Returns false when the frame could not be sent and the run must end (e.g. the transport closed).
  virtual bool Send(const FrameInfo& frame, double acquisition_time_s, std::span<const std::byte> payload) = 0;
};

struct PumpOptions {
  double rate_spectra_per_s = 0.0;  ///< 0 = as fast as possible
  int generator_threads = 1;
  uint32_t queue_frames = 0;        ///< 0 = auto: ~0.1 s of frames, >= 4·threads + 4, <= 64 MiB of payload
  bool pregenerate = false;         ///< generate every frame before the first departure
};

struct PumpStats {
  uint64_t frames = 0;
  uint64_t spectra = 0;
  double elapsed_s = 0.0;          ///< first departure to last departure
  double achieved_rate = 0.0;      ///< spectra that left before the last frame / elapsed_s
  double max_lag_s = 0.0;          ///< worst departure behind its due time
  uint64_t late_frames = 0;        ///< departures more than 1 ms behind
  uint64_t generator_waits = 0;    ///< departures that found their frame not generated yet
  uint64_t saturated_values = 0;   ///< payload values clamped at the integer type's maximum
  double pregenerate_s = 0.0;
  uint32_t queue_frames = 0;
  bool interrupted = false;
};

/// Runs the whole series through `sink`; returns early (interrupted) when `stop` becomes true or the sink
/// fails. Exceptions from the generators are rethrown here.
PumpStats RunPump(const Simulator& sim, FrameSink& sink, const PumpOptions& options, const std::atomic<bool>& stop);

}  // namespace specwatch::sim
