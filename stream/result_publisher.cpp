#include "stream/result_publisher.hpp"

#include <chrono>
#include <random>

namespace specwatch::stream {

uint64_t ResultPublisher::Publish(std::string_view topic, wire::Envelope& envelope, const Payload& payload) {
  auto it = sequence_.find(topic);
  if (it == sequence_.end()) it = sequence_.emplace(std::string(topic), 0).first;
  const uint64_t sequence = ++it->second;
  envelope.set_publisher_epoch(epoch_);
  envelope.set_sequence(sequence);
  envelope.set_publish_time_s(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  envelope.SerializeToString(&scratch_);
  const bool more = payload.bytes > 0;
  socket_.send(zmq::buffer(topic), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(scratch_), more ? zmq::send_flags::sndmore : zmq::send_flags::none);
  if (more) {
    // Zero copy: ZeroMQ calls the free function when it is done with the bytes.
    auto* keep = new std::shared_ptr<const void>(payload.owner);
    zmq::message_t body(
        const_cast<void*>(payload.data), payload.bytes,
        [](void*, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); }, keep);
    socket_.send(body, zmq::send_flags::none);
  }
  return sequence;
}

uint64_t ResultPublisher::Published(std::string_view topic) const {
  auto it = sequence_.find(topic);
  return it == sequence_.end() ? 0 : it->second;
}

uint64_t NewPublisherEpoch() {
  std::random_device rd;
  const uint64_t r = (uint64_t{rd()} << 32) ^ rd();
  const auto now = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  return (r ^ now) | 1;  // never 0: 0 means "unset" on the wire
}

}  // namespace specwatch::stream
