#pragma once
/// Per-frame problems are logged through this, so a detector sending garbage at 10 kHz cannot flood the log:
/// at most `lines_per_s` lines per key (e.g. per reject reason), with a count of the lines held back.
///
/// Concurrency: one thread per instance.

#include "server/clock.hpp"

#include <spdlog/logger.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

namespace specwatch::server {

class RateLimitedLog {
 public:
  RateLimitedLog(std::shared_ptr<spdlog::logger> log, double lines_per_s, const Clock& clock)
      : log_(std::move(log)), interval_s_(1.0 / lines_per_s), clock_(clock) {}

  /// Logs `message` at `level` unless `key` logged less than 1/lines_per_s ago (then counts it).
  void Log(spdlog::level::level_enum level, const std::string& key, const std::string& message) {
    const double now = clock_.SteadyS();
    Slot& s = slots_[key];
    if (s.last_s > 0 && now - s.last_s < interval_s_) {
      ++s.suppressed;
      return;
    }
    if (s.suppressed > 0) {
      log_->log(level, "{} ({} similar lines suppressed)", message, s.suppressed);
    } else {
      log_->log(level, "{}", message);
    }
    s.last_s = now;
    s.suppressed = 0;
  }

 private:
  struct Slot {
    double last_s = 0;
    uint64_t suppressed = 0;
  };
  std::shared_ptr<spdlog::logger> log_;
  double interval_s_;
  const Clock& clock_;
  std::map<std::string, Slot> slots_;
};

}  // namespace specwatch::server
