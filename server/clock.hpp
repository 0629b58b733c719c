#pragma once
#include <chrono>

namespace specwatch::server {

/// Monotonic seconds, for latencies.
inline double NowSteady() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
/// Unix time in seconds, for timestamps on the wire.
inline double NowUnix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace specwatch::server
