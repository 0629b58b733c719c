#include "stream/detector_sender.hpp"

namespace specwatch::stream {

void DetectorSender::SendSeriesStart(const wire::SeriesStart& start) {
  wire::DetectorMessage msg;
  *msg.mutable_series_start() = start;
  msg.SerializeToString(&scratch_);
  socket_.send(zmq::buffer(scratch_), zmq::send_flags::none);
}

void DetectorSender::SendSeriesEnd(const wire::SeriesEnd& end) {
  wire::DetectorMessage msg;
  *msg.mutable_series_end() = end;
  msg.SerializeToString(&scratch_);
  socket_.send(zmq::buffer(scratch_), zmq::send_flags::none);
}

void DetectorSender::SendFrame(const wire::FrameHeader& header, std::span<const std::byte> payload) {
  wire::DetectorMessage msg;
  *msg.mutable_frame() = header;
  msg.SerializeToString(&scratch_);
  socket_.send(zmq::buffer(scratch_), zmq::send_flags::sndmore);
  socket_.send(zmq::message_t(payload.data(), payload.size()), zmq::send_flags::none);
}

}  // namespace specwatch::stream
