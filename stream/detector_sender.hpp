#pragma once
/// The detector side of the frame contract (proto/README.md): what a simulator, a replay tool or an
/// adapter for a real detector uses to send frames. One thread per sender (ZeroMQ sockets are not
/// thread-safe).

#include "frame.pb.h"

#include <zmq.hpp>

#include <cstddef>
#include <span>

namespace specwatch::stream {

class DetectorSender {
 public:
  /// `socket` is a PUB or PUSH socket, already bound or connected; it must outlive the sender.
  explicit DetectorSender(zmq::socket_t& socket) : socket_(socket) {}

  void SendSeriesStart(const wire::SeriesStart& start);
  void SendSeriesEnd(const wire::SeriesEnd& end);
  /// Sends [DetectorMessage{frame: header}][payload]. The payload bytes are copied into the message.
  /// Blocks when the socket's high-water mark is reached (PUSH) or drops (PUB), as ZeroMQ does.
  void SendFrame(const wire::FrameHeader& header, std::span<const std::byte> payload);

 private:
  zmq::socket_t& socket_;
  std::string scratch_;
};

}  // namespace specwatch::stream
