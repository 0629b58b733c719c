#include <doctest/doctest.h>

#include "stream/detector_sender.hpp"
#include "stream/endpoint.hpp"
#include "stream/result_publisher.hpp"

#include <zmq_addon.hpp>

#include <cstring>
#include <thread>

using namespace specwatch;
using namespace specwatch::stream;

TEST_CASE("endpoint prefixes choose bind or connect") {
  auto e = ParseEndpoints("@tcp://127.0.0.1:5000,>ipc:///tmp/x,tcp://h:1", Direction::kConnect, "frames");
  REQUIRE(e.size() == 3);
  CHECK(e[0].direction == Direction::kBind);
  CHECK(e[0].address == "tcp://127.0.0.1:5000");
  CHECK(e[1].direction == Direction::kConnect);
  CHECK(e[2].direction == Direction::kConnect);
  CHECK(ParseEndpoints("tcp://h:1", Direction::kBind, "x")[0].direction == Direction::kBind);
  CHECK_THROWS_WITH_AS(ParseEndpoints("localhost:5555", Direction::kBind, "publish endpoint"),
                       doctest::Contains("publish endpoint"), std::invalid_argument);
  CHECK_THROWS_AS(ParseEndpoints("", Direction::kBind, "x"), std::invalid_argument);
}

TEST_CASE("the publisher numbers each topic from 1 with one epoch, and sends the payload") {
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  const auto bound = Attach(pub, ParseEndpoints("@tcp://127.0.0.1:*", Direction::kBind, "pub"));
  REQUIRE(bound.size() == 1);
  CHECK(bound[0].find("tcp://127.0.0.1:") == 0);
  CHECK(bound[0].back() != '*');
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "");
  sub.connect(bound[0]);
  ResultPublisher publisher(pub, NewPublisherEpoch());
  // PUB drops until the subscription has propagated: send status probes until one arrives.
  std::vector<zmq::message_t> parts;
  for (int i = 0; i < 200; ++i) {
    wire::Envelope probe;
    publisher.Publish("probe", probe);
    zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(10)) > 0) break;
  }
  while (true) {  // drain probes
    parts.clear();
    if (!zmq::recv_multipart(sub, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
  }
  auto data = std::make_shared<std::vector<float>>(std::vector<float>{1.5f, 2.5f});
  for (int i = 0; i < 3; ++i) {
    wire::Envelope e;
    e.mutable_denoised()->set_frame_number(static_cast<uint64_t>(i));
    publisher.Publish("denoised", e, Payload{data, data->data(), 8});
  }
  wire::Envelope s;
  publisher.Publish("status", s);
  uint64_t expect_denoised = 1;
  for (int i = 0; i < 4; ++i) {
    parts.clear();
    REQUIRE(zmq::recv_multipart(sub, std::back_inserter(parts)));
    wire::Envelope e;
    REQUIRE(e.ParseFromArray(parts[1].data(), static_cast<int>(parts[1].size())));
    CHECK(e.publisher_epoch() == publisher.epoch());
    if (parts[0].to_string() == "denoised") {
      CHECK(e.sequence() == expect_denoised++);
      REQUIRE(parts.size() == 3);
      CHECK(parts[2].size() == 8);
      float v[2];
      std::memcpy(v, parts[2].data(), 8);
      CHECK(v[1] == 2.5f);
    } else {
      CHECK(parts[0].to_string() == "status");
      CHECK(e.sequence() == 1);
      CHECK(parts.size() == 2);
    }
  }
  CHECK(publisher.Published("denoised") == 3);
  CHECK(NewPublisherEpoch() != NewPublisherEpoch());
}

TEST_CASE("DetectorSender produces what the contract says: [header][payload] and one-part series messages") {
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.bind("inproc://frames");
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.connect("inproc://frames");
  DetectorSender sender(push);
  wire::SeriesStart start;
  start.set_series_id("x");
  sender.SendSeriesStart(start);
  wire::FrameHeader h;
  h.set_series_id("x");
  h.set_frame_number(3);
  const uint16_t payload[2] = {7, 9};
  sender.SendFrame(h, std::as_bytes(std::span(payload)));
  std::vector<zmq::message_t> parts;
  REQUIRE(zmq::recv_multipart(pull, std::back_inserter(parts)));
  CHECK(parts.size() == 1);
  parts.clear();
  REQUIRE(zmq::recv_multipart(pull, std::back_inserter(parts)));
  REQUIRE(parts.size() == 2);
  wire::DetectorMessage m;
  REQUIRE(m.ParseFromArray(parts[0].data(), static_cast<int>(parts[0].size())));
  CHECK(m.frame().frame_number() == 3);
  CHECK(parts[1].size() == 4);
}
