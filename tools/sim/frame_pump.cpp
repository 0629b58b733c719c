#include "tools/sim/frame_pump.hpp"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace specwatch::sim {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kEarlySend = std::chrono::microseconds(200);  // below this, send now rather than sleep
constexpr auto kPoll = std::chrono::milliseconds(20);         // how often waits look at the stop flag
constexpr size_t kAutoQueueBytes = size_t{64} << 20;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Ring of frame buffers shared by the generators and the sender.
class FrameRing {
 public:
  FrameRing(uint32_t slots, size_t bytes) : buffers_(slots, std::vector<std::byte>(bytes)), ready_(slots, kNone), free_for_(slots) {
    for (uint32_t s = 0; s < slots; ++s) free_for_[s] = s;
  }
  uint32_t Slots() const { return static_cast<uint32_t>(buffers_.size()); }
  std::vector<std::byte>& Buffer(uint64_t frame) { return buffers_[frame % Slots()]; }

  /// Generator: waits until frame's slot is free. False when aborted.
  bool WaitFree(uint64_t frame, const std::atomic<bool>& stop) {
    std::unique_lock lock(mutex_);
    const uint32_t s = frame % Slots();
    while (free_for_[s] != frame) {
      if (stop || abort_) return false;
      free_cv_.wait_for(lock, kPoll);
    }
    return true;
  }
  void MarkReady(uint64_t frame) {
    {
      std::lock_guard lock(mutex_);
      ready_[frame % Slots()] = frame;
      ++ready_count_;
    }
    ready_cv_.notify_one();
  }
  /// Sender: waits until `frame` is generated. False when aborted. `waited` tells whether it had to.
  bool WaitReady(uint64_t frame, const std::atomic<bool>& stop, bool& waited) {
    std::unique_lock lock(mutex_);
    const uint32_t s = frame % Slots();
    waited = false;
    while (ready_[s] != frame) {
      if (stop || abort_) return false;
      waited = true;
      ready_cv_.wait_for(lock, kPoll);
    }
    return true;
  }
  /// Sender: waits until `count` frames have been generated (pregeneration).
  bool WaitReadyCount(uint64_t count, const std::atomic<bool>& stop) {
    std::unique_lock lock(mutex_);
    while (ready_count_ < count) {
      if (stop || abort_) return false;
      ready_cv_.wait_for(lock, kPoll);
    }
    return true;
  }
  void Release(uint64_t frame) {
    {
      std::lock_guard lock(mutex_);
      const uint32_t s = frame % Slots();
      ready_[s] = kNone;
      free_for_[s] = frame + Slots();
    }
    free_cv_.notify_all();
  }
  void Abort() {
    {
      std::lock_guard lock(mutex_);
      abort_ = true;
    }
    free_cv_.notify_all();
    ready_cv_.notify_all();
  }

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};
  std::mutex mutex_;
  std::condition_variable free_cv_, ready_cv_;
  std::vector<std::vector<std::byte>> buffers_;
  std::vector<uint64_t> ready_;     ///< frame number held ready in the slot, or kNone
  std::vector<uint64_t> free_for_;  ///< the frame the slot may be filled with next
  uint64_t ready_count_ = 0;
  bool abort_ = false;
};

/// Sleeps until `due` in short slices so that `stop` is noticed.
bool SleepUntil(Clock::time_point due, const std::atomic<bool>& stop) {
  for (;;) {
    if (stop) return false;
    const auto now = Clock::now();
    if (now >= due) return true;
    std::this_thread::sleep_until(std::min(due, now + std::chrono::duration_cast<Clock::duration>(kPoll)));
  }
}

}  // namespace

PumpStats RunPump(const Simulator& sim, FrameSink& sink, const PumpOptions& options, const std::atomic<bool>& stop) {
  PumpStats stats;
  const uint64_t frames = sim.FrameCount();
  if (frames == 0) return stats;
  const size_t frame_bytes = sim.PayloadBytes(sim.Frame(0).spectrum_count);
  const int threads = std::max(1, options.generator_threads);
  const double rate = options.rate_spectra_per_s;

  uint64_t slots = options.queue_frames;
  if (options.pregenerate) {
    slots = frames;
  } else if (slots == 0) {
    // Enough to ride out ~0.1 s of scheduling hiccups of the generators; more only costs memory.
    const double frames_per_s = rate > 0.0 ? rate / sim.Options().FrameSpectra() : 0.0;
    slots = static_cast<uint64_t>(std::ceil(0.1 * frames_per_s));
    slots = std::max<uint64_t>(slots, 4 * static_cast<uint64_t>(threads) + 4);
    slots = std::min<uint64_t>(slots, std::max<size_t>(2, kAutoQueueBytes / std::max<size_t>(frame_bytes, 1)));
  }
  slots = std::clamp<uint64_t>(slots, 1, frames);
  stats.queue_frames = static_cast<uint32_t>(slots);
  FrameRing ring(static_cast<uint32_t>(slots), frame_bytes);

  std::atomic<uint64_t> saturated{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  std::vector<std::thread> workers;
  {
    // Workers never take SIGINT/SIGTERM: the process' signal handling stays with the caller.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (int w = 0; w < threads; ++w) {
      workers.emplace_back([&, w] {
        try {
          FrameWorkspace ws;
          for (uint64_t k = static_cast<uint64_t>(w); k < frames; k += static_cast<uint64_t>(threads)) {
            if (!ring.WaitFree(k, stop)) return;
            saturated += sim.GenerateFrame(k, ws, ring.Buffer(k));
            ring.MarkReady(k);
          }
        } catch (...) {
          std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          ring.Abort();
        }
      });
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  bool ok = true;
  if (options.pregenerate) {
    const auto begin = Clock::now();
    ok = ring.WaitReadyCount(frames, stop);
    stats.pregenerate_s = std::chrono::duration<double>(Clock::now() - begin).count();
  }

  const auto t0 = Clock::now();
  const double unix_t0 = UnixNow();
  Clock::time_point first_departure{}, last_departure{};
  uint32_t last_count = 0;
  for (uint64_t k = 0; ok && k < frames; ++k) {
    bool waited = false;
    if (!ring.WaitReady(k, stop, waited)) {
      ok = false;
      break;
    }
    stats.generator_waits += waited;
    const FrameInfo info = sim.Frame(k);
    double acquisition_time_s;
    Clock::time_point due = t0;
    if (rate > 0.0) {
      const double offset_s = static_cast<double>(info.start_index) / rate;
      due = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(offset_s));
      if (due - Clock::now() > kEarlySend && !SleepUntil(due, stop)) {
        ok = false;
        break;
      }
      acquisition_time_s = unix_t0 + offset_s;
    } else {
      acquisition_time_s = UnixNow();
    }
    if (stop) {
      ok = false;
      break;
    }
    const auto departure = Clock::now();
    if (rate > 0.0) {
      const double lag = std::chrono::duration<double>(departure - due).count();
      stats.max_lag_s = std::max(stats.max_lag_s, lag);
      stats.late_frames += lag > 1e-3;
    }
    if (!sink.Send(info, acquisition_time_s, std::span(ring.Buffer(k)).first(sim.PayloadBytes(info.spectrum_count)))) {
      ok = false;
      break;
    }
    if (k == 0) first_departure = departure;
    last_departure = departure;
    last_count = info.spectrum_count;
    ++stats.frames;
    stats.spectra += info.spectrum_count;
    ring.Release(k);
  }
  stats.interrupted = !ok;
  ring.Abort();
  for (auto& t : workers) t.join();
  if (failure) std::rethrow_exception(failure);

  stats.saturated_values = saturated.load();
  stats.elapsed_s = std::chrono::duration<double>(last_departure - first_departure).count();
  if (stats.frames >= 2 && stats.elapsed_s > 0.0) {
    stats.achieved_rate = static_cast<double>(stats.spectra - last_count) / stats.elapsed_s;
  }
  return stats;
}

}  // namespace specwatch::sim
