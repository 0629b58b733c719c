#pragma once
/// Time, passed in: the service runs on SystemClock, tests on a FakeClock they move themselves. Any thread.

#include <atomic>
#include <chrono>

namespace specwatch::server {

class Clock {
 public:
  virtual ~Clock() = default;
  /// Monotonic seconds, for latencies, rate limits and periods.
  virtual double SteadyS() const = 0;
  /// Unix time in seconds, for timestamps on the wire.
  virtual double UnixS() const = 0;
};

class SystemClock final : public Clock {
 public:
  double SteadyS() const override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  double UnixS() const override {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
};

/// Stands still until Advance; starts at steady 1000 s, Unix 1.8e9 s.
class FakeClock final : public Clock {
 public:
  double SteadyS() const override { return steady_s_.load(); }
  double UnixS() const override { return 1.8e9 + steady_s_.load() - 1000.0; }
  void Advance(double seconds) { steady_s_.store(steady_s_.load() + seconds); }

 private:
  std::atomic<double> steady_s_{1000.0};
};

/// CPU seconds the calling thread has used (CLOCK_THREAD_CPUTIME_ID), for per-stage CPU accounting.
double ThreadCpuS();

}  // namespace specwatch::server
