#pragma once
/// The publishing side of the results contract (proto/README.md): every message is
/// [topic][Envelope][optional raw payload]; the envelope carries the publisher epoch (random per start,
/// so clients see restarts) and a per-topic sequence number starting at 1 (so clients see gaps).
///
/// Concurrency: one thread (the publisher thread owns the socket).

#include "results.pb.h"

#include <zmq.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace specwatch::stream {

/// Raw bytes sent after the envelope without copying; `owner` keeps them alive until ZeroMQ is done.
struct Payload {
  std::shared_ptr<const void> owner;
  const void* data = nullptr;
  size_t bytes = 0;
};

class ResultPublisher {
 public:
  /// `socket`: a bound or connected PUB socket that outlives the publisher.
  ResultPublisher(zmq::socket_t& socket, uint64_t epoch) : socket_(socket), epoch_(epoch) {}

  /// Fills epoch, sequence and publish time into `envelope`, then sends. Returns the sequence used.
  uint64_t Publish(std::string_view topic, wire::Envelope& envelope, const Payload& payload = {});

  uint64_t epoch() const { return epoch_; }
  /// Messages published on `topic` so far.
  uint64_t Published(std::string_view topic) const;
  const std::map<std::string, uint64_t, std::less<>>& published() const { return sequence_; }

 private:
  zmq::socket_t& socket_;
  uint64_t epoch_;
  std::map<std::string, uint64_t, std::less<>> sequence_;
  std::string scratch_;
};

/// A random epoch that differs between starts of the service.
uint64_t NewPublisherEpoch();

}  // namespace specwatch::stream
