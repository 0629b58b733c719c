#pragma once
/// Messages on their way from the flow graph to the publisher thread (the only thread that owns the
/// publish socket). Multi-producer, single-consumer, unbounded: the flow graph's in-flight limit bounds it,
/// because a frame's slot is released only when its last message has been published.

#include "operators/model/incremental_svd.hpp"
#include "stream/result_publisher.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

namespace specwatch::server {

/// Releases one in-flight slot when the last copy is destroyed.
using InFlightToken = std::shared_ptr<void>;

struct OutMessage {
  enum class Kind { kEnvelope, kSnapshotRequest, kStatusRequest };
  Kind kind = Kind::kEnvelope;
  std::string topic;
  std::shared_ptr<wire::Envelope> envelope;
  stream::Payload payload;
  uint64_t spectra = 0;          ///< spectra this message publishes (denoised)
  double receive_time_s = 0.0;   ///< for the end-to-end latency (0: not a frame)
  std::string reason;            ///< kSnapshotRequest: "request", "series_end", ...
  std::shared_ptr<const PcaModel> model;  ///< kSnapshotRequest: this model (null: the current one)
  std::string series_id;         ///< kSnapshotRequest: the series it belongs to (empty: the current one)
  InFlightToken token;
};

class OutputQueue {
 public:
  void Push(OutMessage m) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(m));
    }
    ready_.notify_one();
  }
  /// Waits up to `timeout` for a message. Returns false on timeout.
  bool PopFor(OutMessage* out, std::chrono::duration<double> timeout) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, timeout, [&] { return !queue_.empty(); })) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  size_t Size() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<OutMessage> queue_;
};

}  // namespace specwatch::server
